"""Real processes over HTTP: exporter + guard + contract worker, a real memory cgroup as the domain, real allocations."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from tests.guard.realstack import MiB, TOKEN, Allocator, MemoryCgroup, Stack, domain_cgroup
from tests.helpers import headroom_cmd, need, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]
LIMIT = 400 * MiB
LEVELS = {"warn": "70%", "throttle": "55%", "pause": "40%", "free": "25%"}
QUIET = {"predict": {"enter": {}}, "psi": {"enter": {}}, "swap": {"enter": {}}, "gpu": {"enter": {}}}


@pytest.fixture
def cgroup():
    with domain_cgroup(LIMIT) as group:
        yield group


@pytest.fixture
def stack_factory(tmp_path, cgroup):
    stacks = []

    def build(guard: dict, **kwargs) -> Stack:
        stack = Stack(tmp_path, cgroup, {"ram_margin": "16MiB", **QUIET, **guard}, **kwargs)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()


def mib_for(cgroup: MemoryCgroup, base: int, available_fraction: float) -> int:
    """MiB the allocator must hold so the domain's available RAM is `available_fraction` of the limit."""
    return max(0, int((cgroup.limit * (1 - available_fraction) - base) / MiB))


def test_allocation_drives_throttle_pause_free_and_back(stack_factory, cgroup):
    stack = stack_factory({"ram": {"enter": LEVELS, "band": "5%", "grace_seconds": 0.3, "hold_seconds": 1.0},
                           "throttle_concurrency": 1})
    allocator = Allocator(cgroup)
    try:
        allocator.hold(0)
        base = cgroup.usage()
        expected = [("throttled", 0.47, {"state": "throttled", "concurrency": 1}),
                    ("paused", 0.32, {"state": "paused"}),
                    ("freed", 0.12, {"state": "freed", "level": 2})]
        for state, fraction, desired in expected:
            allocator.hold(mib_for(cgroup, base, fraction))
            wait_for(lambda: stack.worker.get("/control/state").json()["desired"] == desired, 10,
                     what=f"worker {state} at {fraction:.0%} available; headroom {stack.headroom()}")
    finally:
        allocator.stop()
    wait_for(lambda: stack.worker.get("/control/state").json()["desired"] == {"state": "running"}, 10,
             what="the worker running again after the allocator exited")
    states = [body["state"] for body in stack.worker_puts()]
    assert states == ["throttled", "paused", "freed", "running"], stack.logs()
    events = stack.guard.get("/v1/events", params={"kind": "action"}).json()["events"]
    assert [e["data"]["action"] for e in events] == ["set_throttled", "set_paused", "set_freed", "set_running"]
    metrics = stack.guard.get("/metrics").text
    assert 'headroom_guard_actions_total{action="set_freed",result="ok"} 1.0' in metrics


def test_lease_larger_than_free_memory_is_refused_with_the_shortfall(stack_factory):
    stack = stack_factory({"ram": {"enter": {}}})
    small = stack.guard.post("/v1/leases", json={"holder": "small", "ram_bytes": 100 * MiB})
    assert small.status_code == 201, small.text
    admissible = stack.headroom()["ram"]["admissible_bytes"]
    assert 150 * MiB < admissible < LIMIT - 100 * MiB
    big = stack.guard.post("/v1/leases", json={"holder": "big", "ram_bytes": int(admissible) + 50 * MiB})
    assert big.status_code == 409, big.text
    shortfall = big.json()["shortfall"]["ram_bytes"]
    assert abs(shortfall - 50 * MiB) < 4 * MiB, (shortfall, big.json())  # memory moves a little between the two reads
    assert "ram short by" in big.json()["reason"] and big.headers["retry-after"]


def test_free_worker_lease_frees_the_worker_then_restores_it(stack_factory, cgroup):
    stack = stack_factory({"ram": {"enter": {}}}, worker_hold_mib=150, worker_in_cgroup=True)
    admissible = stack.headroom()["ram"]["admissible_bytes"]
    want = int(admissible) + 80 * MiB  # only fits once the worker's 150 MiB are gone
    refused = stack.guard.post("/v1/leases", json={"holder": "olmo", "ram_bytes": want})
    assert refused.status_code == 409
    queued = stack.guard.post("/v1/leases", json={"holder": "olmo", "ram_bytes": want, "free_worker": True, "wait_seconds": 15})
    assert queued.status_code == 201, queued.text  # the long-poll ended with the grant
    assert stack.worker.get("/control/state").json()["state"] == "freed"
    assert stack.headroom()["ram"]["available_bytes"] > want
    lease_id = queued.json()["lease"]["id"]
    assert stack.guard.delete(f"/v1/leases/{lease_id}").json()["status"] == "released"
    wait_for(lambda: stack.worker.get("/control/state").json()["state"] == "running", 10, what="the worker restored")
    assert [b["state"] for b in stack.worker_puts()] == ["freed", "running"]


def test_guard_killed_and_restarted_keeps_its_leases(stack_factory):
    stack = stack_factory({"ram": {"enter": {}}})
    keep = stack.guard.post("/v1/leases", json={"holder": "keep", "ram_bytes": 10 * MiB, "ttl_seconds": 300}).json()["lease"]
    short = stack.guard.post("/v1/leases", json={"holder": "short", "ram_bytes": 10 * MiB, "ttl_seconds": 1}).json()["lease"]
    stack.kill_guard()
    import time

    time.sleep(1.2)
    stack.start_guard()
    stack.wait_ready()
    assert [l["id"] for l in stack.guard.get("/v1/leases").json()["leases"]] == [keep["id"]]
    assert stack.guard.get(f"/v1/leases/{keep['id']}").json()["status"] == "granted"
    assert stack.guard.get(f"/v1/leases/{short['id']}").json()["status"] == "expired"
    status = subprocess.run(headroom_cmd("status", "--config", str(stack.config), "--json"), capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert '"holder": "keep"' in status.stdout
    human = subprocess.run(headroom_cmd("status", "--config", str(stack.config)), capture_output=True, text=True, timeout=30)
    assert "level: ok" in human.stdout and "keep" in human.stdout
    second = subprocess.run(headroom_cmd("guard", "--config", str(stack.config)), capture_output=True, text=True, timeout=30)
    assert second.returncode == 3 and "cannot listen on" in second.stderr
    assert TOKEN


def test_real_worker_is_paused_for_maintenance_and_freed_for_a_lease(stack_factory):
    need(importlib.util.find_spec("worker.app") is not None, "the worker (worker/app.py)")
    stack = stack_factory({"ram": {"enter": {}}}, real_worker={"engine": "echo"})
    state = lambda: stack.worker.get("/control/state").json()  # noqa: E731
    assert stack.guard.put("/v1/maintenance", json={"reason": "driver upgrade", "retry_after_seconds": 60}).status_code == 200
    wait_for(lambda: state()["maintenance"]["on"] and state()["desired"]["state"] == "paused", 15, what=f"maintenance: {state()}")
    stack.guard.delete("/v1/maintenance")
    wait_for(lambda: not state()["maintenance"]["on"] and state()["desired"]["state"] == "running", 15, what=f"back: {state()}")
    admissible = stack.headroom()["ram"]["admissible_bytes"]
    held = stack.guard.post("/v1/leases", json={"holder": "held", "ram_bytes": int(admissible) // 2})
    assert held.status_code == 201, held.text  # more than the room left, less than the domain: it can fit some day
    lease = stack.guard.post("/v1/leases", json={"holder": "t", "ram_bytes": int(admissible) // 2 + MiB, "free_worker": True})
    assert lease.status_code == 202, lease.text  # queued: the worker is being freed (its processes hold memory)
    wait_for(lambda: state()["state"] == "freed" and state()["free_level"] == 2, 15, what=f"freed: {state()}")
    stack.guard.delete(f"/v1/leases/{lease.json()['lease']['id']}")
    wait_for(lambda: state()["state"] == "running", 15, what=f"running again: {state()}")
