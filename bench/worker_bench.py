"""Benchmark: the worker's engine loop against vLLM's LLM.generate of the whole list; control-to-idle; free and wake.

Run: .venv/bin/python bench/worker_bench.py [--requests 512] [--max-tokens 64] [--repeats 2] [--concurrency 16 64 256]
Each engine-core mode (in-process, and vLLM's default: engine core in its own process) runs in a child process,
because vLLM reads VLLM_ENABLE_V1_MULTIPROCESSING at import. Prints markdown tables (docs/worker.md keeps the latest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.update(VLLM_TARGET_DEVICE="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

MAX_MODEL_LEN = 512  # the tiny model's limit: the longest request generates ~480 tokens
ENGINE = {"dtype": "float32", "max_model_len": MAX_MODEL_LEN, "kv_cache_memory_bytes": 512 * 2**20,
          "enforce_eager": True, "seed": 0}
MODES = {"in-process": "0", "own process (vLLM default)": "1"}


def prompts(n: int) -> list[str]:
    return [f"the worker runs batch {i} for the guard" for i in range(n)]


def lengths(n: int, mean: int) -> list[int]:
    """Generated tokens per request: mixed, from mean/2 to 3*mean/2 (same list on every path)."""
    return [mean // 2 + (i * 37) % (mean + 1) for i in range(n)]


def direct(model: Path, n: int, max_tokens: int, repeats: int, chunks: list[int]) -> dict[int, tuple[float, int]]:
    """Chunk size (n = the whole list) -> median seconds and generated tokens of LLM.generate over all prompts,
    `chunk` prompts per call (the old fixed-step design), after one unmeasured pass."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model), **ENGINE)
    params = [SamplingParams(temperature=0, max_tokens=t, ignore_eos=True) for t in lengths(n, max_tokens)]
    result = {}
    for chunk in [n, *chunks]:
        runs = []
        for repeat in range(repeats + 1):
            started, tokens, every = time.perf_counter(), 0, prompts(n)
            for i in range(0, n, chunk):
                outputs = llm.generate(every[i:i + chunk], params[i:i + chunk], use_tqdm=False)
                tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
            if repeat:
                runs.append((time.perf_counter() - started, tokens))
        result[chunk] = (statistics.median(r[0] for r in runs), runs[0][1])
    llm.llm_engine.engine_core.shutdown()
    return result


def start_worker(model: Path, workdir: Path, concurrency: int):
    import httpx

    from tests.helpers import free_port, wait_for

    port = free_port()
    config = workdir / f"worker-{port}.toml"
    config.write_text(
        f'state_dir = "{workdir}/state-{port}"\nlog_level = "warning"\n[worker]\nlisten = "127.0.0.1:{port}"\n'
        f'token = "bench-token-0123456789"\nengine = "vllm"\nmodel = "{model}"\ndtype = "float32"\nmax_model_len = {MAX_MODEL_LEN}\n'
        f'kv_cache_memory = "512MiB"\nconcurrency = {concurrency}\ncontrol_wait_seconds = 30\n'
        f'engine_args = {{enforce_eager = true}}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    proc = subprocess.Popen([sys.executable, "-m", "headroom", "worker", "--config", str(config)], env=env,
                            stdout=open(workdir / f"worker-{port}.log", "wb"), stderr=subprocess.STDOUT, cwd=REPO)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                        headers={"Authorization": "Bearer bench-token-0123456789"})
    wait_for(lambda: http.get("/readyz").status_code == 200, 180, 0.2, "worker ready")
    return proc, http


def batch_text(n: int, max_tokens: int, mixed: bool = False) -> str:
    tokens = lengths(n, max_tokens) if mixed else [max_tokens] * n
    return "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions", "body": {
        "prompt": p, "max_tokens": t, "temperature": 0, "ignore_eos": True}}) + "\n"
        for i, (p, t) in enumerate(zip(prompts(n), tokens)))


def through_worker(http, n: int, max_tokens: int, repeats: int) -> tuple[float, int, float]:
    """Median seconds from upload to the last result committed, generated tokens, and the median seconds per
    generated token of one request (its start to its finish), through the HTTP API."""
    def run(text: str) -> tuple[float, int, float]:
        started = time.time()
        batch_id = http.post("/v1/batches", params={"priority": "production"}, content=text).json()["id"]
        while (batch := http.get(f"/v1/batches/{batch_id}").json())["status"] != "completed":
            time.sleep(0.25)  # seldom, so polling does not compete with an in-process engine for the GIL
        lines = [json.loads(x) for x in http.get(f"/v1/batches/{batch_id}/output").text.splitlines()]
        tokens = {x["custom_id"]: x["response"]["body"]["usage"]["completion_tokens"] for x in lines}
        rows = http.get(f"/v1/batches/{batch_id}/requests").json()["data"]
        per_token = statistics.median((r["finished_at"] - r["started_at"]) / tokens[r["custom_id"]] for r in rows)
        return batch["completed_at"] - started, sum(tokens.values()), per_token

    text = batch_text(n, max_tokens, mixed=True)
    run(text)  # warm-up, as the direct path gets one unmeasured pass
    runs = [run(text) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), runs[0][1], statistics.median(r[2] for r in runs)


def metric(http, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def fill(http, concurrency: int, max_tokens: int, settle: float) -> str:
    """Submit `concurrency` requests and wait until all are in the engine and have run `settle` seconds."""
    batch_id = http.post("/v1/batches", params={"priority": "production"},
                         content=batch_text(concurrency, max_tokens)).json()["id"]
    deadline = time.monotonic() + 60
    while http.get("/control/state").json()["in_flight"] < concurrency and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(settle)
    return batch_id


def control_to_idle(http, concurrency: int, max_tokens: int, settle: float, samples: int) -> list[tuple[float, float]]:
    """(PUT paused -> answered with nothing in the engine, the worker's own accepted -> idle) per sample, seconds."""
    out = []
    for _ in range(samples):
        batch_id = fill(http, concurrency, max_tokens, settle)
        started = time.perf_counter()
        state = http.put("/control/state", json={"state": "paused", "requested_by": "bench"}).json()
        wall = time.perf_counter() - started
        assert state["state"] == "paused" and state["in_flight"] == 0, state
        out.append((wall, state["last_control_to_idle_seconds"]))
        http.post(f"/v1/batches/{batch_id}/cancel")
        http.put("/control/state", json={"state": "running"})
    return out


def free_and_wake(http, concurrency: int, max_tokens: int, repeats: int) -> dict[str, list[float]]:
    """Mid-batch: PUT freed -> nothing in the engine, PUT freed -> state freed, PUT running -> state running."""
    times: dict[str, list[float]] = {"free_idle": [], "free": [], "wake": []}
    for _ in range(repeats):
        batch_id = fill(http, concurrency, max_tokens, 0.5)
        started = time.perf_counter()
        answer = http.put("/control/state", json={"state": "freed", "level": 2}).json()
        times["free_idle"].append(answer["last_control_to_idle_seconds"])
        while http.get("/control/state").json()["state"] != "freed":
            time.sleep(0.01)
        times["free"].append(time.perf_counter() - started)
        http.post(f"/v1/batches/{batch_id}/cancel")
        started = time.perf_counter()
        http.put("/control/state", json={"state": "running"})
        while http.get("/control/state").json()["state"] != "running":
            time.sleep(0.01)
        times["wake"].append(time.perf_counter() - started)
    return times


def one_mode(args, model: Path, workdir: Path) -> dict:
    """Everything for the engine-core mode this process was started in."""
    runs = direct(model, args.requests, args.max_tokens, args.repeats, args.fixed_steps)
    result: dict = {"direct": list(runs[args.requests]), "fixed": {c: list(runs[c]) for c in args.fixed_steps}, "rows": []}
    for concurrency in args.concurrency:
        proc, http = start_worker(model, workdir, concurrency)
        try:
            w_seconds, w_tokens, per_token = through_worker(http, args.requests, args.max_tokens, args.repeats)
            iteration = metric(http, "headroom_worker_iteration_seconds_total") / metric(http, "headroom_worker_steps_total")
            row = {"concurrency": concurrency, "seconds": w_seconds, "tokens": w_tokens, "iteration": iteration, "idle": {}}
            for target in (1.0, 10.0):  # request length in seconds, as far as the model's 512 positions allow
                max_tokens = max(8, min(480, round(target / per_token)))
                settle = min(2.0, 0.3 * max_tokens * per_token)
                row["idle"][str(target)] = [max_tokens, max_tokens * per_token,
                                            control_to_idle(http, concurrency, max_tokens, settle, args.samples)]
            if concurrency == max(args.concurrency):
                row["free_wake"] = free_and_wake(http, concurrency, 480, args.free_repeats)
            result["rows"].append(row)
        finally:
            proc.terminate()
            proc.wait(60)
    return result


def print_tables(args, results: dict[str, dict], wall: float) -> None:
    n, t = args.requests, args.max_tokens
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; {n} requests of "
          f"{t // 2}-{t * 3 // 2} generated tokens (mean ~{t}, ignore_eos), tiny Llama (2 layers, hidden 128, float32), temperature 0, median of "
          f"{args.repeats}; whole run {wall / 60:.1f} min\n")
    print("| engine core | path | seconds | requests/s | generated tokens/s | worker / LLM.generate (whole list) |")
    print("|---|---|---|---|---|---|")
    for mode, res in results.items():
        d_seconds, d_tokens = res["direct"]
        print(f"| {mode} | LLM.generate, whole list | {d_seconds:.2f} | {n / d_seconds:.0f} | {d_tokens / d_seconds:.0f} | - |")
        for chunk, (c_seconds, c_tokens) in res["fixed"].items():
            rate = c_tokens / c_seconds
            print(f"| {mode} | LLM.generate, {chunk} prompts per call (fixed steps) | {c_seconds:.2f} | {n / c_seconds:.0f} "
                  f"| {rate:.0f} | ({rate / (d_tokens / d_seconds):.2f}) |")
        for row in res["rows"]:
            rate = row["tokens"] / row["seconds"]
            print(f"| {mode} | worker, concurrency {row['concurrency']} | {row['seconds']:.2f} | {n / row['seconds']:.0f} "
                  f"| {rate:.0f} | **{rate / (d_tokens / d_seconds):.2f}** |")
    print("\n| engine core | concurrency | mean step() ms | request (tokens, ~s at this concurrency) | PUT paused -> answered idle, "
          "p50 / max ms | inside the worker (accepted -> engine empty), p50 / max ms |")
    print("|---|---|---|---|---|---|")
    for mode, res in results.items():
        for row in res["rows"]:
            for max_tokens, req_seconds, samples in row["idle"].values():
                wall, inside = [s[0] * 1000 for s in samples], [s[1] * 1000 for s in samples]
                print(f"| {mode} | {row['concurrency']} | {row['iteration'] * 1000:.1f} | {max_tokens}, ~{req_seconds:.1f} s "
                      f"| {statistics.median(wall):.0f} / {max(wall):.0f} | {statistics.median(inside):.1f} / {max(inside):.1f} |")
    print("\n| engine core | mid-batch free (level 2 = shutdown on CPU): PUT -> engine empty, ms | PUT -> freed, s "
          "| wake: PUT -> running (engine rebuilt), s | runs |")
    print("|---|---|---|---|---|")
    for mode, res in results.items():
        fw = next(r["free_wake"] for r in res["rows"] if "free_wake" in r)
        print(f"| {mode} | {statistics.median(fw['free_idle']) * 1000:.0f} | {statistics.median(fw['free']):.2f} "
              f"| {statistics.median(fw['wake']):.2f} | {len(fw['free'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--samples", type=int, default=3, help="control-to-idle samples per concurrency and length")
    parser.add_argument("--free-repeats", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--fixed-steps", type=int, nargs="*", default=[16],
                        help="also time LLM.generate in calls of this many prompts (the step design the loop replaced)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--one-mode", help=argparse.SUPPRESS)  # internal: run one mode, write JSON to this path
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="headroom-bench-"))
    from tests.tinymodel import build_tiny_model

    model = build_tiny_model(workdir / "tiny-llama")
    if args.one_mode:
        try:
            Path(args.one_mode).write_text(json.dumps(one_mode(args, model, workdir)))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    started, results = time.perf_counter(), {}
    for mode in args.modes:
        out = workdir / f"{MODES[mode]}.json"
        argv = [sys.executable, __file__, "--one-mode", str(out), *sys.argv[1:]]
        subprocess.run(argv, check=True, env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": MODES[mode]})
        results[mode] = json.loads(out.read_text())
    shutil.rmtree(workdir, ignore_errors=True)
    print_tables(args, results, time.perf_counter() - started)


if __name__ == "__main__":
    main()
