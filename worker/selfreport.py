"""What the worker tells the guard about itself: its processes and its cgroup, so it is never frozen."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import psutil

from exporter.units import parse_proc_cgroup


_cache: dict[str, tuple[float, list[int]]] = {}
EVERY_SECONDS = 1.0  # the guard reads the state every tick; listing children scans /proc, so at most once a second


def own_pids(clock=time.monotonic) -> list[int]:
    """This process and every process below it (the engine's workers)."""
    now = clock()
    if "pids" in _cache and now - _cache["pids"][0] < EVERY_SECONDS:
        return list(_cache["pids"][1])
    pids = [os.getpid()]
    with contextlib.suppress(psutil.Error):
        pids += [child.pid for child in psutil.Process().children(recursive=True)]
    _cache["pids"] = (now, pids)
    return list(pids)


def own_cgroup(procfs: Path = Path("/proc")) -> str | None:
    """Its cgroup2 path, else its name=systemd path (a hybrid host); None at a root or where unreadable."""
    with contextlib.suppress(OSError):
        paths = parse_proc_cgroup((procfs / "self" / "cgroup").read_text())
        for key in ("", "name=systemd"):
            if paths.get(key) not in (None, "", "/"):
                return paths[key]
    return None
