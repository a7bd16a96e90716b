"""Acting never blinds observing, urgency skips the grace, a vanished value holds nothing, the worker comes back soon."""

from __future__ import annotations

import time

import httpx
import pytest

from guard.targets.actuator import ActingThread, ContractTarget, Reconciler
from guard.core.policy import evaluate
from guard.core.protection import DowntimeMeter, forget_free, with_override, worker_restarted
from guard.sources.observer import merge_fast
from guard.protect.domain import DomainObs
from guard.common.settings import GuardSettings
from guard.common.types import Decision, Desired, GuardState, Level, ResourceState
from headroom.contract import Maintenance, WorkerStatus
from tests.guard.contract_worker import ContractWorker
from tests.guard.support import GiB, snap

TOTAL = 100 * GiB
RAM_ONLY = {"predict": {"enter": {}}, "gpu": {"enter": {}}}


def run(config: GuardSettings, steps, state: GuardState | None = None):
    """steps: [(dt, snapshot fields)] -> [(level, desired state, state)]."""
    state, now, out = state or GuardState(), 1000.0, []
    for dt, fields in steps:
        now += dt
        state, decision = evaluate(snap(now, total=TOTAL, **fields), state, [], now, config)
        out.append((decision.level, decision.desired.state, state))
    return out


def test_a_value_that_disappears_holds_no_level():
    config = GuardSettings(psi={"enter": {"pause": 0.2}, "grace_seconds": 0, "hold_seconds": 30}, **RAM_ONLY)
    levels = run(config, [(1, {"psi_full_ratio": 0.5, "available": 60 * GiB}), (1, {"psi_full_ratio": None, "available": 60 * GiB})])
    assert [lvl for lvl, _, _ in levels] == [Level.PAUSE, Level.OK]
    assert levels[-1][2].resources["psi"].why == "psi: no signal"


def test_a_clear_value_leaves_after_the_short_recovery_hold_a_partial_one_after_the_rules_hold():
    config = GuardSettings(ram={"enter": {"pause": "15%", "free": "10%"}, "band": "5%", "grace_seconds": 0, "hold_seconds": 30},
                           recovery_hold_seconds=2, **RAM_ONLY)
    clear = run(config, [(1, {"available": 5 * GiB}), (1, {"available": 60 * GiB}), (1.9, {"available": 60 * GiB}),
                         (0.2, {"available": 60 * GiB})])
    assert [(lvl, d) for lvl, d, _ in clear] == [(Level.FREE, "freed"), (Level.FREE, "freed"), (Level.FREE, "freed"),
                                                  (Level.OK, "running")]
    partial = run(config, [(1, {"available": 5 * GiB}), (1, {"available": 17 * GiB}), (5, {"available": 17 * GiB})])
    assert partial[-1][0] == Level.FREE  # between free and pause+band: the rule's 30 s hold applies


def test_exhaustion_nearer_than_a_free_takes_skips_the_grace():
    config = GuardSettings(ram={"enter": {"free": "10%"}, "grace_seconds": 1.0}, gpu={"enter": {}},
                           predict={"enter": {"pause": 20}, "grace_seconds": 1.0}, free_seconds_estimate=2.0)
    # 40 GiB available falling 20 GiB/s: exhausted in 1.5 s at the third look, sooner than a 2 s free.
    steps = [(0.25, {"available": (40 - 5 * i) * GiB}) for i in range(4)] + [(0.25, {"available": 9 * GiB})]
    levels = run(config, steps)
    assert levels[1][0] == Level.OK and levels[2][0] == Level.PAUSE  # predict entered without its 1 s grace
    assert levels[4][:2] == (Level.FREE, "freed")  # ram crossed 10 %: freed at once, no grace
    slow = GuardSettings(ram={"enter": {"free": "10%"}, "grace_seconds": 1.0}, **RAM_ONLY)
    assert run(slow, [(0.25, {"available": 9 * GiB})])[0][0] == Level.OK  # no trend: the grace applies


def test_a_waking_worker_is_not_a_falling_trend():
    config = GuardSettings(ram={"enter": {}}, gpu={"enter": {}}, predict={"enter": {"pause": 20}, "grace_seconds": 0})
    waking = [(1, {"available": (60 - 10 * i) * GiB, "worker_state": "waking"}) for i in range(5)]
    assert all(lvl == Level.OK for lvl, _, _ in run(config, waking))
    settling = [(1, {"available": (60 - 10 * i) * GiB, "worker_state": "running", "worker_settling": True}) for i in range(5)]
    assert all(lvl == Level.OK for lvl, _, _ in run(config, settling))  # running, but still loading its engine
    loading = [(1, {"available": (60 - 10 * i) * GiB, "worker_state": "running"}) for i in range(5)]
    assert run(config, loading)[-1][0] == Level.PAUSE


def test_the_fast_paths_override_wins_over_a_milder_policy_and_leaves_the_inputs_alone():
    state = GuardState(level=Level.OK)
    decision = Decision(Level.OK, Desired(), (), stale=False, admissions_open=True)
    freed = Desired("freed", level=2, reason="freeze level")
    new_state, new_decision = with_override(state, decision, freed)
    assert (new_decision.desired, new_decision.level, new_decision.admissions_open) == (freed, Level.FREEZE, False)
    assert state.desired == Desired() and decision.desired == Desired()
    assert with_override(state, decision, None) == (state, decision)


def test_a_newer_fast_look_replaces_the_sources_ram_values():
    s = snap(10.0, available=5 * GiB)
    assert merge_fast(s, DomainObs(10.2, 8 * GiB, 1 * GiB)).ram_available_bytes == 1 * GiB
    assert merge_fast(s, DomainObs(9.0, 8 * GiB, 1 * GiB)) is s
    assert merge_fast(s, None) is s


def test_a_restarted_worker_is_not_freed_again_without_a_fresh_reason():
    freed = WorkerStatus.model_validate({"state": "freed", "desired": {"state": "freed", "level": 2}})
    fresh = WorkerStatus.model_validate({"state": "starting", "desired": {"state": "running"}})
    assert worker_restarted(freed, fresh, "freed")
    woken = WorkerStatus.model_validate({"state": "waking", "desired": {"state": "running"}})
    assert not worker_restarted(freed, woken, "running")  # we woke it
    state = GuardState(resources={"ram": ResourceState(level=Level.FREE), "psi": ResourceState(level=Level.WARN)},
                       level=Level.FREE, desired=Desired("freed", level=2))
    after = forget_free(state)
    assert (after.level, after.desired.state, after.resources["psi"].level) == (Level.PAUSE, "paused", Level.WARN)
    config = GuardSettings(ram={"enter": {"pause": "15%", "free": "10%"}, "grace_seconds": 1, "hold_seconds": 30}, **RAM_ONLY)
    still_low = run(config, [(0.5, {"available": 8 * GiB}), (0.5, {"available": 8 * GiB}), (0.5, {"available": 8 * GiB})],
                    state=after)
    assert [d for _, d, _ in still_low] == ["paused", "paused", "freed"]  # freed again only after a fresh grace at the free level


def test_downtime_runs_from_the_guards_decision_to_running_again():
    meter = DowntimeMeter()
    meter.start(100.0)
    assert meter.update("running", Desired("freed", level=2), 100.1) is None  # not yet seen down: a stale read
    assert meter.update("freeing", Desired("freed", level=2), 100.5) is None
    assert meter.update("waking", Desired(), 103.0) is None
    assert meter.update("running", Desired(), 104.2) == pytest.approx(4.2) and meter.histogram.count == 1
    assert meter.update("running", Desired(), 105.0) is None


class SlowWorker(httpx.BaseTransport):
    """The contract worker behind a transport that holds each PUT like the real worker does (up to 2 s per step)."""

    def __init__(self, hold: float):
        self.worker, self.hold = ContractWorker("t"), hold

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            time.sleep(self.hold)
        status, body = self.worker.handle(request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()},
                                          request.content)
        return httpx.Response(status, json=body)


def test_a_slow_control_call_never_blocks_the_caller_and_the_newest_wish_wins():
    transport = SlowWorker(hold=0.6)
    reconciler = Reconciler(ContractTarget("http://worker", "t", 5.0, transport), False, 0.5, 5)
    events: list[dict] = []
    acting = ActingThread(reconciler, lambda evs, now: events.extend(evs)).start()
    try:
        started = time.perf_counter()
        acting.submit(Desired("paused", reason="a"), Maintenance())
        acting.submit(Desired("freed", level=2, reason="b"), Maintenance())
        time.sleep(0.05)
        acting.submit(Desired("running", reason="c"), Maintenance())
        submitted = time.perf_counter() - started
        deadline = time.monotonic() + 10
        while not any(c["body"].get("state") == "running" for c in transport.worker.calls) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        acting.stop()
    assert submitted < 0.3  # three wishes handed over while each PUT takes 0.6 s
    puts = [c["body"]["state"] for c in transport.worker.calls if c["method"] == "PUT"]
    assert puts[-1] == "running" and "paused" not in puts[1:]  # a superseded wish is skipped, the last one applied
    assert all(e.result in ("ok", "accepted") for e in events)


def test_a_wish_every_tick_does_not_starve_the_reads_of_the_worker():
    transport = SlowWorker(hold=0.0)
    reconciler = Reconciler(ContractTarget("http://worker", "t", 5.0, transport), False, 0.5, 5)
    acting = ActingThread(reconciler, lambda evs, now: None, read_every=0.05).start()
    try:
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            acting.submit(Desired("running"), Maintenance())  # in sync: nothing to send, but the state moves on
            time.sleep(0.01)
    finally:
        acting.stop()
    reads = [c for c in transport.worker.calls if c["method"] == "GET"]
    assert len(reads) >= 5 and not [c for c in transport.worker.calls if c["method"] == "PUT"]


def test_the_engine_marks_the_worker_settling_for_a_window_after_it_woke(make_manager, clock):
    worker = ContractWorker("t", clock=clock)
    reconciler = Reconciler(ContractTarget("http://w", "t", 5.0, _mock(worker)), False, 0.5, 5)
    manager = make_manager(reconciler=reconciler, predict_window_seconds=10)
    manager.tick()
    assert not manager.snapshot.worker_settling  # running since before the guard: a trend counts
    worker.put_state({"state": "freed", "level": 2})
    clock.advance(1)
    manager.tick()
    worker.put_state({"state": "running"})
    clock.advance(9.5)
    manager.tick()
    assert manager.snapshot.worker_settling
    clock.advance(1)
    manager.tick()
    assert not manager.snapshot.worker_settling


def _mock(worker):
    from tests.guard.contract_worker import mock_transport

    return mock_transport(worker)
