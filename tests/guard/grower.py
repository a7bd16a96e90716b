"""An unleased process that allocates and touches memory at a set rate up to a target, then exits 0 (test and bench).

Run: python grower.py --target-mib N --rate-mbs R [--hold-seconds S] [--chunk-mib C]
Prints one JSON line when it starts and one when it reached the target (times in unix seconds).
"""

from __future__ import annotations

import argparse
import json
import mmap
import sys
import time

MiB = 2**20


def grow(target_mib: int, rate_mbs: float, chunk_mib: int = 16, hold_seconds: float = 0.3) -> dict:
    blocks, have, started = [], 0, time.time()
    chunk = chunk_mib * MiB
    per_chunk = chunk / (rate_mbs * 1e6)
    print(json.dumps({"event": "start", "t": started, "target_mib": target_mib, "rate_mbs": rate_mbs}), flush=True)
    while have < target_mib * MiB:
        due = started + (have + chunk) / chunk * per_chunk
        # MAP_POPULATE faults every page in inside one call: resident and charged to the cgroup at 1-3 GB/s here
        # (touching a bytearray page by page reaches only ~0.7 GB/s in this VM).
        block = mmap.mmap(-1, min(chunk, target_mib * MiB - have), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
        blocks.append(block)
        have += len(block)
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
    reached = time.time()
    time.sleep(hold_seconds)
    return {"event": "done", "t": reached, "mib": have // MiB, "seconds": reached - started,
            "rate_mbs": have / 1e6 / max(1e-6, reached - started)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--target-mib", type=int, required=True)
    parser.add_argument("--rate-mbs", type=float, required=True)
    parser.add_argument("--chunk-mib", type=int, default=16)
    parser.add_argument("--hold-seconds", type=float, default=0.3)
    args = parser.parse_args()
    print(json.dumps(grow(args.target_mib, args.rate_mbs, args.chunk_mib, args.hold_seconds)), flush=True)
    sys.exit(0)
