#!/usr/bin/env python3
"""Freezer latency (root, a cgroup freezer): victim choice over the host's processes, and freeze/thaw by each method.

- pick: Freezer.pick over every pid in /proc (the host domain), every process handed as growing (the worst case: each
  is read, ranked and checked). It only chooses; nothing is frozen.
- freeze / thaw: Freezer.freeze / thaw of a counter process this script starts (in a cgroup it creates for the "own
  cgroup" rows, else in the v1 freezer cgroup the guard makes for it), including the state-store write before the
  freeze and waiting for the kernel to report the cgroup frozen; the thaw of a made cgroup puts the process back and
  removes the cgroup.
Prints a table. Usage: sudo .venv/bin/python bench/freezer_bench.py [--runs 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from guard.protect.procinfo import all_pids  # noqa: E402
from tests.guard.freezing import make_freezer, owned_cgroup, roots, start_counter, stop  # noqa: E402


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.99 * (len(ordered) - 1))] * 1000, ordered[-1] * 1000


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def freeze_thaw(tmp: Path, runs: int, join: Path | None, expect: str) -> tuple[list[float], list[float]]:
    grower, _ = start_counter(tmp, f"bench-{expect}", join=join)
    freezer = make_freezer(tmp / expect)
    freezes, thaws = [], []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            fp = freezer.freeze([grower.pid], "bench", growth={grower.pid: 64 << 20})
            freezes.append(time.perf_counter() - started)
            assert fp is not None and fp.method == expect, (fp, expect)
            started = time.perf_counter()
            freezer.thaw(grower.pid, "bench", "thawed")
            thaws.append(time.perf_counter() - started)
    finally:
        freezer.close()
        stop(grower)
    return freezes, thaws


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="freezer-bench-"))
    pids = all_pids()
    freezer = make_freezer(tmp / "pick")
    everyone = {pid: 64 << 20 for pid in pids}
    rows = [(f"pick over {len(pids)} host processes", timed(lambda: freezer.pick(pids, everyone), args.runs))]
    for version, root in roots():
        with owned_cgroup(version, root) as (_, directory):
            freezes, thaws = freeze_thaw(tmp, args.runs, directory, f"cgroup-v{version}")
        rows += [(f"freeze, own cgroup v{version}", freezes), (f"thaw, own cgroup v{version}", thaws)]
    freezes, thaws = freeze_thaw(tmp, args.runs, None, "cgroup-v1")
    rows += [("freeze, a v1 cgroup the guard makes", freezes), ("thaw, and give the cgroup back", thaws)]
    print(f"\n{'operation':<36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   ({args.runs} runs each)")
    for name, samples in rows:
        p50, p99, top = quantiles(samples)
        print(f"{name:<36} {p50:>8.2f} {p99:>8.2f} {top:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
