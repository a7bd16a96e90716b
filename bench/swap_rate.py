"""How fast this machine's swap takes pages (sizes guard.swap_reserve): a test-made swap file, a 256 MiB memory cgroup
allowed 2 GiB of swap, a grower that maps 1.5 GiB at full speed; its rate past the RAM limit is the swap-out rate.

Run as root: .venv/bin/python bench/swap_rate.py [--runs 3]. Prints a table; swap is on only while it runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.guard.protectrun import GROWER, oom_kills  # noqa: E402
from tests.guard.realstack import MiB, MemoryCgroup  # noqa: E402
from tests.guard.swapfile import GiB, allow_swap, swap_file  # noqa: E402


def vmstat(key: str) -> int:
    for line in Path("/proc/vmstat").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def one_run(limit_mib: int, grow_mib: int) -> dict:
    cgroup = MemoryCgroup(limit_mib * MiB)
    try:
        allow_swap(cgroup.path, cgroup.version, limit_mib * MiB, 2 * GiB)
        out_before, started = vmstat("pswpout"), time.time()
        proc = subprocess.run([sys.executable, str(GROWER), "--target-mib", str(grow_mib), "--rate-mbs", "100000",
                               "--hold-seconds", "0"], capture_output=True, text=True, preexec_fn=cgroup.join, timeout=300)
        seconds = time.time() - started
        swapped = (vmstat("pswpout") - out_before) * 4096
        done = [json.loads(line) for line in proc.stdout.splitlines() if '"done"' in line]
        return {"rc": proc.returncode, "seconds": seconds, "swapped_mib": swapped / MiB, "kills": oom_kills(cgroup),
                "grower_mbs": done[-1]["rate_mbs"] if done else None}
    finally:
        cgroup.remove()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit-mib", type=int, default=256)
    parser.add_argument("--grow-mib", type=int, default=1536)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp, swap_file(Path(tmp), 3 * GiB):
        rows = [one_run(args.limit_mib, args.grow_mib) for _ in range(args.runs)]
    print("| run | grower MiB | RAM limit MiB | swapped out MiB | seconds | swap-out MiB/s | grower MB/s | OOM kills |")
    print("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {args.grow_mib} | {args.limit_mib} | {r['swapped_mib']:.0f} | {r['seconds']:.2f} | "
              f"{r['swapped_mib'] / r['seconds']:.0f} | {r['grower_mbs'] or 0:.0f} | {r['kills']} |")


if __name__ == "__main__":
    main()
