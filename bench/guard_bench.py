"""Guard benchmark: tick cost (observe + decide), idle CPU and RSS at a 250 ms tick, lease API latency at 1/10/50 clients.

Run: .venv/bin/python bench/guard_bench.py [--idle-seconds 20] [--requests 600]
Starts a real exporter and a real guard on free loopback ports (state in a temporary directory); prints a table.
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
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from guard.core.manager import Manager  # noqa: E402
from guard.sources.metrics_source import ExporterSource  # noqa: E402
from guard.sources.observer import Observer  # noqa: E402
from guard.common.settings import GuardSettings  # noqa: E402
from guard.common.store import Store  # noqa: E402
from tests.helpers import free_port, headroom_cmd, stop_process, wait_for  # noqa: E402

TOKEN = "bench-token-0123456789"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_stack(tmp: Path) -> tuple[dict, list[subprocess.Popen]]:
    ports = {"exporter": free_port(), "guard": free_port()}
    config = tmp / "bench.toml"
    config.write_text(f'state_dir = "{tmp / "state"}"\nlog_level = "warning"\n[exporter]\nlisten = "127.0.0.1:{ports["exporter"]}"\n'
                      f'collectors = ["memory", "pressure", "cgroup"]\n[guard]\nlisten = "127.0.0.1:{ports["guard"]}"\n'
                      f'token = "{TOKEN}"\nexporter_url = "http://127.0.0.1:{ports["exporter"]}/metrics"\nmax_ttl_seconds = 600\n'
                      '[guard.ram]\nenter = {}\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(headroom_cmd(part, "--config", str(config)), cwd=REPO, env=env) for part in ("exporter", "guard")]
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{ports['guard']}/readyz").status_code == 200, 30, what="the guard")
    return ports, procs


def bench_tick(exporter_port: int, tmp: Path, ticks: int) -> dict:
    """observe (HTTP scrape of the real exporter + parse) + decide + queue, no worker: manager.tick() timed in-process."""
    settings = GuardSettings(exporter_url=f"http://127.0.0.1:{exporter_port}/metrics")
    source = ExporterSource(settings.exporter_url, "host", 1.0)
    manager = Manager(settings, Observer(source), Store(tmp / "tickstate", 1000))
    for _ in range(20):
        manager.tick()
    durations = []
    for _ in range(ticks):
        started = time.perf_counter()
        manager.tick()
        durations.append(time.perf_counter() - started)
    manager.store.close()
    return {"p50_ms": pct(durations, 0.5) * 1e3, "p99_ms": pct(durations, 0.99) * 1e3}


def bench_idle(pid: int, seconds: float) -> dict:
    proc = psutil.Process(pid)
    before, started = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after, wall = proc.cpu_times(), time.monotonic() - started
    cpu = (after.user + after.system - before.user - before.system) / wall * 100
    return {"cpu_pct": cpu, "rss_mib": proc.memory_info().rss / 2**20}


def lease_clients(port: int, clients: int, total: int) -> dict:
    """`clients` threads, each with its own keep-alive connection (http.client: the client must cost less than the
    server, and httpx's async pool did not at 50 connections), looping POST (granted) + DELETE; every call timed."""
    latencies: list[float] = []
    per_client = max(1, total // clients)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    barrier = threading.Barrier(clients + 1)

    def one_client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"holder": f"bench-{index}", "ram_bytes": 2**20, "ttl_seconds": 60})
        barrier.wait()
        for _ in range(per_client):
            started = time.perf_counter()
            conn.request("POST", "/v1/leases", body, headers)
            created = conn.getresponse()
            lease = json.loads(created.read())
            latencies.append(time.perf_counter() - started)
            assert created.status == 201, lease
            started = time.perf_counter()
            conn.request("DELETE", f"/v1/leases/{lease['lease']['id']}", headers=headers)
            released = conn.getresponse()
            released.read()
            latencies.append(time.perf_counter() - started)
            assert released.status == 200
        conn.close()

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"p50_ms": pct(latencies, 0.5) * 1e3, "p99_ms": pct(latencies, 0.99) * 1e3, "rps": len(latencies) / wall,
            "n": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--requests", type=int, default=600, help="lease calls per concurrency level (bounded)")
    parser.add_argument("--ticks", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        ports, procs = start_stack(tmp)
        try:
            tick = bench_tick(ports["exporter"], tmp, args.ticks)
            idle = bench_idle(procs[1].pid, args.idle_seconds)
            leases = {c: lease_clients(ports["guard"], c, args.requests) for c in (1, 10, 50)}
        finally:
            for proc in procs:
                stop_process(proc)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Python {platform.python_version()}, Linux {platform.release()}")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| tick (observe + decide) p50 | {tick['p50_ms']:.2f} ms | |")
    print(f"| tick (observe + decide) p99 | {tick['p99_ms']:.2f} ms | <= 10 ms |")
    print(f"| idle CPU at 250 ms tick ({args.idle_seconds:.0f} s) | {idle['cpu_pct']:.2f} % of a core | <= 2 % |")
    print(f"| guard RSS | {idle['rss_mib']:.1f} MiB | |")
    for clients, r in leases.items():
        target = "p99 <= 20 ms" if clients == 50 else ""
        print(f"| lease API, {clients} client(s), {r['n']} calls | p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
              f"{r['rps']:.0f} req/s | {target} |")


if __name__ == "__main__":
    main()
