"""Admission under a storm: 100 clients ask for leases, 10 % of them for more than the host holds; grants per second and
the latency of the first answer (p50/p99), against a real exporter + guard on loopback.

Run: .venv/bin/python bench/admission_storm.py [--clients 100] [--seconds 20] [--repo PATH]
--repo runs the guard from another checkout (e.g. `git archive <commit> | tar -x -C /tmp/base`) for a before/after.
Each client loops: POST a lease (wait_seconds 5, long-poll 2 s); a waiting one polls until granted or its wait runs
out; a granted one is held 20 ms and released. Bounded by --seconds and --max-requests; prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from tests.helpers import free_port, stop_process, wait_for  # noqa: E402

TOKEN = "bench-token-0123456789"
SMALL = 16 * 2**20


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def start_stack(tmp: Path, repo: Path) -> tuple[int, list[subprocess.Popen]]:
    ports = {"exporter": free_port(), "guard": free_port()}
    config = tmp / "storm.toml"
    config.write_text(f'state_dir = "{tmp / "state"}"\nlog_level = "warning"\n[exporter]\n'
                      f'listen = "127.0.0.1:{ports["exporter"]}"\ncollectors = ["memory", "pressure"]\n[guard]\n'
                      f'listen = "127.0.0.1:{ports["guard"]}"\ntoken = "{TOKEN}"\n'
                      f'exporter_url = "http://127.0.0.1:{ports["exporter"]}/metrics"\n'
                      '[guard.ram]\nenter = {}\n[guard.predict]\nenter = {}\n[guard.psi]\nenter = {}\n'
                      '[guard.swap]\nenter = {}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")} | {"PYTHONPATH": str(repo)}
    procs = [subprocess.Popen([sys.executable, "-m", "headroom", part, "--config", str(config)], cwd=repo, env=env)
             for part in ("exporter", "guard")]
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{ports['guard']}/readyz").status_code == 200, 60, what="the guard")
    return ports["guard"], procs


class Client:
    """One keep-alive connection; every call returns (status, body)."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        self.conn.request(method, path, json.dumps(body) if body is not None else None, self.headers)
        answer = self.conn.getresponse()
        data = answer.read()
        return answer.status, json.loads(data) if data else {}


def storm_client(port: int, index: int, deadline: float, oversized: int, out: dict, lock: threading.Lock,
                 budget: list[int]) -> None:
    client, seen, first_answer = Client(port), Counter(), []
    n = 0
    while time.monotonic() < deadline:
        with lock:
            if budget[0] <= 0:
                break
            budget[0] -= 1
        big = (index * 7 + n) % 10 == 0  # 10 % of all requests are oversized
        n += 1
        body = {"holder": f"c{index}", "ram_bytes": oversized if big else SMALL, "ttl_seconds": 30, "wait_seconds": 5,
                "poll_seconds": 2}
        started = time.perf_counter()
        status, data = client.call("POST", "/v1/leases", body)
        first_answer.append(time.perf_counter() - started)
        lease_id = (data.get("lease") or {}).get("id")
        while status == 202 and time.monotonic() < deadline:
            status, data = client.call("GET", f"/v1/leases/{lease_id}?wait=2")
        state = data.get("status", str(status))
        seen[("big " if big else "small ") + state] += 1
        if lease_id:
            if state == "granted":
                time.sleep(0.02)
            client.call("DELETE", f"/v1/leases/{lease_id}")
    with lock:
        out["latencies"].extend(first_answer)
        out["outcomes"].update(seen)


def run(args) -> dict:
    repo = Path(args.repo).resolve() if args.repo else HERE
    with tempfile.TemporaryDirectory() as tmp:
        port, procs = start_stack(Path(tmp), repo)
        try:
            oversized = 2 * psutil.virtual_memory().total
            out = {"latencies": [], "outcomes": Counter()}
            lock, budget = threading.Lock(), [args.max_requests]
            started = time.monotonic()
            deadline = started + args.seconds
            threads = [threading.Thread(target=storm_client, args=(port, i, deadline, oversized, out, lock, budget))
                       for i in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(args.seconds + 30)
            wall = time.monotonic() - started
            leftover = httpx.get(f"http://127.0.0.1:{port}/v1/leases").json()["leases"]
        finally:
            for proc in procs:
                stop_process(proc)
    granted = out["outcomes"]["small granted"] + out["outcomes"]["big granted"]
    return {"wall_s": wall, "requests": len(out["latencies"]), "granted": granted, "grants_per_s": granted / wall,
            "p50_ms": pct(out["latencies"], 0.5) * 1e3, "p99_ms": pct(out["latencies"], 0.99) * 1e3,
            "outcomes": dict(out["outcomes"]), "leases_left": len(leftover)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--repo", help="run the guard from this checkout (before/after comparisons)")
    parser.add_argument("--label", default="this tree")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    result = run(args)
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB, "
          f"load {load:.1f} before the run; {args.clients} clients, {args.seconds:.0f} s, 10 % oversized")
    print("| guard | requests | granted | grants/s | first answer p50 ms | p99 ms | leases left |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.label} | {result['requests']} | {result['granted']} | {result['grants_per_s']:.1f} | "
          f"{result['p50_ms']:.1f} | {result['p99_ms']:.1f} | {result['leases_left']} |")
    print("outcomes:", json.dumps(result["outcomes"], sort_keys=True))


if __name__ == "__main__":
    main()
