"""Each named step of the policy, table-driven: thresholds, band, grace/hold, slope, swap rate, free level, desired."""

from __future__ import annotations

import pytest

from guard.core.policy import (apply_hysteresis, desired_worker, entered_level, free_level_for, held_level,
                          seconds_to_exhaustion, swap_in_rate, target_level, update_samples)
from guard.common.signals import resolve_rule
from guard.common.settings import GuardSettings, Rule
from guard.common.types import Lease, Level, ResourceState
from headroom.contract import Maintenance
from tests.guard.support import GiB, MiB

W, T, P, F, OK = Level.WARN, Level.THROTTLE, Level.PAUSE, Level.FREE, Level.OK
RAM = resolve_rule(Rule(enter={"warn": "25%", "throttle": "20%", "pause": "15%", "free": "10%"}, band="5%"), "ram", 100 * GiB)
PSI = resolve_rule(Rule(enter={"warn": 0.05, "pause": 0.20}, band=0.03), "psi")


def test_resolve_rule_units():
    assert RAM.enter[W] == 25 * GiB and RAM.band == 5 * GiB and not RAM.higher_is_worse
    swap = resolve_rule(Rule(enter={"warn": "1MiB"}, band="512KiB"), "swap")
    assert swap.enter == {W: MiB} and swap.band == 512 * 1024 and swap.higher_is_worse
    sized = resolve_rule(Rule(enter={"pause": "2GiB"}), "ram", 100 * GiB)
    assert sized.enter == {P: 2 * GiB}


@pytest.mark.parametrize("value, expected", [
    (None, OK), (50 * GiB, OK), (25 * GiB, W), (19 * GiB, T), (15 * GiB, P), (1 * GiB, F), (0, F)])
def test_entered_level_ram(value, expected):
    assert entered_level(value, RAM) == expected


@pytest.mark.parametrize("value, expected", [(0.0, OK), (0.05, W), (0.19, W), (0.2, P), (0.9, P)])
def test_entered_level_psi_higher_is_worse_and_skips_missing_levels(value, expected):
    assert entered_level(value, PSI) == expected


@pytest.mark.parametrize("value, current, expected", [
    (16 * GiB, P, P),   # recovered past pause's enter (15) but not by the band (20): still pause
    (21 * GiB, P, T),   # past pause's exit (20) but not throttle's (25)
    (31 * GiB, P, OK),  # past every exit
    (29 * GiB, W, W),   # inside warn's band
    (16 * GiB, T, T),   # held level never exceeds current
    (None, P, OK),
])
def test_held_level_applies_the_band(value, current, expected):
    assert held_level(value, RAM, current) == expected


@pytest.mark.parametrize("value, current, expected", [(0.04, W, W), (0.01, W, OK), (0.18, P, P), (0.16, P, W)])
def test_held_level_higher_is_worse(value, current, expected):
    assert held_level(value, PSI, current) == expected


@pytest.mark.parametrize("value, current, expected", [(14 * GiB, W, P), (16 * GiB, P, P), (40 * GiB, P, OK)])
def test_target_level_is_max_of_entered_and_held(value, current, expected):
    assert target_level(value, RAM, current) == expected


TH = resolve_rule(Rule(enter={"warn": 0.1}, grace_seconds=2, hold_seconds=10), "psi")


@pytest.mark.parametrize("rs, target, now, expected_level, rising, falling", [
    (ResourceState(OK), W, 100, OK, 100, None),                          # grace starts
    (ResourceState(OK, rising_since=99), W, 100, OK, 99, None),           # still in grace
    (ResourceState(OK, rising_since=98), W, 100, W, None, None),          # grace over: enter
    (ResourceState(W, rising_since=98), W, 100, W, None, None),           # steady: timers cleared
    (ResourceState(P), OK, 100, P, None, 100),                            # hold starts
    (ResourceState(P, falling_since=95), W, 100, P, None, 95),            # still holding
    (ResourceState(P, falling_since=90), W, 100, W, None, None),          # hold over: leave to the target
    (ResourceState(P, falling_since=95), P, 100, P, None, None),          # back up: hold reset
])
def test_apply_hysteresis(rs, target, now, expected_level, rising, falling):
    new = apply_hysteresis(rs, target, now, TH)
    assert (new.level, new.rising_since, new.falling_since) == (expected_level, rising, falling)


@pytest.mark.parametrize("samples, expected", [
    ([], None), ([(0, 10), (1, 9)], None),                          # too few points
    ([(0, 100), (1, 90), (2, 80)], 8.0),                            # 10/s falling, 80 left
    ([(0, 80), (1, 90), (2, 100)], None),                           # rising
    ([(0, 50), (1, 50), (2, 50)], None),                            # flat
    ([(0, 100), (0.1, 90), (0.2, 80)], None),                       # span too short to trust
])
def test_seconds_to_exhaustion(samples, expected):
    assert seconds_to_exhaustion(samples) == (pytest.approx(expected) if expected else None)


def test_update_samples_keeps_the_window():
    samples = update_samples([(0, 1), (5, 2), (9, 3)], 12, 4, window=8)
    assert samples == [(5, 2), (9, 3), (12, 4)]


@pytest.mark.parametrize("last, now, total, expected", [
    (None, 1, 100, None), ((0, 100), 2, 300, 100.0), ((0, 100), 0, 300, None), ((0, 500), 1, 100, None), ((0, 1), 1, None, None)])
def test_swap_in_rate(last, now, total, expected):
    assert swap_in_rate(last, now, total) == expected


@pytest.mark.parametrize("configured, ram_level, psi_level, expected", [
    (1, OK, OK, 1), (1, W, OK, 2), (1, OK, T, 2), (2, OK, OK, 2)])
def test_free_level_never_moves_memory_into_ram_under_pressure(configured, ram_level, psi_level, expected):
    resources = {"ram": ResourceState(ram_level), "psi": ResourceState(psi_level), "gpu:0": ResourceState(F)}
    assert free_level_for(resources, GuardSettings(free_level=configured)) == expected


def _lease(**fields) -> Lease:
    return Lease(id="l1", holder="t", ram_bytes=0, gpu_bytes=GiB, gpu="any", ttl_seconds=60, created_at=0,
                 expires_at=60, **fields)


@pytest.mark.parametrize("level, maintenance, leases, expected", [
    (OK, None, [], ("running", None, None)),
    (W, None, [], ("running", None, None)),
    (T, None, [], ("throttled", 3, None)),
    (P, None, [], ("paused", None, None)),
    (F, None, [], ("freed", None, 2)),
    (T, Maintenance(True, "upgrade"), [], ("paused", None, None)),
    (P, None, [_lease(status="waiting", frees_worker=True)], ("freed", None, 2)),
    (OK, None, [_lease(status="released", frees_worker=True)], ("running", None, None)),
    (OK, None, [_lease(status="granted", free_worker=True)], ("running", None, None)),  # allowed, not needed
])
def test_desired_worker_takes_the_most_severe(level, maintenance, leases, expected):
    desired = desired_worker(level, {"ram": ResourceState(level)}, leases, maintenance, GuardSettings(throttle_concurrency=3))
    assert (desired.state, desired.concurrency, desired.level) == expected
    if maintenance:
        assert "upgrade" in desired.reason
