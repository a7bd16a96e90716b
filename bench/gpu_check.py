#!/usr/bin/env python3
"""GPU check (needs an NVIDIA GPU, its driver, and CUDA torch): the exporter against real NVML.

A torch child process allocates HOLD_GIB of GPU memory; a real `headroom exporter` must then show
  - headroom_gpus >= 1 and headroom_gpu_info for GPU 0 with the driver version,
  - headroom_gpu_memory_used_bytes{gpu="0"} grown by at least HOLD_GIB,
  - headroom_gpu_process_memory_bytes for the child's pid with at least HOLD_GIB and its command,
  - total == used + free (+ reserved where NVML v2 reports it) within 1 %.
Prints a table and exits non-zero on any failed check. Usage: python bench/gpu_check.py [--hold-gib 2]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
HOLDER = """
import sys, torch
n = int(float(sys.argv[1]) * 2**30)
x = torch.empty(n, dtype=torch.uint8, device="cuda:0"); x.fill_(1); torch.cuda.synchronize()
print("held", flush=True); sys.stdin.readline()
"""


def scrape(url: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def pick(samples, name, **labels):
    return [v for (n, lab), v in samples.items() if n == name and all(dict(lab).get(k) == str(v2) for k, v2 in labels.items())]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hold-gib", type=float, default=2.0)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exporter = subprocess.Popen([sys.executable, "-m", "headroom", "exporter", "--listen", f"127.0.0.1:{port}"], cwd=REPO)
    url = f"http://127.0.0.1:{port}/metrics"
    holder = None
    try:
        for _ in range(100):
            try:
                before = scrape(url)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(args.hold_gib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        time.sleep(1.0)
        start = time.perf_counter()
        after = scrape(url)
        scrape_ms = (time.perf_counter() - start) * 1000
    finally:
        if holder and holder.poll() is None:
            holder.stdin.write("\n")
            holder.stdin.flush()
            holder.wait(timeout=30)
        exporter.terminate()
        exporter.wait(timeout=10)
    hold = args.hold_gib * 2**30
    used_delta = pick(after, "headroom_gpu_memory_used_bytes", gpu=0)[0] - pick(before, "headroom_gpu_memory_used_bytes", gpu=0)[0]
    proc = pick(after, "headroom_gpu_process_memory_bytes", pid=holder.pid)
    total = pick(after, "headroom_gpu_memory_total_bytes", gpu=0)[0]
    parts = pick(after, "headroom_gpu_memory_used_bytes", gpu=0)[0] + pick(after, "headroom_gpu_memory_free_bytes", gpu=0)[0] + sum(pick(after, "headroom_gpu_memory_reserved_bytes", gpu=0))
    checks = [
        ("GPUs reported", pick(after, "headroom_gpus")[0], pick(after, "headroom_gpus")[0] >= 1),
        ("GPU 0 used grew by (GiB)", used_delta / 2**30, used_delta >= hold * 0.99),
        ("child's process series (GiB)", (proc[0] / 2**30) if proc else None, bool(proc) and proc[0] >= hold * 0.99),
        ("used+free(+reserved) / total", parts / total, abs(parts / total - 1) < 0.01),
        ("scrape with GPU (ms)", round(scrape_ms, 1), True),
    ]
    print("| check | value | ok |\n|---|---|---|")
    for name, value, ok in checks:
        print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
