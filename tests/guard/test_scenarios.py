"""Fake-clock scenarios through evaluate(): grace, hold, band, prediction, staleness, free level under RAM pressure."""

from __future__ import annotations

from guard.core.policy import evaluate
from guard.common.settings import GuardSettings
from guard.common.types import GuardState, Level
from tests.guard.support import GiB, gpu, snap

TOTAL = 100 * GiB


def run(config: GuardSettings, steps, leases=(), maintenance=None):
    """steps: [(dt, snapshot fields)]; returns [(level, desired state)] per step."""
    state, now, out = GuardState(), 1000.0, []
    for dt, fields in steps:
        now += dt
        state, decision = evaluate(snap(now, total=TOTAL, **fields), state, leases, now, config, maintenance)
        out.append((decision.level, decision.desired.state))
    return out


QUIET = {"predict": {"enter": {}}, "gpu": {"enter": {}}}  # isolate the RAM rule


def test_grace_delays_entering_a_level():
    config = GuardSettings(ram={"enter": {"pause": "15%"}, "grace_seconds": 1.0}, **QUIET)
    levels = run(config, [(0.25, {"available": 10 * GiB})] * 5)
    assert [lvl for lvl, _ in levels] == [Level.OK, Level.OK, Level.OK, Level.OK, Level.PAUSE]
    assert levels[-1][1] == "paused"


def test_a_spike_shorter_than_grace_does_nothing():
    config = GuardSettings(ram={"enter": {"pause": "15%"}, "grace_seconds": 1.0}, **QUIET)
    steps = [(0.25, {"available": 10 * GiB})] * 3 + [(0.25, {"available": 50 * GiB})] + [(0.25, {"available": 10 * GiB})] * 3
    assert all(lvl == Level.OK for lvl, _ in run(config, steps))


def test_hold_delays_leaving_a_level():
    config = GuardSettings(ram={"enter": {"pause": "15%"}, "grace_seconds": 0, "hold_seconds": 30}, recovery_hold_seconds=60, **QUIET)
    steps = [(1, {"available": 10 * GiB}), (1, {"available": 60 * GiB}), (29, {"available": 60 * GiB}), (1, {"available": 60 * GiB})]
    assert [lvl for lvl, _ in run(config, steps)] == [Level.PAUSE, Level.PAUSE, Level.PAUSE, Level.OK]


def test_band_keeps_the_level_while_the_value_hovers_at_the_threshold():
    config = GuardSettings(ram={"enter": {"pause": "15%"}, "band": "5%", "grace_seconds": 0, "hold_seconds": 0}, **QUIET)
    hover = [(1, {"available": v * GiB}) for v in (14, 16, 14.5, 17, 19.9)]
    assert all(lvl == Level.PAUSE for lvl, _ in run(config, hover))
    assert run(config, [(1, {"available": 14 * GiB}), (1, {"available": 20.5 * GiB})])[-1][0] == Level.OK


def test_prediction_from_a_falling_slope_acts_before_thresholds():
    config = GuardSettings(ram={"enter": {"free": "1%"}}, gpu={"enter": {}},
                           predict={"enter": {"warn": 120, "pause": 20}, "grace_seconds": 0, "band": 5})
    # 60 GiB available, falling 2 GiB per second: ~30 s left -> warn; then faster, 4 GiB/s with 40 left -> 10 s -> pause.
    steps = [(1, {"available": (60 - 2 * i) * GiB}) for i in range(4)]
    levels = run(config, steps)
    assert levels[0][0] == Level.OK and levels[1][0] == Level.OK  # too few points for a slope
    assert levels[2][0] == Level.WARN and levels[3][0] == Level.WARN
    steps += [(1, {"available": (54 - 6 * i) * GiB}) for i in range(1, 4)]
    assert run(config, steps)[-1] == (Level.PAUSE, "paused")


def test_prediction_ignores_a_stable_box():
    config = GuardSettings(gpu={"enter": {}})
    steps = [(0.25, {"available": (50 + (i % 2) * 0.01) * GiB}) for i in range(40)]
    assert all(lvl == Level.OK for lvl, _ in run(config, steps))


def test_stale_signals_keep_the_worker_where_it_is_and_close_admission():
    config = GuardSettings(ram={"enter": {"pause": "15%"}, "grace_seconds": 0}, stale_after_seconds=3, **QUIET)
    state, _ = evaluate(snap(1000, available=10 * GiB, total=TOTAL), GuardState(), [], 1000, config)
    assert state.desired.state == "paused"
    state, decision = evaluate(snap(1000, available=90 * GiB, total=TOTAL), state, [], 1010, config)  # 10 s old
    assert decision.stale and not decision.admissions_open and decision.desired.state == "paused"
    assert "signals stale since 1000.000" in decision.reasons[0]
    failed = snap(1011, total=TOTAL)
    failed = failed.__class__(**{**failed.__dict__, "ok": False, "error": "exporter down"})
    state, decision = evaluate(failed, state, [], 1011, config)
    assert decision.stale and "exporter down" in decision.reasons[0] and state.stale_since == 1000


def test_ram_pressure_frees_at_level_2_even_when_level_1_is_configured():
    config = GuardSettings(free_level=1, ram={"enter": {"warn": "30%", "free": "10%"}, "grace_seconds": 0}, **QUIET)
    _, decision = evaluate(snap(1, available=5 * GiB, total=TOTAL), GuardState(), [], 1, config)
    assert (decision.desired.state, decision.desired.level) == ("freed", 2)


def test_gpu_pressure_with_calm_ram_may_use_level_1():
    config = GuardSettings(free_level=1, gpu={"enter": {"free": "5%"}, "grace_seconds": 0}, predict={"enter": {}})
    _, decision = evaluate(snap(1, available=90 * GiB, total=TOTAL, gpus=(gpu("0", free=0.1 * GiB),)), GuardState(), [], 1, config)
    assert (decision.level, decision.desired.state, decision.desired.level) == (Level.FREE, "freed", 1)
    assert "gpu:0 free" in decision.desired.reason


def test_swap_in_rate_throttles_thrashing():
    config = GuardSettings(swap={"enter": {"throttle": "16MiB"}, "grace_seconds": 0}, **QUIET)
    steps = [(1, {"swap_in_bytes_total": 0}), (1, {"swap_in_bytes_total": 64 * 2**20})]
    assert run(config, steps) == [(Level.OK, "running"), (Level.THROTTLE, "throttled")]


def test_admission_closes_at_the_configured_level():
    config = GuardSettings(ram={"enter": {"warn": "30%", "throttle": "20%"}, "grace_seconds": 0}, **QUIET)
    _, warn = evaluate(snap(1, available=25 * GiB, total=TOTAL), GuardState(), [], 1, config)
    _, throttle = evaluate(snap(1, available=15 * GiB, total=TOTAL), GuardState(), [], 1, config)
    assert warn.admissions_open and not throttle.admissions_open
