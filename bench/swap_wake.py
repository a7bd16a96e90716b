"""How long the worker's wake takes with and without swap: the contract worker (900 MiB, re-touched on wake) in a 2 GiB
memory cgroup, freed, then woken (PUT running) either alone or beside an idle process holding 1300 MiB, so that the
wake must push 200+ MiB of that process to a test-made swap file (1.5 GiB allowed).

Run (root): .venv/bin/python bench/swap_wake.py [--reps 3]; prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from protect_peers import start_worker, worker_up  # noqa: E402
from tests.guard.realstack import MiB, Allocator, MemoryCgroup  # noqa: E402
from tests.guard.swapfile import GiB, allow_swap, swap_file  # noqa: E402
from tests.helpers import free_port, stop_process, wait_for  # noqa: E402


def vmstat(key: str) -> int:
    return next(int(line.split()[1]) for line in Path("/proc/vmstat").read_text().splitlines() if line.startswith(key + " "))


def wake_once(beside_mib: int) -> tuple[float, float]:
    """(seconds from PUT running to running, MiB swapped out meanwhile)."""
    cgroup = MemoryCgroup(2 * GiB)
    allow_swap(cgroup.path, cgroup.version, cgroup.limit, 1536 * MiB)
    port, other = free_port(), None
    worker = start_worker(cgroup, 900, port)
    try:
        wait_for(lambda: worker_up(port), 20, what="the worker")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer bench"}, timeout=60)
        client.put("/control/state", json={"state": "freed", "level": 2})
        wait_for(lambda: client.get("/control/state").json()["state"] == "freed", 10, what="freed")
        if beside_mib:
            other = Allocator(cgroup)
            other.hold(beside_mib)
            time.sleep(1.0)  # idle: its pages go cold
        out, started = vmstat("pswpout"), time.perf_counter()
        client.put("/control/state", json={"state": "running"})
        wait_for(lambda: client.get("/control/state").json()["state"] == "running", 60, 0.01, what="running")
        return time.perf_counter() - started, (vmstat("pswpout") - out) * 4096 / MiB
    finally:
        stop_process(worker)
        if other is not None:
            other.stop()
        cgroup.remove()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp, swap_file(Path(tmp), 3 * GiB):
        rows = {label: [wake_once(mib) for _ in range(args.reps)] for label, mib in (("alone (no swapping)", 0),
                                                                                      ("beside 1300 MiB idle", 1300))}
    print("| wake of the 900 MiB worker | runs | seconds, median (max) | swapped out meanwhile, MiB |")
    print("|---|---|---|---|")
    for label, runs in rows.items():
        secs = [s for s, _ in runs]
        print(f"| {label} | {len(runs)} | {statistics.median(secs):.2f} ({max(secs):.2f}) | "
              f"{statistics.median(m for _, m in runs):.0f} |")


if __name__ == "__main__":
    main()
