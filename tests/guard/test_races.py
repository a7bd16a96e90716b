"""Races: ticks, fast-path and GPU protection events, lease commands and API reads all at once, with the interpreter
switching threads every microsecond; no exception, every answer whole (a granted lease has its own expiry) and no
counter a reader sees ever goes backwards."""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import asdict
from types import SimpleNamespace

from fastapi.testclient import TestClient

from guard.targets.actuator import ContractTarget, Reconciler
from guard.app import Deps, create_app
from guard.core.manager_protect import gpu_froze
from guard.common.types import Desired
from tests.guard.contract_worker import ContractWorker, mock_transport
from tests.guard.support import GiB

TOKEN = "race-token-0123456789"
SECONDS = 1.5  # wall time the threads run together
CALM = {name: {"enter": {}} for name in ("ram", "psi", "swap", "predict", "gpu")}  # room alone decides admission
COUNTERS = ("headroom_guard_ticks_total", "headroom_guard_admissions_total", "headroom_guard_actions_total",
            "headroom_guard_tick_seconds_count")


def lease_fields(ram: int) -> dict:
    return {"holder": "race", "ram_bytes": ram, "gpu_bytes": 0, "gpu": "any", "ttl_seconds": 30, "pid": None,
            "free_worker": False, "priority": 0}


def whole(lease: dict) -> None:
    """A lease as a reader got it: never half of a grant (granted with the waiting lease's expiry)."""
    if lease["status"] == "granted":
        assert lease["granted_at"] is not None, lease
        assert lease["expires_at"] >= lease["granted_at"] + lease["ttl_seconds"] - 1e-6, f"an old expiry: {lease}"
    elif lease["status"] == "waiting":
        assert lease["granted_at"] is None and lease["expires_at"] == lease["created_at"] + lease["ttl_seconds"], lease


def metric_sums(text: str) -> dict[str, float]:
    sums = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


def view_counters(read) -> tuple[int, ...]:
    view = read.guard
    return (view.ticks, sum(view.admissions.values()), sum(view.actions.values()), view.tick_histogram.count,
            read.downtime.count)


def test_ticks_protection_commands_and_reads_race_without_a_torn_answer(make_manager, source, clock):
    worker = ContractWorker("tok", clock=clock)
    rec = Reconciler(ContractTarget("http://w", "tok", 1.0, mock_transport(worker)), False, 0.0, 0.0)
    manager = make_manager(reconciler=rec, ram_margin=0, queue_poll_grace_seconds=600, **CALM)
    app = create_app(None, Deps(manager, TOKEN, run_scheduler=False))
    front = app.state.front
    manager.tick()
    stop, errors, ids, seen = threading.Event(), [], [], {"reads": 0, "granted": 0}

    def loop(job):
        def run():
            try:
                while not stop.is_set():
                    job()
            except BaseException as err:  # noqa: BLE001 - every failure, from any thread, fails the test
                errors.append(err)
                stop.set()
        return threading.Thread(target=run, daemon=True)

    turn = iter(range(10**9))

    def tick():
        n = next(turn)
        source.set(ram_available_bytes=(2 if n % 4 < 2 else 20) * GiB)  # tight, then ample: leases queue, then start
        clock.advance(0.5)
        manager.tick()

    def fast_path():
        manager.protect(Desired("freed", level=2, reason="race: freeze level"), "fast path: race", {"pid": None})
        manager.protect(None, "fast path: the cause is gone (race)", {})
        time.sleep(0.01)  # episodes come and go: between them admission is open

    def gpu_watch():  # a pid that exists nowhere: the next tick ends the episode
        event = SimpleNamespace(action="froze", gpu="0", process=SimpleNamespace(pid=4194303, comm="race"))
        gpu_froze(manager, event, 2)
        time.sleep(0.05)

    def commands():
        lease, _, _ = front.request(lease_fields(4 * GiB), 20)
        if lease is not None:
            ids.append(lease.id)
            front.heartbeat(lease.id)
        if len(ids) > 6:
            front.release(ids.pop(0))

    def reader():
        client, last_http, last_view = TestClient(app), dict.fromkeys(COUNTERS, 0.0), (0,) * 5
        while not stop.is_set():
            read = front.view()
            counters = view_counters(read)
            assert all(now >= before for now, before in zip(counters, last_view)), (last_view, counters)
            last_view = counters
            for lease in client.get("/v1/leases").json()["leases"]:
                whole(lease)
                seen["granted"] += lease["status"] == "granted"
            for lease_id in list(ids[-2:]):
                answer = client.get(f"/v1/leases/{lease_id}")
                assert answer.status_code in (200, 202), answer.text
                whole(answer.json()["lease"])
            assert client.get("/v1/headroom").status_code == 200
            sums = metric_sums(client.get("/metrics").text)
            assert all(sums[name] >= last_http[name] for name in COUNTERS), (last_http, sums)
            last_http = sums
            seen["reads"] += 1

    def lease_reader():  # the facade's lease reads, as fast as they come (HTTP above is slower)
        for lease_id in list(ids[-3:]):
            lease = front.lease(lease_id)
            whole(asdict(lease))
            seen["granted"] += lease.status == "granted"
        for lease in front.view().guard.leases:
            whole(asdict(lease))

    threads = [loop(tick), loop(fast_path), loop(gpu_watch), loop(commands), loop(lease_reader)]
    threads += [loop(reader) for _ in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        stop.wait(SECONDS)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert seen["reads"] > 0 and seen["granted"] > 0 and manager.view.ticks > 2, (seen, manager.view.admissions)
