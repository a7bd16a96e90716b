"""The memory domain straight from the kernel files (the exporter's parsers), plus the kernel's wake-ups for it."""

from __future__ import annotations

import contextlib
import os
import select
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from exporter.cgroupfs import detect_memory_root, read_cgroup
from exporter.meminfo import read_meminfo, read_ram_backed_free
from guard.protect.cgroupctl import pids_under
from guard.common.swaproom import cgroup_swap_free, host_swap_free, swap_room


@dataclass(frozen=True)
class DomainObs:
    """One fast-path look at the domain."""

    taken_at: float  # unix seconds
    total_bytes: float  # the domain's RAM: the cgroup limit, or MemTotal
    available_bytes: (
        float  # what can still be allocated before a kill: RAM available + the swap room (free swap - reserve)
    )
    ram_available_bytes: float | None = (
        None  # RAM alone: limit - usage + reclaimable (capped by the host), or MemAvailable
    )
    swap_free_bytes: float | None = (
        None  # swap the domain may still use (its allowance, the host's free), before the reserve
    )


def cgroup_available(limit: float, usage: float, reclaimable: float | None, host_available: float | None) -> float:
    """Available bytes in a limited cgroup; the fast path and the exporter-driven tick (guard/sources/metrics_source.py)
    share it."""
    available = max(0.0, limit - usage + (reclaimable or 0.0))
    return available if host_available is None else min(available, host_available)


class DomainReader:
    """Reads the host (/proc/meminfo) or one memory cgroup (v1 or v2 files); read() returns None when it cannot."""

    def __init__(
        self,
        domain: str,
        procfs: Path = Path("/proc"),
        cgroupfs: Path = Path("/sys/fs/cgroup"),
        clock: Callable[[], float] = time.time,
        host_every_seconds: float = 0.25,
        swap_reserve: float = 0.0,
    ):
        self.domain, self.procfs, self.clock = domain, procfs, clock
        self.root = detect_memory_root(cgroupfs) if domain != "host" else None
        self.host_every_seconds, self.swap_reserve = host_every_seconds, swap_reserve
        self._host: tuple[float, float | None, float, float] | None = (
            None  # (read at, MemAvailable, MemTotal, swap free)
        )
        self.error: str | None = None

    @property
    def directory(self) -> Path | None:
        return self.root[0] / self.domain.lstrip("/") if self.root else None

    def _host_memory(self, now: float) -> tuple[float | None, float, float]:
        """(MemAvailable, MemTotal, usable free swap); for a cgroup domain refreshed only every host_every_seconds."""
        if self._host is None or self.domain == "host" or now - self._host[0] >= self.host_every_seconds:
            info = read_meminfo(self.procfs)
            zram = (read_ram_backed_free(self.procfs) or 0) if info.swap_total_bytes else 0
            self._host = (now, info.available_bytes, info.total_bytes, host_swap_free(info.swap_free_bytes, zram))
        return self._host[1], self._host[2], self._host[3]

    def _obs(self, now: float, total: float, ram: float, swap_free: float) -> DomainObs:
        return DomainObs(now, total, ram + swap_room(swap_free, self.swap_reserve), ram, swap_free)

    def read(self) -> DomainObs | None:
        now = self.clock()
        try:
            host_available, host_total, host_swap = self._host_memory(now)
            if self.domain == "host":
                if host_available is None:
                    raise ValueError("/proc/meminfo has no MemAvailable")
                return self._obs(now, host_total, host_available, host_swap)
            if self.root is None:
                raise ValueError("no memory cgroup controller is mounted")
            memory = read_cgroup(self.root[0], self.root[1], self.domain)
            if memory is None or memory.usage_bytes is None:
                raise ValueError(f"cgroup {self.domain} does not exist")
            swap = cgroup_swap_free(memory.swap_limit_bytes, memory.swap_bytes, host_swap)
            if memory.limit_bytes is None:  # an unlimited cgroup: the host is its bound
                return self._obs(now, host_total, host_available if host_available is not None else 0.0, swap)
            available = cgroup_available(
                memory.limit_bytes, memory.usage_bytes, memory.reclaimable_bytes, host_available
            )
            self.error = None
            return self._obs(now, memory.limit_bytes, available, swap)
        except (OSError, ValueError) as err:
            self.error = f"{type(err).__name__}: {err}"
            return None

    def pids(self) -> list[int]:
        """The processes in the domain: the cgroup's (and its children's) cgroup.procs, or every process on the host."""
        if self.domain == "host":
            return sorted(int(name) for name in os.listdir(self.procfs) if name.isdigit())
        directory = self.directory
        return pids_under(directory) if directory else []


class Waker:
    """Sleeps until the timeout or a kernel notification, whichever comes first (cgroup v1 memory thresholds).

    Each threshold is an eventfd registered through cgroup.event_control with the fd of memory.usage_in_bytes; the
    kernel signals it when usage crosses the value in either direction. Without v1 (or on failure) it only sleeps.
    """

    def __init__(self, reader: DomainReader, enabled: bool = True):
        self.fds: list[int] = []
        self.usage_fd: int | None = None
        self.thresholds: tuple[int, ...] = ()
        self.note = "polling only"
        directory = reader.directory
        if enabled and reader.root is not None and reader.root[1] == 1 and directory is not None:
            self.directory = directory
            self.note = "cgroup v1 memory thresholds (eventfd)"
        else:
            self.directory = None
            if enabled and reader.root is not None and reader.root[1] == 2:
                self.note = "polling only (cgroup v2: no threshold notification for memory.current)"

    def arm(self, usage_thresholds: list[int]) -> None:
        """(Re)register the usage values that wake the loop; a no-op when they did not change."""
        wanted = tuple(sorted({int(t) for t in usage_thresholds if t > 0}))
        if self.directory is None or wanted == self.thresholds:
            return
        self.close()
        try:
            self.usage_fd = os.open(self.directory / "memory.usage_in_bytes", os.O_RDONLY)
            for value in wanted:
                efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                self.fds.append(efd)
                (self.directory / "cgroup.event_control").write_text(f"{efd} {self.usage_fd} {value}")
            self.thresholds = wanted
        except OSError as err:
            self.close()
            self.directory, self.note = None, f"polling only (thresholds refused: {err})"

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout`; True when a notification woke it."""
        if not self.fds:
            time.sleep(timeout)
            return False
        ready, _, _ = select.select(self.fds, [], [], timeout)
        for fd in ready:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)
        return bool(ready)

    def close(self) -> None:
        for fd in self.fds + ([self.usage_fd] if self.usage_fd is not None else []):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds, self.usage_fd, self.thresholds = [], None, ()
