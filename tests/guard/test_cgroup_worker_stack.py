"""The real guard process driving a worker through its cgroup: maintenance freezes it, a lease stops it, SIGKILL thaws it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.guard.realstack import TOKEN, MiB, domain_cgroup, stack_logs, start, wait_guard_ready, write_config
from tests.guard.test_cgroup_worker import WorkerBox, need_cgroups
from tests.helpers import free_port, headroom_cmd, stop_process, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]
LIMIT = 768 * MiB
WORKER_MIB = 256
QUIET = {"ram": {"enter": {}}, "predict": {"enter": {}}, "psi": {"enter": {}}, "swap": {"enter": {}}, "gpu": {"enter": {}}}


class CgroupStack:
    """exporter + guard (worker_kind = "cgroup") over a domain cgroup; the worker is whatever runs in `box`."""

    def __init__(self, tmp: Path, domain, box: WorkerBox, guard: dict):
        self.tmp, self.domain, self.box = tmp, domain, box
        self.ports = {name: free_port() for name in ("exporter", "guard", "worker")}
        self.procs: dict[str, subprocess.Popen] = {}
        self.configure(guard)
        self.procs["exporter"] = start(headroom_cmd("exporter", "--config", str(self.config)), tmp / "exporter.log")
        self.guard = httpx.Client(base_url=f"http://127.0.0.1:{self.ports['guard']}", timeout=30,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
        self.start_guard()

    def configure(self, guard: dict) -> None:
        settings = {"ram_margin": "32MiB", **QUIET, "worker_kind": "cgroup", "worker_cgroup": self.box.path, **guard}
        self.config = write_config(self.tmp / "headroom.toml", self.tmp / "state", self.ports["exporter"], self.ports["guard"],
                                   self.ports["worker"], self.domain.name, settings)

    def start_guard(self) -> None:
        self.procs["guard"] = start(headroom_cmd("guard", "--config", str(self.config)), self.tmp / "guard.log")
        wait_guard_ready(self.procs, self.guard, self.tmp, 30)

    def worker(self) -> dict:
        return self.guard.get("/v1/headroom").json()["worker"]

    def events(self) -> list[str]:
        return [e["message"] for e in self.guard.get("/v1/events", params={"limit": 200}).json()["events"]]

    def logs(self) -> str:
        return stack_logs(self.tmp)

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)
        self.guard.close()


@pytest.fixture
def domain():
    need_cgroups()
    with domain_cgroup(LIMIT) as group:
        yield group


@pytest.fixture
def box(tmp_path, domain):
    with WorkerBox(tmp_path, parent=domain.name) as worker_box:  # the worker's memory is charged to the domain
        yield worker_box


@pytest.fixture
def stack_factory(tmp_path, domain, box):
    stacks: list[CgroupStack] = []

    def build(guard: dict, hold_mib: int = WORKER_MIB) -> CgroupStack:
        box.start(hold_mib)
        stacks.append(CgroupStack(tmp_path, domain, box, guard))
        return stacks[-1]

    yield build
    for stack in stacks:
        stack.stop()


def test_maintenance_freezes_the_worker_lifting_it_or_stopping_the_guard_thaws(stack_factory):
    stack = stack_factory({})
    box = stack.box
    assert stack.worker()["observed"] == "running" and box.heartbeating()
    assert stack.guard.put("/v1/maintenance", json={"reason": "driver update"}).status_code == 200
    wait_for(lambda: box.frozen(), 10, what="the cgroup frozen")
    assert not box.heartbeating(0.5), "heartbeats went on under maintenance"
    wait_for(lambda: stack.worker()["observed"] == "paused", 10, what="the guard to report paused")
    assert stack.guard.delete("/v1/maintenance").status_code == 200
    wait_for(lambda: not box.frozen(), 10, what="the cgroup thawed")
    assert box.heartbeating(), "heartbeats did not resume after maintenance"
    wait_for(lambda: stack.worker()["observed"] == "running", 10, what="the guard to report running")
    stack.guard.put("/v1/maintenance", json={"reason": "then the guard is stopped"})
    wait_for(lambda: box.frozen(), 10, what="the cgroup frozen again")
    stop_process(stack.procs["guard"])  # SIGTERM: a clean exit
    assert stack.procs["guard"].returncode in (0, -15), stack.logs()  # uvicorn re-raises SIGTERM after a graceful shutdown
    assert not box.frozen() and box.heartbeating(), "the guard exited and left the worker frozen"


@pytest.mark.parametrize("how", ["worker_stop", "signals"])
def test_free_worker_lease_stops_it_grants_when_its_memory_is_gone_and_restores_it(stack_factory, box, domain, how):
    argv = {"worker_stop": box.stop_argv(), "worker_start": box.start_argv(WORKER_MIB)} if how == "worker_stop" else {}
    stack = stack_factory({**argv, "worker_stop_timeout_seconds": 3})
    admissible = stack.guard.get("/v1/headroom").json()["ram"]["admissible_bytes"]
    want = int(admissible) + 128 * MiB  # fits only once the worker's 256 MiB are back
    assert stack.guard.post("/v1/leases", json={"holder": "olmo", "ram_bytes": want}).status_code == 409
    lease = stack.guard.post("/v1/leases", json={"holder": "olmo", "ram_bytes": want, "free_worker": True, "wait_seconds": 60})
    assert lease.status_code == 201, lease.text + stack.logs()
    assert not box.pids() and domain.usage() < LIMIT - want, "granted before the worker's memory came back"
    assert stack.worker()["observed"] == "freed"
    assert box.marker("term"), "the worker was not asked to stop (SIGTERM)"
    assert bool(box.marker("stop")) == (how == "worker_stop"), "worker_stop ran exactly when configured"
    assert stack.guard.delete(f"/v1/leases/{lease.json()['lease']['id']}").json()["status"] == "released"
    if how == "worker_stop":
        wait_for(lambda: box.pids() and box.heartbeating(), 30, what="worker_start to bring the worker back")
        wait_for(lambda: stack.worker()["observed"] == "running", 10, what="the guard to report running")
        return
    wait_for(lambda: "a person must restart it" in (stack.worker()["note"] or ""), 10, what="the restart note")
    status = subprocess.run(headroom_cmd("status", "--config", str(stack.config)), capture_output=True, text=True, timeout=60)
    assert "a person must restart it" in status.stdout, status.stdout + status.stderr
    assert not box.pids() and not box.heartbeating(0.3)


def test_guard_killed_while_the_worker_is_frozen_thaws_it_when_it_starts_again(stack_factory):
    stack = stack_factory({})
    box = stack.box
    stack.guard.put("/v1/maintenance", json={"reason": "about to be killed"})
    wait_for(lambda: box.frozen(), 10, what="the cgroup frozen")
    stack.procs["guard"].kill()
    stack.procs["guard"].wait()
    time.sleep(0.5)
    assert box.frozen() and not box.heartbeating(0.3), "nothing else thaws it while the guard is dead"
    stack.configure({"dry_run": True})  # the restarted guard never acts on the worker: only its start-up recovery can thaw
    stack.start_guard()
    wait_for(lambda: not box.frozen(), 10, what="the restarted guard to thaw the worker")
    assert box.heartbeating(), "the worker stayed stopped after the thaw"
    assert any("left frozen by a previous guard" in m for m in stack.events()), stack.events()
    assert stack.guard.get("/v1/maintenance").json()["on"], "maintenance itself survives the restart"


@pytest.mark.parametrize("guard, hint", [
    ({"worker_cgroup": "/headroom-test-no-such-cgroup"}, "no such cgroup"),
    ({"worker_stop": []}, "worker_stop"),
    ({"worker_start": []}, "worker_start"),
    ({"in_the_cgroup": True}, "holds headroom itself"),
])
def test_bad_configuration_is_refused_before_start(tmp_path, domain, box, guard, hint):
    guard = dict(guard)
    join = guard.pop("in_the_cgroup", False)
    settings = {"worker_kind": "cgroup", "worker_cgroup": box.path, **guard}
    config = write_config(tmp_path / "bad.toml", tmp_path / "state", free_port(), free_port(), free_port(), domain.name, settings)

    def enter_cgroup():  # the guard itself starts inside the worker's cgroup
        for procs in box.procs:
            Path(procs).write_text(str(os.getpid()))

    result = subprocess.run(headroom_cmd("guard", "--config", str(config)), capture_output=True, text=True, timeout=60,
                            preexec_fn=enter_cgroup if join else None)
    assert result.returncode == 2, result.stdout + result.stderr
    assert hint in result.stderr and ("worker_cgroup" in result.stderr or "worker_st" in result.stderr), result.stderr
