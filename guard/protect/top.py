"""Top memory users for the status page: processes by RSS (read from an injectable /proc) and GPU processes (the
snapshot's series)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from exporter.units import comm_of_pid, memory_cgroup_of_pid, unit_of_cgroup
from guard.protect.procinfo import all_pids
from guard.common.types import Snapshot

CACHE_SECONDS = 1.0  # several pages refreshing every 2 s share one process scan


def where(procfs: Path, pid: int) -> dict:
    """The memory cgroup and systemd unit of `pid` ('' when unknown)."""
    cgroup = memory_cgroup_of_pid(procfs, pid)
    return {"cgroup": cgroup, "unit": unit_of_cgroup(cgroup)}


def rank_processes(rows: list[tuple[int, str, float]], limit: int) -> list[tuple[int, str, float]]:
    """The `limit` largest (pid, name, rss) rows, largest first (pure)."""
    return sorted(rows, key=lambda r: (-r[2], r[0]))[:limit]


def parse_statm_rss(text: str, page_size: int) -> float:
    """/proc/PID/statm -> resident bytes (its second field counts pages)."""
    return float(int(text.split()[1]) * page_size)


def scan_processes(procfs: Path = Path("/proc")) -> list[tuple[int, str, float]]:
    """(pid, comm, RSS bytes) of every process under `procfs`; processes gone while reading are left out."""
    page_size = os.sysconf("SC_PAGE_SIZE")
    rows = []
    for pid in all_pids(procfs):
        try:
            rss = parse_statm_rss((procfs / str(pid) / "statm").read_text(), page_size)
        except (OSError, ValueError, IndexError):
            continue
        rows.append((pid, comm_of_pid(procfs, pid) or "?", rss))
    return rows


def top_processes(limit: int, procfs: Path = Path("/proc")) -> list[dict]:
    return [{"pid": pid, "comm": name, "rss_bytes": rss, **where(procfs, pid)}
            for pid, name, rss in rank_processes(scan_processes(procfs), limit)]


def gpu_processes(snapshot: Snapshot, limit: int, procfs: Path = Path("/proc")) -> list[dict]:
    """Per-process GPU memory from the source's series, largest first."""
    rows = [(gpu.gpu, pid, used) for gpu in snapshot.gpus for pid, used in gpu.processes.items()]
    rows.sort(key=lambda r: (-r[2], r[1]))
    return [{"gpu": g, "pid": pid, "comm": comm_of_pid(procfs, pid) or "?", "gpu_bytes": used, **where(procfs, pid)}
            for g, pid, used in rows[:limit]]


class Top:
    """`GET /v1/top`, cached for CACHE_SECONDS so many viewers cost one scan."""

    def __init__(self, procfs: Path = Path("/proc")):
        self.procfs = procfs
        self.lock = threading.Lock()
        self.cached: tuple[float, int, dict] | None = None

    def view(self, snapshot: Snapshot, limit: int = 10) -> dict:
        with self.lock:
            now = time.monotonic()
            if self.cached and now - self.cached[0] < CACHE_SECONDS and self.cached[1] == limit:
                return self.cached[2]
            body = {
                "processes": top_processes(limit, self.procfs),
                "gpu_processes": gpu_processes(snapshot, limit, self.procfs),
            }
            self.cached = (now, limit, body)
            return body
