#!/usr/bin/env python3
"""Half-open connections against `headroom exporter`: threads held, /metrics latency meanwhile, CPU to drain them.

Usage: .venv/bin/python bench/exporter_half_open.py [--connections 1000] [--hold 5] [--code DIR] [--partial]
Each connection connects on loopback and sends nothing (or, with --partial, an unfinished request line: a
slowloris). They are held --hold seconds while /metrics is scraped every 0.5 s, then all closed at once.
Prints the exporter's thread count, scrape latency, and its CPU seconds (utime+stime) per phase:
open (connecting them), hold, drain (closing them until its thread count is back to where it started).
--code runs another checkout's exporter (e.g. /work/main) for a before/after table.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from exporter_scrape import cpu_seconds, free_port  # bench/ is on sys.path when a bench script runs

REPO = Path(__file__).resolve().parent.parent


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def start_exporter(code: Path, port: int, workdir: Path) -> subprocess.Popen:
    golden = REPO / "tests" / "fixtures" / "golden"
    conf = workdir / "exporter.toml"
    conf.write_text(
        f'state_dir = "{workdir}/state"\n[exporter]\nlisten = "127.0.0.1:{port}"\nprocfs = "{golden}/proc"\n'
        f'cgroupfs = "{golden}/cgroup-v2"\nkmsg = "{golden}/kmsg.txt"\ncollectors = ["memory", "pressure", "oom", "cgroup"]\n'
    )
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.Popen([sys.executable, "-m", "headroom", "exporter", "--config", str(conf)], cwd=code, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the exporter did not start")


def scrape_ms(base: str) -> float | None:
    start = time.perf_counter()
    try:
        httpx.get(base + "/metrics", timeout=5).raise_for_status()
    except httpx.HTTPError:
        return None
    return (time.perf_counter() - start) * 1000


def open_all(port: int, count: int, partial: bool, timeout: float = 60.0) -> list[socket.socket]:
    """Connect `count` sockets at once (non-blocking, so a full accept queue does not serialise the SYN retries)."""
    pending = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        pending.append(sock)
    done, deadline = [], time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        poller = select.poll()
        by_fd = {sock.fileno(): sock for sock in pending}
        for fd in by_fd:
            poller.register(fd, select.POLLOUT)
        for fd, _ in poller.poll(500):
            sock = by_fd[fd]
            pending.remove(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                sock.setblocking(True)
                if partial:
                    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x")
                done.append(sock)
            else:
                sock.close()
    for sock in pending:
        sock.close()
    return done


def run(code: Path, connections: int, hold: float, partial: bool) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_exporter(code, port, Path(tmp))
        try:
            idle_threads = threads(proc.pid)
            cpu0 = cpu_seconds(proc.pid)
            opened = time.monotonic()
            socks = open_all(port, connections, partial)
            seen, steady_since = threads(proc.pid), time.monotonic()
            while time.monotonic() - steady_since < 3 and time.monotonic() - opened < 90:
                time.sleep(0.2)  # the server takes them from its accept queue at its own pace: wait until it stops
                if threads(proc.pid) != seen:
                    seen, steady_since = threads(proc.pid), time.monotonic()
            open_s = time.monotonic() - opened
            print(f"  opened {len(socks)}/{connections}, {threads(proc.pid)} threads after {open_s:.1f}s", file=sys.stderr, flush=True)
            cpu1, peak = cpu_seconds(proc.pid), threads(proc.pid)
            latencies, end = [], time.monotonic() + hold
            while time.monotonic() < end:
                latencies.append(scrape_ms(base))
                peak = max(peak, threads(proc.pid))
                time.sleep(0.5)
            cpu2 = cpu_seconds(proc.pid)
            drain_start = time.monotonic()
            for sock in socks:
                sock.close()
            while threads(proc.pid) > idle_threads + 1 and time.monotonic() - drain_start < 120:
                time.sleep(0.05)
            drain_s = time.monotonic() - drain_start
            print(f"  drained in {drain_s:.1f}s", file=sys.stderr, flush=True)
            cpu3 = cpu_seconds(proc.pid)
            ok = [x for x in latencies if x is not None]
            return {
                "peak_threads": peak, "open_cpu": cpu1 - cpu0, "hold_cpu": cpu2 - cpu1, "drain_cpu": cpu3 - cpu2,
                "drain_s": drain_s, "open_s": open_s, "scrapes_ok": f"{len(ok)}/{len(latencies)}",
                "scrape_ms_max": max(ok) if ok else float("nan"),
            }
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--partial", action="store_true")
    parser.add_argument("--code", type=Path, action="append", help="checkout(s) to compare (default: this one)")
    args = parser.parse_args()
    if not 1 <= args.connections <= 5000:
        raise SystemExit("--connections: 1..5000 (loopback, bounded)")
    codes = args.code or [REPO]
    print(f"{args.connections} {'partial-request' if args.partial else 'silent'} connections held {args.hold:.0f}s, loopback, {os.cpu_count()} CPUs")
    print(f"{'code':<22} {'peak thr':>8} {'open s':>7} {'open cpu s':>10} {'hold cpu s':>10} {'drain cpu s':>11} {'drain s':>8} {'scrapes ok':>10} {'max ms':>8}")
    for code in codes:
        r = run(code.resolve(), args.connections, args.hold, args.partial)
        print(f"{str(code)[-22:]:<22} {r['peak_threads']:>8} {r['open_s']:>7.1f} {r['open_cpu']:>10.2f} {r['hold_cpu']:>10.2f} {r['drain_cpu']:>11.2f} "
              f"{r['drain_s']:>8.2f} {r['scrapes_ok']:>10} {r['scrape_ms_max']:>8.1f}")


if __name__ == "__main__":
    main()
