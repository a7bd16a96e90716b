"""Swap on, real kernel, a test-made domain: a burst that fits in RAM + swap is left alone, one that does not is frozen
only while the worker is freed, a thrashing worker is throttled or paused first, and a process parked between the free
and freeze thresholds causes at most one free/wake cycle."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.guard.protectrun import GROWER, freeze_times, grower_outcome, oom_kills, protect_worker, start_grower
from tests.guard.realstack import MiB, Stack, domain_cgroup
from tests.guard.swapfile import GiB, allow_swap, swap_file, swap_supported
from tests.guard.test_protect_real import events, guard_config, worker_state
from tests.helpers import need, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]
LIMIT_MIB, WORKER_MIB = 2048, 900


@pytest.fixture(scope="module")
def swap():
    """One 3 GiB swap file for this module's tests, switched off and removed afterwards even on failure."""
    need(swap_supported() is None, f"a test swap file ({swap_supported()})")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp, swap_file(Path(tmp), 3 * GiB) as path:
        yield path


def swap_stack(tmp_path, cgroup, swap_mib: int, worker_args: tuple[str, ...] = (), worker_mib: int = WORKER_MIB,
               **guard) -> Stack:
    allow_swap(cgroup.path, cgroup.version, cgroup.limit, swap_mib * MiB)
    stack = Stack(tmp_path, cgroup, guard_config(**guard), worker_hold_mib=worker_mib, worker_in_cgroup=True,
                  worker_args=("--free-latency", "1.2", "--transition-seconds", "0.5", *worker_args))
    protect_worker(stack.procs["worker"].pid)
    time.sleep(1.0)  # a few ticks with the worker's memory in place
    return stack


def shrink(cgroup, to_mib: int) -> None:
    """Lower the cgroup's RAM limit in steps; the kernel answers EBUSY while it cannot reclaim down to a step yet."""
    limit = cgroup.path / ("memory.max" if cgroup.version == 2 else "memory.limit_in_bytes")
    for step in range(int(limit.read_text()) // MiB - 128, to_mib - 1, -128):
        wait_for(lambda: _write(limit, step * MiB), 20, 0.05, what=f"the limit down to {step} MiB")


def _write(path: Path, value: int) -> bool:
    try:
        path.write_text(str(value))
        return True
    except OSError:
        return False


def worker_up(stack: Stack) -> bool:
    """Running again, at full or throttled concurrency (a host-wide PSI level may throttle it: it still serves)."""
    return worker_state(stack) in ("running", "throttled")


def puts(stack: Stack) -> list[str]:
    return [body["state"] for body in stack.worker_puts()]


def timeline(stack: Stack, seen: list[dict], ended: float) -> str:
    """The guard's events and the worker's PUTs on one clock, relative to the grower's end."""
    calls = [(c["at"], f'worker PUT {c["body"].get("state")}') for c in stack.worker.get("/_test/calls").json()["calls"]
             if c["method"] == "PUT"]
    rows = sorted([(e["at"], f'{e["kind"]}: {e["message"]}') for e in seen] + calls)
    return "\n".join(f"{at - ended:+7.2f} s  {what}" for at, what in rows)


def test_a_burst_that_fits_in_ram_plus_swap_frees_nothing_and_freezes_nothing(tmp_path, swap):
    with domain_cgroup(LIMIT_MIB * MiB) as cgroup:
        stack = swap_stack(tmp_path, cgroup, swap_mib=1536)
        try:
            grower = start_grower(cgroup, 1300, 1000, tmp_path / "grower.log")  # 900 + 1300 > 2048: ~250 MiB to swap
            rc, achieved = grower_outcome(grower, timeout=90)
            seen = events(stack)
            print(f"\nburst that fits: grower rc {rc} at {achieved or 0:.0f} MB/s, worker PUTs {puts(stack)}, "
                  f"OOM kills {oom_kills(cgroup)}; levels: " + "; ".join(e["message"] for e in seen[::-1] if e["kind"] == "level"))
            assert rc == 0 and oom_kills(cgroup) == 0, stack.logs()
            assert not any(e["kind"] == "freeze" for e in seen), "the grower was frozen though RAM + swap held it"
            assert "freed" not in puts(stack), "the worker was freed though RAM + swap held both"
        finally:
            stack.stop()


def test_a_burst_that_does_not_fit_is_frozen_only_while_the_worker_is_freed(tmp_path, swap):
    with domain_cgroup(LIMIT_MIB * MiB) as cgroup:
        stack = swap_stack(tmp_path, cgroup, swap_mib=1024)
        try:  # 900 + 2100 > 2048 + 1024 - reserve: together they do not fit; alone, it fits only with swap
            grower = start_grower(cgroup, 2100, 1000, tmp_path / "grower.log")
            rc, _ = grower_outcome(grower, timeout=90)
            ended = time.time()
            back = wait_for(lambda: worker_up(stack) and time.time(), 30, 0.05, what="the worker back")
            seen = events(stack)
            _, frozen = freeze_times(seen)
            print("\n" + timeline(stack, seen, ended))
            print(f"\nburst that does not fit: frozen {frozen:.2f} s in all, worker running {back - ended:.2f} s after "
                  f"the grower's end, worker PUTs {puts(stack)}")
            assert rc == 0 and oom_kills(cgroup) == 0, timeline(stack, seen, ended) + "\n" + stack.logs()
            assert "freed" in puts(stack), "the worker was never freed"
            assert frozen <= 5.0, f"frozen {frozen:.1f} s: longer than freeing the worker takes"
            assert not any(e["kind"] == "thaw" and e["data"].get("outcome") == "no_room_thawed" for e in seen)
            story = [f'{e["at"] - ended:+.1f} {e["message"]}' for e in seen[::-1] if e["kind"] != "freeze"]
            assert back - ended <= 10.0, "\n".join(story)
        finally:
            stack.stop()


def test_a_thrashing_worker_is_throttled_or_paused_first(tmp_path, swap):
    with domain_cgroup(1 * GiB) as cgroup:
        stack = swap_stack(tmp_path, cgroup, swap_mib=1024, worker_mib=700, worker_args=("--touch",),
                           swap={"enter": {"warn": "1MiB", "throttle": "16MiB", "pause": "64MiB"}, "band": "512KiB",
                                 "grace_seconds": 1.0, "hold_seconds": 30})
        try:  # then its RAM shrinks below its working set: the kernel swaps part of it out, and every pass faults it back
            wait_for(lambda: stack.headroom()["level"] == "ok" and worker_state(stack) == "running", 60, what="all clear")
            before = len(puts(stack))
            shrink(cgroup, 512)
            shrunk = time.time()
            wait_for(lambda: any(p != "running" for p in puts(stack)[before:]), 30, what="the guard to act on the thrash")
            first = next(p for p in puts(stack)[before:] if p != "running")
            acted = next(c["at"] for c in stack.worker.get("/_test/calls").json()["calls"]
                         if c["method"] == "PUT" and c["body"].get("state") == first and c["at"] >= shrunk)
            why = [e["message"] for e in events(stack)[::-1] if e["kind"] == "level" and e["at"] >= shrunk]
            print(f"\nthrashing worker: {first} {acted - shrunk:.1f} s after its RAM shrank below its working set; {why}")
            time.sleep(5)  # paused, the worker stops touching: the thrash ends, so nothing asks for more
            print(f"\nthrashing worker: worker PUTs {puts(stack)}; OOM kills {oom_kills(cgroup)}")
            assert first in ("throttled", "paused"), f"the first action was {first}, not throttle or pause"
            assert "freed" not in puts(stack), "freed while pausing had ended the thrash"
            assert oom_kills(cgroup) == 0
        finally:
            stack.stop()


def park(cgroup, tmp_path, seconds: float) -> subprocess.Popen:
    """An unleased process that takes the domain to 7.5 % available (between free, 10 %, and freeze, 5 %) and stays."""
    parked = cgroup.limit - cgroup.usage() - int(0.075 * cgroup.limit)
    return subprocess.Popen([sys.executable, str(GROWER), "--target-mib", str(parked // MiB), "--rate-mbs", "300",
                             "--hold-seconds", str(seconds)], stdout=subprocess.PIPE, stderr=open(tmp_path / "parked.log", "ab"),
                            text=True, preexec_fn=cgroup.join, start_new_session=True)


def frees(seen: list[dict]) -> int:
    """How often the guard asked the worker to be freed (and it accepted)."""
    return sum(1 for e in seen if e["kind"] == "action" and e["data"].get("action") == "set_freed"
               and e["data"].get("result") in ("ok", "accepted"))


def parked_run(stack_events, cgroup, tmp_path, running) -> tuple[int, float]:
    proc = park(cgroup, tmp_path, 12.0)
    rc, _ = grower_outcome(proc, timeout=90)
    ended, cycles = time.time(), frees(stack_events())
    back = wait_for(lambda: running() and time.time(), 30, 0.1, what="the worker back after the parked process ended")
    assert rc == 0 and oom_kills(cgroup) == 0
    return cycles, back - ended


STORY = ("action", "worker", "decision", "protect", "level")
FLAP_RAM = {"ram": {"enter": {"warn": "25%", "throttle": "20%", "pause": "15%", "free": "10%", "freeze": "5%"},
                    "band": "5%", "grace_seconds": 1.0, "hold_seconds": 30}}


def test_a_parked_process_costs_the_contract_worker_at_most_one_free_wake_cycle(tmp_path, swap):
    with domain_cgroup(LIMIT_MIB * MiB) as cgroup:
        stack = swap_stack(tmp_path, cgroup, swap_mib=0)  # no swap for this domain: the thresholds are RAM's
        try:
            cycles, back = parked_run(lambda: events(stack), cgroup, tmp_path, lambda: worker_up(stack))
            held = [e["message"] for e in events(stack) if e["kind"] == "worker" and "stays freed" in e["message"]]
            print(f"\ncontract worker: {cycles} free(s) while parked, back {back:.1f} s after; {held[:1]}")
            story = [f'{e["at"]:.2f} {e["message"]}' for e in events(stack)[::-1] if e["kind"] in STORY]
            assert cycles <= 1, f"{cycles} free/wake cycles while the process stayed: a restart storm\n" + "\n".join(story)
            assert back <= 10.0
            assert cycles == 0 or any("RAM available" in m for m in held), "no event said why the worker stayed freed"
        finally:
            stack.stop()


def test_a_parked_process_costs_the_cgroup_worker_at_most_one_free_wake_cycle(tmp_path, swap):
    from tests.guard.test_cgroup_worker import WorkerBox, need_cgroups
    from tests.guard.test_cgroup_worker_stack import CgroupStack

    need_cgroups()
    with domain_cgroup(LIMIT_MIB * MiB) as cgroup, WorkerBox(tmp_path, parent=cgroup.name) as box:
        allow_swap(cgroup.path, cgroup.version, cgroup.limit, 0)
        box.start(WORKER_MIB)
        stack = CgroupStack(tmp_path, cgroup, box, {**FLAP_RAM, "recovery_hold_seconds": 2.0, "worker_stop": box.stop_argv(),
                                                     "worker_start": box.start_argv(WORKER_MIB), "worker_stop_timeout_seconds": 3})
        try:
            time.sleep(1.0)
            seen = lambda: stack.guard.get("/v1/events", params={"limit": 500}).json()["events"]  # noqa: E731
            cycles, back = parked_run(seen, cgroup, tmp_path, lambda: stack.worker()["observed"] in ("running", "throttled"))
            print(f"\ncgroup worker: {cycles} free(s) while parked, back {back:.1f} s after")
            story = [f'{e["at"]:.2f} {e["message"]}' for e in seen()[::-1] if e["kind"] in STORY]
            assert cycles <= 1, f"{cycles} stop/start cycles while the process stayed: a restart storm\n" + "\n".join(story)
            assert back <= 15.0
        finally:
            stack.stop()
