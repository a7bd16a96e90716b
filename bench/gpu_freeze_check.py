#!/usr/bin/env python3
"""GPU freeze check (needs an NVIDIA GPU, its driver and CUDA torch): the guard's GPU freezer against real NVML.

Per rate, a worker holds most of GPU 0 (a torch process, or a real `vllm serve` with sleep mode when --vllm-model is
given) and an unleased grower allocates and touches GPU memory at RATE MB/s up to --target-gib, which fits only once the
worker frees its memory. The guard side (guard/protect/gpufreeze.py over exporter/nvml.py, the real Freezer) must freeze the
grower when free memory falls below --freeze-gib, the script then frees the worker (as the guard's fast path would), and
the freezer thaws the grower once free memory is back. Checks per rate: the grower reaches its target and exits 0 (no
CUDA OOM), the worker was never frozen. With --baseline the same run without the guard shows what happens otherwise.
Prints a table (reaction = first logged allocation past the threshold -> freeze; frozen time; NVML polls) and exits
non-zero on a failed check. Usage: python bench/gpu_freeze_check.py [--rates 1000,3000,10000] [--vllm-model PATH]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
GIB, MIB = 1 << 30, 1 << 20
HOLDER = """
import signal, sys, time, torch
x = torch.empty(int(float(sys.argv[1]) * 2**30), dtype=torch.uint8, device="cuda:0"); x.fill_(1); torch.cuda.synchronize()
delay = float(sys.argv[2])
def free(*_):
    global x
    time.sleep(delay)  # a worker's free takes time (vLLM sleep ~1-1.5 s)
    x = None; torch.cuda.empty_cache(); torch.cuda.synchronize()
    print(f"freed {time.time()}", flush=True)
signal.signal(signal.SIGUSR1, free)
print("held", flush=True)
while True:
    time.sleep(0.05)
"""
GROWER = """
import sys, time, torch
rate, target, log = float(sys.argv[1]) * 1e6, int(float(sys.argv[2]) * 2**30), open(sys.argv[3], "w")
chunk, held, done, t0 = 32 * 2**20, [], 0, time.time()
try:
    while done < target:
        time.sleep(max(0.0, t0 + (done + chunk) / rate - time.time()))
        x = torch.empty(chunk, dtype=torch.uint8, device="cuda:0"); x.fill_(1); torch.cuda.synchronize()
        held.append(x); done += chunk
        log.write(f"{time.time()} {done}\\n"); log.flush()
except torch.cuda.OutOfMemoryError:
    print("CUDA OOM", flush=True); sys.exit(3)
print("reached", flush=True)
"""


def start_worker(args, hold_gib: float, port: int):
    """(process, free(), pids()) for a torch holder or a real vLLM server in sleep mode."""
    if args.vllm_model:
        import httpx
        import psutil

        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", args.vllm_model,
                                 "--enable-sleep-mode", "--port", str(port), "--host", "127.0.0.1",
                                 "--gpu-memory-utilization", str(args.vllm_utilization)], env=env, start_new_session=True)
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(2)
        free = lambda: httpx.post(f"http://127.0.0.1:{port}/sleep", params={"level": 1}, timeout=120)  # noqa: E731
        tree = lambda: {proc.pid} | {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}  # noqa: E731
        return proc, free, tree
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(hold_gib), str(args.free_delay)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "held", "the worker stand-in could not hold its GPU memory"
    return proc, lambda: os.kill(proc.pid, signal.SIGUSR1), lambda: {proc.pid}


def guard_side(args, nvml, worker_pids, free_worker, events: dict, target_gib: float):
    """The real Freezer and GPU watch; at the freeze it frees the worker, as the guard's engine hook does."""
    from guard.protect.freezer import Freezer
    from guard.protect.gpufreeze import GpuFreezeWatch
    from guard.common.settings import GuardSettings
    from guard.common.store import Store

    settings = GuardSettings(freeze_gpu_poll_min_seconds=0.01, freeze_gpu_poll_max_seconds=0.25,
                             freeze_max_seconds=args.max_frozen)
    freezer = Freezer(settings, Store(Path(tempfile.mkdtemp())), worker_pids=worker_pids)

    def on_event(event):
        events.setdefault(event.action, time.time())
        if event.action == "froze":
            events.setdefault("froze_pid", event.process.pid)
            threading.Thread(target=free_worker, daemon=True).start()

    watch = GpuFreezeWatch(nvml, freezer, int(args.freeze_gib * GIB), int((args.freeze_gib + target_gib) * GIB),
                           fastest=0.01, slowest=0.25, on_event=on_event)
    return watch, freezer


def run_one(args, rate: int, guard: bool, nvml) -> dict:
    gpu = nvml.read_memory()[0]
    room = gpu.free_bytes / GIB
    hold = max(0.0, room - args.target_gib / 2) if not args.vllm_model else 0.0
    worker, free_worker, worker_pids = start_worker(args, hold, 18000 + rate % 1000)
    after = nvml.read_memory()[0].free_bytes
    # vLLM takes --vllm-utilization of the GPU: the grower asks for 2 GiB more than is left, so it fits only once vLLM sleeps
    target = max(args.target_gib, after / GIB + 2) if args.vllm_model else args.target_gib
    log = Path(tempfile.mkdtemp()) / "grower.log"
    row = {"rate": rate, "guard": "headroom" if guard else "none", "free_before_gib": after / GIB}
    events: dict = {}
    stop, watch, freezer = threading.Event(), None, None
    if guard:
        watch, freezer = guard_side(args, nvml, worker_pids, free_worker, events, target)
        _, stop = watch.start()
    grower = subprocess.Popen([sys.executable, "-c", GROWER, str(rate), str(target), str(log)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = grower.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(grower.pid, signal.SIGKILL)
        out, _ = grower.communicate()
    stop.set()
    if guard:
        row["worker_frozen"] = events.get("froze_pid") in worker_pids()
        freezer.close()
        row["polls"] = watch.polls
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    time.sleep(2)  # the driver releases a dead process's memory asynchronously; the next run reads free memory first
    lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    cross = next((float(t) for t, done in lines if after - int(done) < args.freeze_gib * GIB), None)
    row.update(exit=grower.returncode, cuda_oom="CUDA OOM" in out, reached="reached" in out,
               reaction_ms=(events["froze"] - cross) * 1000 if cross and "froze" in events else None,
               frozen_s=events["thawed"] - events["froze"] if {"froze", "thawed"} <= set(events) else None)
    return row


def fmt(value, spec="") -> str:
    return "-" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,3000,10000", help="grower MB/s, comma-separated")
    parser.add_argument("--target-gib", type=float, default=8.0, help="what the grower allocates")
    parser.add_argument("--freeze-gib", type=float, default=2.0, help="freeze when GPU 0 has less than this free")
    parser.add_argument("--free-delay", type=float, default=1.2, help="the torch worker's free latency, seconds")
    parser.add_argument("--max-frozen", type=float, default=20.0, help="freeze_max_seconds")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--baseline", action="store_true", help="also run each rate without the guard")
    parser.add_argument("--vllm-model", help="a local model directory: the worker is a real vLLM server in sleep mode")
    parser.add_argument("--vllm-utilization", type=float, default=0.85)
    args = parser.parse_args()
    from exporter.nvml import Nvml

    nvml = Nvml("pynvml")
    if not nvml.read_memory():
        print("no NVIDIA GPU or driver (NVML found none)", file=sys.stderr)
        return 2
    rows = []
    for rate in (int(r) for r in args.rates.split(",")):
        for guard in ((False, True) if args.baseline else (True,)):
            rows.append(run_one(args, rate, guard, nvml))
            print(rows[-1], flush=True)
    print(f"\n{'MB/s':>6} {'guard':>8} {'free GiB':>8} {'exit':>4} {'CUDA OOM':>8} {'reaction ms':>11} {'frozen s':>8} {'polls':>6}")
    for r in rows:
        print(f"{r['rate']:>6} {r['guard']:>8} {r['free_before_gib']:>8.1f} {r['exit']:>4} {str(r['cuda_oom']):>8} "
              f"{fmt(r['reaction_ms'], '.1f'):>11} {fmt(r['frozen_s'], '.2f'):>8} {fmt(r.get('polls')):>6}")
    failed = [r for r in rows if r["guard"] == "headroom" and (r["exit"] != 0 or r.get("worker_frozen"))]
    for r in failed:
        print(f"FAIL: {r['rate']} MB/s with the guard: exit {r['exit']}, worker frozen {r.get('worker_frozen')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
