"""Proof on the real kernel: an unleased grower beside the worker is frozen, the worker freed, the grower finishes, no kill."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.guard.protectrun import (Crossing, RunResult, freeze_times, grower_outcome, oom_kills, protect_worker,
                                    reactions, start_grower)
from tests.guard.realstack import MiB, Stack, domain_cgroup
from tests.helpers import wait_for

LIMIT_MIB = 2048
WORKER_MIB = 900  # the worker's footprint, given back 1.2 s after the free is accepted (a step, then the shutdown)
GROWER_MIB = 1300  # fits in the domain only once the worker is freed (900 + 1300 > 2048)
FREEZE = 0.05
RECOVERY_HOLD = 2.0
LEVELS = {"warn": "25%", "throttle": "20%", "pause": "15%", "free": "10%", "freeze": f"{FREEZE:.0%}"}


def guard_config(**extra) -> dict:
    return {"tick_seconds": 0.25, "recovery_hold_seconds": RECOVERY_HOLD, "freeze_max_seconds": 20,
            "ram": {"enter": LEVELS, "band": "5%", "grace_seconds": 1.0, "hold_seconds": 30}, **extra}


def worker_state(stack: Stack) -> str:
    return stack.worker.get("/control/state").json()["state"]


def events(stack: Stack) -> list[dict]:
    return stack.guard.get("/v1/events", params={"limit": 500}).json()["events"]


def nothing_frozen(stack: Stack, cgroup) -> bool:
    """The guard records nothing as frozen, and no process in the domain is stopped (the kernel's view)."""
    db = sqlite3.connect(stack.tmp / "state" / "guard.sqlite3")
    row = db.execute("SELECT value FROM kv WHERE key = 'freezer.frozen'").fetchone()
    db.close()
    states = [Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
              for pid in (cgroup.path / "cgroup.procs").read_text().split() if Path(f"/proc/{pid}").exists()]
    return (row is None or json.loads(row[0]) == []) and "T" not in states


def start_stack(tmp_path, cgroup, worker_mib: int = WORKER_MIB, **guard) -> Stack:
    stack = Stack(tmp_path, cgroup, guard_config(**guard), worker_hold_mib=worker_mib, worker_in_cgroup=True,
                  worker_args=("--free-latency", "1.2", "--transition-seconds", "0.5"))
    protect_worker(stack.procs["worker"].pid)  # best effort, never raises: the stack is the caller's to stop
    return stack


def run_rate(stack: Stack, cgroup, tmp_path, rate: float) -> RunResult:
    crossing = Crossing(cgroup, int(cgroup.limit * (1 - FREEZE)))
    try:
        grower = start_grower(cgroup, GROWER_MIB, rate, tmp_path / "grower.log")
        rc, achieved = grower_outcome(grower, timeout=90)
        exited = time.time()
        back = wait_for(lambda: worker_state(stack) == "running" and time.time(), 30, 0.05, what="the worker running again")
    finally:
        crossing.close()
    with contextlib.suppress(AssertionError):  # the guard sees the worker back at its next read of the worker
        wait_for(lambda: any(e["kind"] == "worker" and "downtime_seconds" in e["data"] for e in events(stack)), 5)
    seen = events(stack)
    freezes, frozen = freeze_times(seen)
    kernel, guard = reactions(crossing, seen)
    downtime = [e["data"]["downtime_seconds"] for e in seen if e["kind"] == "worker" and "downtime_seconds" in e["data"]]
    return RunResult(rate, oom_kills(cgroup), rc, achieved, kernel, guard, frozen, back - exited,
                     downtime[-1] if downtime else None, seen)


@pytest.mark.parametrize("rate", [500, 2000])
def test_a_fast_grower_is_frozen_the_worker_freed_and_nobody_is_killed(tmp_path, rate):
    with domain_cgroup(LIMIT_MIB * MiB) as cgroup:
        stack = start_stack(tmp_path, cgroup)
        try:
            result = run_rate(stack, cgroup, tmp_path, rate)
            print(f"\nrate {rate} MB/s (achieved {result.grower_rate_mbs or 0:.0f} MB/s incl. frozen time): "
                  f"reaction kernel crossing -> freeze {[f'{1000 * r:.0f} ms' for r in result.reaction_seconds]}, "
                  f"guard's own {[f'{1000 * r:.0f} ms' for r in result.guard_reaction_seconds]}, frozen {result.frozen_seconds:.2f} s, "
                  f"worker running {result.worker_back_seconds:.2f} s after the grower exited, "
                  f"downtime {result.worker_downtime_seconds} s")
            metrics = stack.guard.get("/metrics").text
            worst = [line.split()[-1] for line in metrics.splitlines() if line.startswith("headroom_guard_fast_gap_ratio_max ")]
            buckets = {line.split('le="')[1].split('"')[0]: float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("headroom_guard_fast_step_seconds_bucket")}
            print(f"fast path: worst gap between two looks / its planned interval = {float(worst[0]):.2f} "
                  f"(through the freeze, the worker's free and its wake); looks slower than 10 ms: "
                  f"{buckets['+Inf'] - buckets['0.01']:.0f} of {buckets['+Inf']:.0f} (the freeze is done inside a look)")
            assert result.oom_kills == 0, stack.logs()
            assert result.grower_rc == 0, stack.logs()
            assert any(e["kind"] == "freeze" for e in result.events), "the grower was never frozen"
            assert result.worker_back_seconds <= RECOVERY_HOLD + 5, "the worker stayed down long after the cause ended"
            assert stack.worker_puts()[-1]["state"] == "running"
        finally:
            stack.stop()


@pytest.mark.parametrize("on_no_room", ["thaw", "terminate"])
def test_with_nothing_to_free_on_no_room_happens_and_nothing_stays_frozen(tmp_path, on_no_room):
    with domain_cgroup(LIMIT_MIB * MiB) as cgroup:
        stack = start_stack(tmp_path, cgroup, worker_mib=0, freeze_max_seconds=2, on_no_room=on_no_room,
                            freeze_terminate_grace_seconds=2)
        try:
            grower = start_grower(cgroup, LIMIT_MIB + 256, 500, tmp_path / "grower.log")  # can never fit
            rc, _ = grower_outcome(grower, timeout=60)
            seen = events(stack)
            assert any(e["kind"] == "freeze" for e in seen), stack.logs()
            outcomes = [e["data"].get("outcome") for e in seen if e["kind"] == "thaw"]
            if on_no_room == "thaw":  # the kernel decides, as without headroom: it kills the grower
                assert "no_room_thawed" in outcomes and oom_kills(cgroup) >= 1 and rc == -signal.SIGKILL
            else:
                assert "sigterm" in outcomes and rc in (-signal.SIGTERM, -signal.SIGKILL)
            assert nothing_frozen(stack, cgroup), "something stayed frozen"
        finally:
            stack.stop()


def test_a_sigkilled_guard_leaves_nothing_frozen_once_restarted(tmp_path):
    with domain_cgroup(LIMIT_MIB * MiB) as cgroup:
        stack = start_stack(tmp_path, cgroup, freeze_max_seconds=600)
        stack.procs["worker"].send_signal(signal.SIGSTOP)  # a worker that never gives memory back: the grower stays frozen
        try:
            grower = start_grower(cgroup, GROWER_MIB, 500, tmp_path / "grower.log")
            wait_for(lambda: any(e["kind"] == "freeze" for e in events(stack)), 30, what="the freeze")
            stack.kill_guard()
            time.sleep(0.5)
            assert grower.poll() is None and oom_kills(cgroup) == 0
            stack.procs["worker"].send_signal(signal.SIGKILL)  # its memory comes back; only the restarted guard can thaw
            stack.procs["worker"].wait()
            stack.start_guard()
            rc, _ = grower_outcome(grower, timeout=60)
            assert rc == 0, stack.logs()
            assert oom_kills(cgroup) == 0
        finally:
            stack.stop()
