#!/usr/bin/env python3
"""Scrape `headroom exporter` and Debian's prometheus-node-exporter alternately; print latency, CPU and RSS.

Usage: .venv/bin/python bench/exporter_scrape.py [--scrapes 300]
Both run on loopback with the same procfs; node_exporter with only its meminfo, vmstat and pressure
collectors (the signals headroom's memory/pressure/oom collectors cover). Each scrape is a keep-alive GET
with gzip, as Prometheus sends it. CPU per scrape = (utime+stime delta of the server) / scrapes.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def start_targets(tmp: Path) -> dict[str, tuple[subprocess.Popen, str]]:
    targets = {}
    port = free_port()
    conf = tmp / "exporter.toml"
    conf.write_text(f'log_level = "warning"\n[exporter]\nlisten = "127.0.0.1:{port}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "headroom", "exporter", "--config", str(conf)], cwd=REPO)
    targets["headroom exporter (all collectors)"] = (proc, f"http://127.0.0.1:{port}/metrics")
    node = shutil.which("prometheus-node-exporter")
    if node is None:
        raise SystemExit("prometheus-node-exporter is missing: apt-get install prometheus-node-exporter")
    for label, extra in (("node_exporter meminfo+vmstat+pressure", []), ("  same, --web.disable-exporter-metrics", ["--web.disable-exporter-metrics"])):
        port = free_port()
        argv = [node, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults", "--collector.meminfo", "--collector.vmstat", "--collector.pressure", *extra]
        targets[label] = (subprocess.Popen(argv, stderr=subprocess.DEVNULL), f"http://127.0.0.1:{port}/metrics")
    for _proc, url in targets.values():
        wait_up(url)
    return targets


def measure(targets, scrapes: int) -> dict[str, dict]:
    clients = {name: httpx.Client(headers={"Accept-Encoding": "gzip"}) for name in targets}
    latencies = {name: [] for name in targets}
    for name, (_proc, url) in targets.items():  # warm up
        for _ in range(20):
            clients[name].get(url)
    cpu_before = {name: cpu_seconds(proc.pid) for name, (proc, _) in targets.items()}
    for _ in range(scrapes):
        for name, (_proc, url) in targets.items():  # alternate, so drift hits every target alike
            start = time.perf_counter()
            response = clients[name].get(url)
            latencies[name].append(time.perf_counter() - start)
            response.raise_for_status()
    results = {}
    for name, (proc, _url) in targets.items():
        values = sorted(latencies[name])
        results[name] = {
            "p50_ms": statistics.median(values) * 1000,
            "p99_ms": values[int(len(values) * 0.99) - 1] * 1000,
            "cpu_ms": (cpu_seconds(proc.pid) - cpu_before[name]) / scrapes * 1000,
            "rss_mb": rss_mb(proc.pid),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        targets = start_targets(Path(tmp))
        try:
            results = measure(targets, args.scrapes)
        finally:
            for proc, _url in targets.values():
                proc.terminate()
                proc.wait(timeout=10)
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, kernel {platform.release()}; {args.scrapes} scrapes each, alternating")
    print(f"| {'target':42} | p50 ms | p99 ms | CPU ms/scrape | RSS MB |")
    print(f"|{'-' * 44}|--------|--------|---------------|--------|")
    for name, r in results.items():
        print(f"| {name:42} | {r['p50_ms']:6.2f} | {r['p99_ms']:6.2f} | {r['cpu_ms']:13.2f} | {r['rss_mb']:6.1f} |")
    ours, peer = results["headroom exporter (all collectors)"], results["node_exporter meminfo+vmstat+pressure"]
    print(f"ratio headroom/node_exporter: p50 {ours['p50_ms'] / peer['p50_ms']:.2f}, p99 {ours['p99_ms'] / peer['p99_ms']:.2f}, "
          f"CPU/scrape {ours['cpu_ms'] / peer['cpu_ms']:.2f}, RSS {ours['rss_mb'] / peer['rss_mb']:.2f}  (targets: p50 and CPU <= 1.0, RSS <= 40 MB)")


if __name__ == "__main__":
    main()
