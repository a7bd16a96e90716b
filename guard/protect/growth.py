"""Who grows: each process's charged memory (RssAnon + RssShmem, plus tmpfs it writes), sampled over ~2 s."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from exporter.cgroupfs import parse_flat_keyed
from guard.protect.procinfo import read_stat, read_status, read_written

MiB = 2**20
MIN_GROWTH_BYTES = 16 * MiB  # growth that matters within the window: idle programs move by kilobytes
WINDOW_SECONDS = 2.0  # growth is measured against the oldest sample this recent ("the last second or so")
CALM_EVERY_SECONDS = 1.0  # a sample this often while the domain is calm (a host: ~150 processes, a few ms each time)...
NEAR_EVERY_SECONDS = 0.1  # ...and this often once it is below the pause threshold
FRESH_MAX_PIDS = 64  # a domain this small gets a fresh look at the freeze (a few ms); a host uses the latest sample


@dataclass(frozen=True)
class Usage:
    """One process at one look."""

    start_ticks: int  # with the pid, its identity: a reused pid is a new process
    charged_bytes: int  # RssAnon + RssShmem
    written_bytes: int | None  # /proc/PID/io wchar where readable (tmpfs writes by `cp` grow no RSS)


@dataclass(frozen=True)
class Sample:
    taken_at: float
    usage: dict[int, Usage]
    shmem_bytes: int | None  # the domain's shmem/tmpfs pages


def read_usage(pid: int, procfs: Path, with_writes: bool) -> Usage | None:
    stat, status = read_stat(pid, procfs), read_status(pid, procfs)
    if stat is None or status is None or stat.state in ("Z", "X"):
        return None
    return Usage(stat.start_ticks, status.charged_bytes, read_written(pid, procfs) if with_writes else None)


def grown(base: Sample, cur: Sample) -> dict[int, int]:
    """Bytes each process caused to be charged between two samples (pure). A process born since counts whole. Writes
    count only up to the domain's shmem growth that no mapping explains, so a log writer filling page cache (which
    the kernel reclaims) does not look like a grower."""
    out: dict[int, int] = {}
    for pid, now in cur.usage.items():
        before = base.usage.get(pid)
        same = before is not None and before.start_ticks == now.start_ticks
        out[pid] = now.charged_bytes - (before.charged_bytes if same else 0)
    if base.shmem_bytes is None or cur.shmem_bytes is None:
        return out
    unexplained = cur.shmem_bytes - base.shmem_bytes
    if unexplained <= 0:
        return out
    for pid, now in cur.usage.items():
        before = base.usage.get(pid)
        if now.written_bytes is None:
            continue
        same = before is not None and before.start_ticks == now.start_ticks and before.written_bytes is not None
        wrote = now.written_bytes - (before.written_bytes if same else 0)
        out[pid] = out.get(pid, 0) + max(0, min(wrote, unexplained))
    return out


class GrowthTracker:
    """Samples of every process of the domain over the window, taken by its own thread (start(): reading 100s of /proc
    files must not delay the fast path's look) or by the caller; growth() compares the newest with the oldest."""

    def __init__(self, procfs: Path = Path("/proc"), shmem: Callable[[], int | None] = lambda: None,
                 window_seconds: float = WINDOW_SECONDS):
        self.procfs, self.shmem, self.window_seconds = procfs, shmem, window_seconds
        self.lock = threading.Lock()  # the samples are appended by the sampler and read by the fast path
        self.samples: deque[Sample] = deque()
        self.near = False  # below the pause threshold (set_near): sample more often
        self.thread: threading.Thread | None = None
        self._stop, self._wake = threading.Event(), threading.Event()

    def set_near(self, near: bool) -> None:
        """The fast path's look: below the pause threshold the sampler looks at once, then every 0.1 s."""
        if near and not self.near:
            self._wake.set()
        self.near = near

    def sample(self, pids: list[int], now: float) -> Sample:
        shmem = self.shmem()
        with_writes = shmem is not None
        usage = {pid: u for pid in pids if (u := read_usage(pid, self.procfs, with_writes)) is not None}
        taken = Sample(now, usage, shmem)
        with self.lock:
            self.samples.append(taken)
            while self.samples and self.samples[0].taken_at < now - self.window_seconds:
                self.samples.popleft()
        return taken

    def due(self, now: float, near: bool) -> bool:
        every = NEAR_EVERY_SECONDS if near else CALM_EVERY_SECONDS
        with self.lock:
            return not self.samples or now - self.samples[-1].taken_at >= every

    def growth(self, pids: list[int] | None, now: float) -> dict[int, int]:
        """Each process's growth from the oldest sample in the window to the newest: a fresh one for a small domain
        (`pids` given, at most FRESH_MAX_PIDS), else the sampler's latest (at most NEAR_EVERY_SECONDS old)."""
        with self.lock:
            base = self.samples[0] if self.samples else None
        cur = self.sample(pids, now) if pids is not None and len(pids) <= FRESH_MAX_PIDS else None
        with self.lock:
            cur = cur or (self.samples[-1] if self.samples else None)
        if base is None or cur is None or base is cur:
            return {}
        return grown(base, cur)

    def start(self, pids: Callable[[], list[int]], clock: Callable[[], float]) -> "GrowthTracker":
        self.thread = threading.Thread(target=self._run, args=(pids, clock), name="headroom-growth", daemon=True)
        self.thread.start()
        return self

    def _run(self, pids: Callable[[], list[int]], clock: Callable[[], float]) -> None:
        while not self._stop.is_set():
            try:
                self.sample(pids(), clock())
            except Exception:  # noqa: BLE001 a bad look must not end sampling; the next one comes soon
                pass
            self._wake.wait(NEAR_EVERY_SECONDS if self.near else CALM_EVERY_SECONDS)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.thread is not None:
            self.thread.join(timeout=2)


def domain_shmem(reader) -> Callable[[], int | None]:
    """A reader of the domain's shmem bytes: the memory cgroup's memory.stat (v1 total_shmem, v2 shmem), or the host's
    Shmem in /proc/meminfo."""
    domain, root, directory = (getattr(reader, name, None) for name in ("domain", "root", "directory"))
    if domain == "host":
        meminfo = getattr(reader, "procfs", Path("/proc")) / "meminfo"

        def read() -> int | None:
            try:
                for line in meminfo.read_text().splitlines():
                    parts = line.split()
                    if parts and parts[0] == "Shmem:":
                        return int(parts[1]) * 1024
            except (OSError, ValueError, IndexError):
                return None
            return None

        return read
    if directory is None or root is None:
        return lambda: None
    stat, key = directory / "memory.stat", "total_shmem" if root[1] == 1 else "shmem"

    def read_cgroup() -> int | None:
        try:
            return parse_flat_keyed(stat.read_text()).get(key)
        except OSError:
            return None

    return read_cgroup


class GpuGrowth:
    """Per GPU, each process's GPU bytes over the window (NVML polls): a process not growing there is never frozen."""

    def __init__(self, window_seconds: float = WINDOW_SECONDS):
        self.window_seconds = window_seconds
        self.seen: dict[int, deque[tuple[float, dict[int, int]]]] = {}

    def growth(self, gpu: int, usage: dict[int, int], now: float) -> dict[int, int]:
        """Record this poll; each process's growth since the oldest poll in the window (a newcomer counts whole)."""
        history = self.seen.setdefault(gpu, deque())
        history.append((now, dict(usage)))
        while len(history) > 1 and history[0][0] < now - self.window_seconds:
            history.popleft()
        if len(history) < 2:
            return {}  # no earlier poll: nothing is known to grow yet
        base = history[0][1]
        return {pid: int(used - base.get(pid, 0)) for pid, used in usage.items()}
