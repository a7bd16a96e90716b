"""Leases: accounting with and without a pid, refusal with shortfall, the queue, preemption and restore, expiry, restart."""

from __future__ import annotations

import pytest

from guard.targets.actuator import ContractTarget, Reconciler
from guard.core.manager import Manager
from guard.core.leases import UnknownGpu, admit, match_gpus, ram_room, reserved_gpu, reserved_ram
from guard.sources.observer import Observer
from guard.common.settings import GuardSettings
from guard.common.store import Store
from guard.common.types import Decision, Desired, Lease, Level
from tests.guard.contract_worker import ContractWorker, mock_transport
from tests.guard.support import GiB, MiB, gpu, snap

OPEN = Decision(Level.OK, Desired(), (), stale=False, admissions_open=True)
CONFIG = GuardSettings(ram_margin="1GiB", gpu_margin=0)
CALM = {"ram": {"enter": {}}, "predict": {"enter": {}}}  # levels out of the way: these tests are about accounting


def lease(ram=0, gpu_bytes=0, status="granted", **fields) -> Lease:
    base = dict(id=fields.pop("id", "a"), holder="t", ram_bytes=ram, gpu_bytes=gpu_bytes, gpu=fields.pop("gpu", "any"),
                ttl_seconds=60, created_at=0, expires_at=60, status=status)
    return Lease(**base, **fields)


@pytest.mark.parametrize("used, expected", [(None, 8 * GiB), (3 * GiB, 5 * GiB), (9 * GiB, 0)])
def test_reserved_ram_with_and_without_pid(used, expected):
    s = snap(0, pid_ram_bytes={} if used is None else {42: used})
    assert reserved_ram(lease(8 * GiB, pid=42 if used is not None else None), s) == expected


def test_reserved_gpu_counts_only_its_gpu_and_subtracts_the_tree():
    s = snap(0, gpus=(gpu("0"), gpu("1")), pid_gpu_bytes={42: {"1": 4 * GiB}})
    held = lease(gpu_bytes=14 * GiB, gpu_chosen="1", pid=42)
    assert reserved_gpu(held, s, "1") == 10 * GiB and reserved_gpu(held, s, "0") == 0
    assert reserved_gpu(lease(gpu_bytes=GiB, gpu_chosen="1", status="waiting"), s, "1") == 0


def test_room_subtracts_reservations_and_margin():
    room = ram_room(snap(0, available=20 * GiB), [lease(4 * GiB), lease(2 * GiB, status="released")], CONFIG)
    assert room == {"available_bytes": 20 * GiB, "reserved_bytes": 4 * GiB, "margin_bytes": GiB, "admissible_bytes": 15 * GiB}


@pytest.mark.parametrize("ram, gpu_bytes, outcome, shortfall, chosen", [
    (10 * GiB, 0, "granted", {}, None),
    (19 * GiB + 1, 0, "refused", {"ram_bytes": 1}, None),
    (0, 12 * GiB, "granted", {}, "1"),                                  # the roomier GPU
    (0, 15 * GiB, "refused", {"gpu_bytes": 1 * GiB}, "1"),
])
def test_admit(ram, gpu_bytes, outcome, shortfall, chosen):
    s = snap(0, available=20 * GiB, gpus=(gpu("0", free=4 * GiB), gpu("1", free=14 * GiB)))
    result = admit(lease(ram, gpu_bytes, status="waiting"), s, OPEN, [], CONFIG, worker_driven=False)
    assert (result.outcome, result.shortfall, result.gpu) == (outcome, shortfall, chosen)


def test_admit_refuses_when_stale_or_under_pressure():
    s = snap(0)
    stale = Decision(Level.OK, Desired(), ("signals stale since 5.000",), stale=True, admissions_open=False)
    assert admit(lease(GiB), s, stale, [], CONFIG, False).reason == "signals stale since 5.000"
    pressure = Decision(Level.PAUSE, Desired("paused"), ("ram pause: 1 GiB available",), stale=False, admissions_open=False)
    assert "memory pressure (pause)" in admit(lease(GiB), s, pressure, [], CONFIG, False).reason


def test_unknown_gpu_names_the_known_ones():
    with pytest.raises(UnknownGpu, match="known: 0, 1"):
        match_gpus(snap(0, gpus=(gpu("0"), gpu("1"))), "7")
    assert [g.gpu for g in match_gpus(snap(0, gpus=(gpu("0"), gpu("1", uuid="GPU-x"))), "GPU-x")] == ["1"]


def fields(ram=0, gpu_bytes=0, **extra) -> dict:
    return {"holder": extra.pop("holder", "test"), "ram_bytes": ram, "gpu_bytes": gpu_bytes, "gpu": "any",
            "ttl_seconds": extra.pop("ttl_seconds", 60), "pid": None, "free_worker": False, "priority": 0, **extra}


def test_engine_grants_refuses_and_counts_pids(make_manager, source, clock):
    manager = make_manager(ram_margin="1GiB", **CALM)
    source.set(ram_available_bytes=10 * GiB)
    manager.tick()
    granted, admission, _ = manager.request(fields(6 * GiB, pid=4242), 0)
    assert granted.status == "granted"
    _, refused, _ = manager.request(fields(4 * GiB), 0)
    assert refused.outcome == "refused" and refused.shortfall == {"ram_bytes": 1 * GiB}
    # The test process loaded 5 GiB: available fell by 5 GiB, its lease now reserves only 1 GiB.
    source.set(ram_available_bytes=5 * GiB)
    manager.observer.observe = lambda pids: snap(clock(), available=5 * GiB, pid_ram_bytes={4242: 5 * GiB})
    manager.tick()
    second, admission, _ = manager.request(fields(3 * GiB), 0)
    assert second is not None and second.status == "granted"


def test_queue_is_fifo_within_priority_and_grants_when_room_appears(make_manager, source, clock):
    manager = make_manager(ram_margin=0, **CALM)
    source.set(ram_available_bytes=1 * GiB)
    manager.tick()
    first, _, pos1 = manager.request(fields(2 * GiB, holder="first"), 30)
    second, _, pos2 = manager.request(fields(3 * GiB, holder="second"), 30)
    urgent, _, pos3 = manager.request(fields(2 * GiB, holder="urgent", priority=10), 30)
    assert (first.status, pos1, pos2, pos3) == ("waiting", 1, 2, 1)
    source.set(ram_available_bytes=5 * GiB)  # room for urgent (2) + first (2), not second (3)
    clock.advance(1)
    manager.tick()
    status = {l.holder: l.status for l in manager.store.active_leases()}
    assert status == {"urgent": "granted", "first": "granted", "second": "waiting"}
    clock.advance(30)
    manager.tick()
    assert manager.store.get_lease(second.id).status == "refused"  # gave up waiting


def test_heartbeat_keeps_and_ttl_expires(make_manager, clock):
    manager = make_manager()
    manager.tick()
    held, _, _ = manager.request(fields(GiB, ttl_seconds=10), 0)
    clock.advance(8)
    manager.heartbeat(held.id)
    clock.advance(8)
    manager.tick()
    assert manager.store.get_lease(held.id).status == "granted"
    clock.advance(3)
    manager.tick()
    assert manager.store.get_lease(held.id).status == "expired"
    assert manager.heartbeat(held.id).status == "expired"


def test_preemption_frees_the_worker_grants_once_free_and_restores(make_manager, source, clock):
    worker = ContractWorker("tok", transition_seconds=2, clock=clock)
    rec = Reconciler(ContractTarget("http://w", "tok", 1.0, mock_transport(worker)), False, 0.5, 4.0)
    manager = make_manager(reconciler=rec, gpu_margin=0)
    source.set(gpus=(gpu("0", free=4 * GiB),))
    manager.tick()
    lease_, admission, _ = manager.request(fields(gpu_bytes=14 * GiB, free_worker=True, holder="olmo"), 0)
    assert lease_.status == "waiting" and admission.needs_free
    manager.tick()
    assert worker.desired == {"state": "freed", "level": 2} and worker.current()["state"] == "freeing"
    clock.advance(1)
    manager.tick()
    assert manager.store.get_lease(lease_.id).status == "waiting"  # worker still freeing
    clock.advance(2)
    source.set(gpus=(gpu("0", free=15 * GiB),))  # the worker's memory is really gone
    manager.tick()
    assert manager.store.get_lease(lease_.id).status == "granted"
    manager.tick()
    assert worker.desired["state"] == "freed"  # held freed while the lease lives
    manager.release(lease_.id)
    manager.tick()
    assert worker.desired == {"state": "running"}
    kinds = [e["message"] for e in manager.store.events(100) if e["kind"] == "action"]
    assert any("set_freed accepted" in m for m in kinds) and any("set_running" in m for m in kinds)


def test_restore_when_a_preempting_lease_expires(make_manager, source, clock):
    worker = ContractWorker("tok", clock=clock)
    rec = Reconciler(ContractTarget("http://w", "tok", 1.0, mock_transport(worker)), False, 0.5, 4.0)
    manager = make_manager(reconciler=rec, gpu_margin=0)
    source.set(gpus=(gpu("0", free=4 * GiB),))
    manager.tick()
    held, _, _ = manager.request(fields(gpu_bytes=10 * GiB, free_worker=True, ttl_seconds=5), 0)
    manager.tick()
    source.set(gpus=(gpu("0", free=15 * GiB),))
    manager.tick()
    assert manager.store.get_lease(held.id).status == "granted" and worker.desired["state"] == "freed"
    clock.advance(6)
    manager.tick()
    assert manager.store.get_lease(held.id).status == "expired" and worker.desired == {"state": "running"}


def test_remeasure_aborts_a_free_when_memory_recovered(make_manager, source, clock):
    worker = ContractWorker("tok", clock=clock)
    rec = Reconciler(ContractTarget("http://w", "tok", 1.0, mock_transport(worker)), False, 0.5, 4.0)
    manager = make_manager(reconciler=rec, ram={"enter": {"free": "10%"}, "grace_seconds": 0, "hold_seconds": 0},
                         predict={"enter": {}})
    readings = iter([1 * GiB, 20 * GiB])
    manager.observer.observe = lambda pids: snap(clock(), available=next(readings), total=32 * GiB)
    decision = manager.tick()
    assert decision.desired.state == "running" and worker.desired == {"state": "running"}
    assert any("free aborted" in e["message"] for e in manager.store.events(50))
    levels = [e["message"] for e in manager.store.events(50) if e["kind"] in ("level", "decision")]
    assert not any("free" in message for message in levels), f"the aborted free was recorded all the same: {levels}"


def test_the_remeasure_serves_the_queue_once(make_manager, source, clock):
    """Re-measuring redoes the assessment only: a request queued on the first look is not served a second time."""
    worker = ContractWorker("tok", clock=clock)
    rec = Reconciler(ContractTarget("http://w", "tok", 1.0, mock_transport(worker)), False, 0.5, 4.0)
    manager = make_manager(reconciler=rec, ram={"enter": {"free": "10%"}, "grace_seconds": 0, "hold_seconds": 0},
                           predict={"enter": {}}, ram_margin=0)
    manager.tick()
    queued, _, _ = manager.request(fields(25 * GiB, holder="big"), 30)
    assert queued.status == "waiting"
    served = []
    serve = manager.serve_queue
    manager.serve_queue = lambda decision, now: (served.append(now), serve(decision, now))
    readings = iter([1 * GiB, 20 * GiB])
    manager.observer.observe = lambda pids: snap(clock(), available=next(readings), total=32 * GiB)
    manager.tick()
    assert len(served) == 1 and manager.get_lease(queued.id).status == "waiting", "served once, on the first look"


def test_restart_keeps_leases_and_expires_what_timed_out(tmp_path, clock, source):
    config = GuardSettings()
    manager = Manager(config, Observer(source), Store(tmp_path, 100), clock=clock)
    manager.tick()
    keep, _, _ = manager.request(fields(GiB, ttl_seconds=100), 0)
    lose, _, _ = manager.request(fields(GiB, ttl_seconds=5), 0)
    manager.set_maintenance(True, "upgrade")
    manager.store.close()
    clock.advance(10)
    again = Manager(config, Observer(source), Store(tmp_path, 100), clock=clock)
    assert [l.id for l in again.store.active_leases()] == [keep.id]
    assert again.store.get_lease(lose.id).status == "expired"
    assert again.maintenance.on and again.maintenance.reason == "upgrade"
    again.store.close()


def test_tick_metrics_and_events_record_decisions(make_manager, source, clock):
    manager = make_manager(ram={"enter": {"pause": "50%"}, "grace_seconds": 0})
    source.set(ram_available_bytes=8 * GiB)
    manager.tick()
    events = manager.store.events(10)
    assert any(e["kind"] == "decision" and "worker paused" in e["message"] for e in events)
    assert any(e["kind"] == "level" and "ram: ok -> pause" in e["message"] for e in events)
    assert MiB and manager.tick_histogram.count == 1
