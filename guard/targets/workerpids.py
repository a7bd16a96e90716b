"""The worker's processes, so the freezer never picks them: whoever listens on the worker URL's port, and its tree."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import psutil

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0", "")


def listening_pids(port: int) -> set[int]:
    """Processes with a TCP socket listening on `port` (root sees every process's sockets)."""
    try:
        return {c.pid for c in psutil.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}
    except (psutil.AccessDenied, OSError):
        return set()


def with_descendants(pids: set[int]) -> set[int]:
    found = set(pids)
    for pid in pids:
        try:
            found.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            continue
    return found


class WorkerPids:
    """A cached view (net_connections scans every process's fds: too slow for the fast path, fine every 10 s)."""

    def __init__(self, worker_url: str, every_seconds: float = 10.0, clock=time.monotonic):
        parts = urlsplit(worker_url) if worker_url else None
        local = parts is not None and (parts.hostname or "") in LOCAL_HOSTS
        self.port = (parts.port or (443 if parts.scheme == "https" else 80)) if local else None
        self.every_seconds, self.clock = every_seconds, clock
        self.pids: frozenset[int] = frozenset()
        self.refreshed_at: float | None = None

    def refresh(self, force: bool = False) -> None:
        now = self.clock()
        if self.port is None or (
            not force and self.refreshed_at is not None and now - self.refreshed_at < self.every_seconds
        ):
            return
        self.pids, self.refreshed_at = frozenset(with_descendants(listening_pids(self.port))), now

    def __call__(self) -> set[int]:
        return set(self.pids)

    def rss_bytes(self) -> float:
        """What the worker's processes hold now (0 when unknown)."""
        total = 0.0
        for pid in self.pids:
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
        return total
