"""The peers in the protection benchmark: no guard at all, and Debian's earlyoom watching the same memory cgroup.

earlyoom reads /proc/meminfo and kills the process with the highest oom_score among all it can see. To give it the
domain's view (as LXCFS does for containers) and to keep it away from every process the benchmark did not start,
it runs in its own PID and mount namespace with the worker and the grower, over a /proc/meminfo that a feeder
rewrites from the cgroup's own files every 5 ms. `python bench/protect_peers.py --inside ...` is that namespace's driver.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.guard.protectrun import Crossing, GROWER, oom_kills  # noqa: E402
from tests.guard.realstack import MiB, MemoryCgroup  # noqa: E402
from tests.helpers import free_port, stop_process, wait_for  # noqa: E402

WORKER = REPO / "tests" / "guard" / "contract_worker.py"
EARLYOOM = "/usr/bin/earlyoom"
LINE = "{:<16}{:>12} kB\n"


def fake_meminfo(limit: int, available: int, swap_total: int = 0, swap_free: int = 0) -> bytes:
    """A fixed-length /proc/meminfo for the domain, rewritten in place: the bind mount keeps the inode."""
    kib = lambda n: max(0, n) // 1024  # noqa: E731
    text = "".join(LINE.format(key + ":", kib(value)) for key, value in (
        ("MemTotal", limit), ("MemFree", available), ("MemAvailable", available), ("Buffers", 0), ("Cached", 0),
        ("SwapTotal", swap_total), ("SwapFree", swap_free), ("AnonPages", limit - available)))
    return text.encode()


def domain_swap(cgroup: MemoryCgroup) -> tuple[int, int]:
    """(swap allowed, swap free) of a v1 cgroup from its memsw files; (0, 0) when it may not swap."""
    try:
        both = int((cgroup.path / "memory.memsw.limit_in_bytes").read_text())
        used = int((cgroup.path / "memory.memsw.usage_in_bytes").read_text()) - cgroup.usage()
    except (OSError, ValueError):
        return 0, 0
    allowed = max(0, min(both, 2**50) - cgroup.limit)
    return allowed, max(0, allowed - used)


class Feeder:
    """Rewrites the fake meminfo from the cgroup every 5 ms (LXCFS computes the same on each read)."""

    def __init__(self, cgroup: MemoryCgroup, path: Path):
        self.cgroup, self.path, self._stop = cgroup, path, threading.Event()
        self.path.write_bytes(fake_meminfo(cgroup.limit, cgroup.limit))
        self.fd = os.open(path, os.O_WRONLY)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                os.pwrite(self.fd, fake_meminfo(self.cgroup.limit, self.cgroup.limit - self.cgroup.usage(),
                                                *domain_swap(self.cgroup)), 0)
            except OSError:
                pass
            time.sleep(0.005)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        os.close(self.fd)


def start_worker(cgroup: MemoryCgroup, hold_mib: int, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), "--port", str(port), "--token", "bench", "--hold-bytes",
                             str(hold_mib * MiB), "--free-latency", "1.2"], preexec_fn=cgroup.join,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def worker_up(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/control/state", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_grower(cgroup: MemoryCgroup, target_mib: int, rate: float) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, str(GROWER), "--target-mib", str(target_mib), "--rate-mbs", str(rate)],
                          preexec_fn=cgroup.join, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout.splitlines()


def one_run(cgroup: MemoryCgroup, worker_mib: int, grower_mib: int, rate: float, earlyoom_percent: float | None,
            swap_percent: float = 100) -> dict:
    """Worker + (earlyoom) + grower in `cgroup`; the kernel's counters and who is left standing."""
    port = free_port()
    before = oom_kills(cgroup)
    worker = start_worker(cgroup, worker_mib, port)
    early, kills = None, []
    try:
        wait_for(lambda: worker_up(port), 20, what="the contract worker")
        wait_for(lambda: cgroup.usage() >= worker_mib * MiB, 30, what="the worker holding its memory")
        crossing = Crossing(cgroup, int(cgroup.limit * (1 - (earlyoom_percent or 10) / 100)))
        if earlyoom_percent is not None:
            early = subprocess.Popen([EARLYOOM, "-m", f"{earlyoom_percent:g}", "-s", f"{swap_percent:g}", "-r", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            threading.Thread(target=_watch_kills, args=(early, kills), daemon=True).start()
            time.sleep(0.5)
        rc, _ = run_grower(cgroup, grower_mib, rate)
        crossing.close()
        worker_alive = worker.poll() is None
    finally:
        stop_process(worker)
        if early is not None:
            stop_process(early)
    reactions = []
    for t in kills[:1]:
        crossed = [x for x in crossing.times if x <= t]
        if crossed:
            reactions.append(t - crossed[-1])
    died = [name for name, dead in (("grower", rc < 0), ("worker", not worker_alive)) if dead]
    return {"oom_kills": oom_kills(cgroup) - before, "died": died, "grower_rc": rc, "reaction": reactions,
            "frozen": 0.0, "downtime": None, "killed_by_peer": len(kills)}


def _watch_kills(proc: subprocess.Popen, kills: list[float]) -> None:
    for line in proc.stdout:
        if re.search(r"sending SIG(TERM|KILL) to process", line):
            kills.append(time.time())


def inside(args) -> None:
    """The namespace's driver: mount the fake meminfo over /proc/meminfo, then run one earlyoom run."""
    subprocess.run(["mount", "--bind", args.meminfo, "/proc/meminfo"], check=True)
    cgroup = MemoryCgroup.__new__(MemoryCgroup)
    cgroup.path, cgroup.version, cgroup.limit, cgroup.name = Path(args.cgroup), args.version, args.limit, args.name
    result = one_run(cgroup, args.worker_mib, args.grower_mib, args.rate, args.percent, args.swap_percent)
    print(json.dumps(result), flush=True)


def earlyoom_run(cgroup: MemoryCgroup, worker_mib: int, grower_mib: int, rate: float, percent: float, tmp: Path,
                 swap_percent: float = 100) -> dict:
    """One run with earlyoom, in a fresh PID + mount namespace over the fed meminfo."""
    feeder = Feeder(cgroup, tmp / "meminfo")
    try:
        out = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--mount-proc", sys.executable, __file__, "--inside",
                              "--meminfo", str(tmp / "meminfo"), "--cgroup", str(cgroup.path), "--version", str(cgroup.version),
                              "--limit", str(cgroup.limit), "--name", cgroup.name, "--worker-mib", str(worker_mib),
                              "--grower-mib", str(grower_mib), "--rate", str(rate), "--percent", str(percent),
                              "--swap-percent", str(swap_percent)],
                             capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        feeder.close()
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"earlyoom run failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--inside", action="store_true")
    for name in ("--meminfo", "--cgroup", "--name"):
        parser.add_argument(name)
    for name in ("--version", "--limit", "--worker-mib", "--grower-mib"):
        parser.add_argument(name, type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--percent", type=float)
    parser.add_argument("--swap-percent", type=float, default=100)
    inside(parser.parse_args())
