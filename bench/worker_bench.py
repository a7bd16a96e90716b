"""Benchmark: batch throughput through the worker vs vLLM's LLM.generate on the same prompts; time to free and wake.

Run: .venv/bin/python bench/worker_bench.py [--requests 256] [--max-tokens 64] [--repeats 3]
Prints a markdown table (docs/worker.md keeps the latest one with the machine it ran on).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.update(VLLM_TARGET_DEVICE="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
# In-process engine core by default (loads in 2 s instead of 20 s); VLLM_ENABLE_V1_MULTIPROCESSING=1 measures vLLM's default.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

from tests.tinymodel import build_tiny_model  # noqa: E402

ENGINE = {"dtype": "float32", "max_model_len": 128, "kv_cache_memory_bytes": 512 * 2**20, "enforce_eager": True, "seed": 0}


def prompts(n: int) -> list[str]:
    return [f"the worker runs batch {i} for the guard" for i in range(n)]


def direct(model: Path, n: int, max_tokens: int, repeats: int, chunks: list[int]) -> dict[int, list[tuple[float, int]]]:
    """chunk size -> (seconds, generated tokens) per run of LLM.generate over all prompts, `chunk` prompts per call."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model), **ENGINE)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    llm.generate(prompts(8), params, use_tqdm=False)  # warm-up
    runs: dict[int, list[tuple[float, int]]] = {}
    for chunk in chunks:
        runs[chunk] = []
        for repeat in range(repeats + 1):  # the first pass warms this batch shape up and is not counted
            started, tokens, all_prompts = time.perf_counter(), 0, prompts(n)
            for i in range(0, n, chunk):
                outputs = llm.generate(all_prompts[i:i + chunk], params, use_tqdm=False)
                tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
            if repeat:
                runs[chunk].append((time.perf_counter() - started, tokens))
    llm.llm_engine.engine_core.shutdown()
    return runs


def start_worker(model: Path, workdir: Path, concurrency: int):
    import httpx

    from tests.helpers import free_port, wait_for

    port = free_port()
    config = workdir / f"worker-{port}.toml"
    config.write_text(
        f'state_dir = "{workdir}/state-{port}"\nlog_level = "warning"\n[worker]\nlisten = "127.0.0.1:{port}"\n'
        f'token = "bench-token-0123456789"\nengine = "vllm"\nmodel = "{model}"\ndtype = "float32"\nmax_model_len = 128\n'
        f'kv_cache_memory = "512MiB"\nconcurrency = {concurrency}\nengine_args = {{enforce_eager = true}}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    proc = subprocess.Popen([sys.executable, "-m", "headroom", "worker", "--config", str(config)], env=env,
                            stdout=open(workdir / f"worker-{port}.log", "wb"), stderr=subprocess.STDOUT, cwd=REPO)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer bench"}, timeout=120)
    wait_for(lambda: http.get("/readyz").status_code == 200, 120, 0.2, "worker ready")
    return proc, http


def through_worker(http, n: int, max_tokens: int, repeats: int) -> list[tuple[float, int]]:
    """(seconds from upload to the last result, generated tokens) per batch through the worker's HTTP API."""
    def batch(count: int) -> str:
        return "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions", "body": {
            "prompt": p, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}}) + "\n"
            for i, p in enumerate(prompts(count)))

    def run(text: str) -> tuple[float, int]:
        started = time.time()
        batch_id = http.post("/v1/batches", params={"priority": "production"}, content=text).json()["id"]
        while (batch := http.get(f"/v1/batches/{batch_id}").json())["status"] != "completed":
            time.sleep(0.25)  # seldom, so polling does not compete with the engine for the GIL
        seconds = batch["completed_at"] - started  # upload start to the last result committed (server clock)
        lines = [json.loads(x) for x in http.get(f"/v1/batches/{batch_id}/output").text.splitlines()]
        return seconds, sum(x["response"]["body"]["usage"]["completion_tokens"] for x in lines)

    text = batch(n)
    run(text)  # warm-up with the same batch, as the direct path gets one unmeasured pass per step size
    return [run(text) for _ in range(repeats)]


def free_and_wake(http, repeats: int) -> tuple[list[float], list[float]]:
    """Wall seconds from PUT to the state being reached, for freed(level 2) and running."""
    frees, wakes = [], []
    for _ in range(repeats):
        for target, body, out in (("freed", {"state": "freed", "level": 2}, frees), ("running", {"state": "running"}, wakes)):
            started = time.perf_counter()
            http.put("/control/state", json=body)
            while http.get("/control/state").json()["state"] != target:
                time.sleep(0.01)
            out.append(time.perf_counter() - started)
    return frees, wakes


def median_rate(runs: list[tuple[float, int]], n: int) -> tuple[float, float, float]:
    seconds = statistics.median(r[0] for r in runs)
    tokens = statistics.median(r[1] for r in runs)
    return seconds, n / seconds, tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[256, 16], help="worker concurrency settings to measure")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="headroom-bench-"))
    model = build_tiny_model(workdir / "tiny-llama")
    n, max_tokens = args.requests, args.max_tokens
    chunks = sorted({min(c, n) for c in args.concurrency}, reverse=True)
    direct_runs = {c: median_rate(r, n) for c, r in direct(model, n, max_tokens, args.repeats, chunks).items()}
    rows = []
    free_times: tuple[list[float], list[float]] = ([], [])
    for concurrency in chunks:
        rows.append((f"LLM.generate direct, {concurrency} prompts per call", *direct_runs[concurrency], None))
        proc, http = start_worker(model, workdir, concurrency)
        try:
            seconds, rps, tps = median_rate(through_worker(http, n, max_tokens, args.repeats), n)
            rows.append((f"worker, concurrency {concurrency}", seconds, rps, tps, tps / direct_runs[concurrency][2]))
            if not free_times[0]:
                free_times = free_and_wake(http, args.repeats)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, "
          f"{n} requests x {max_tokens} generated tokens (ignore_eos), tiny Llama (2 layers, hidden 128), "
          f"float32, median of {args.repeats}\n")
    print("| path | seconds | requests/s | generated tokens/s | worker / direct at the same step size |")
    print("|---|---|---|---|---|")
    for name, seconds, rps, tps, ratio in rows:
        print(f"| {name} | {seconds:.3f} | {rps:.1f} | {tps:.0f} | {'-' if ratio is None else f'{ratio:.2f}'} |")
    print("\n| transition | median seconds (PUT to state reached) | runs |\n|---|---|---|")
    print(f"| free (level 2 = engine shutdown on CPU) | {statistics.median(free_times[0]):.2f} | {len(free_times[0])} |")
    print(f"| wake (engine rebuilt) | {statistics.median(free_times[1]):.2f} | {len(free_times[1])} |")


if __name__ == "__main__":
    main()
