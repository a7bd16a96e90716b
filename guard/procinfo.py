"""What the freezer needs to know about a process, from /proc: pure parsers apart from the readers."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from exporter.units import parse_proc_cgroup

PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat the freezer uses."""

    comm: str
    state: str  # R, S, D, T (stopped), t, Z, ...
    ppid: int
    pgid: int
    flags: int
    start_ticks: int  # start time after boot in clock ticks: with the pid, a process's identity
    rss_bytes: int


@dataclass(frozen=True)
class ProcInfo:
    """One process as the victim choice sees it."""

    pid: int
    stat: Stat
    oom_score: int  # what the kernel's OOM killer ranks by (0..2000)
    cmdline: tuple[str, ...]  # empty for a kernel thread
    cgroups: dict[str, str]  # controller ('' for v2) -> path

    @property
    def kernel_thread(self) -> bool:
        return bool(self.stat.flags & PF_KTHREAD) or self.pid == 2 or self.stat.ppid == 2


def parse_stat(text: str) -> Stat:
    """/proc/PID/stat -> Stat; the command sits in parentheses and may hold spaces or ')'."""
    head, _, tail = text.rpartition(")")
    comm = head.split("(", 1)[1] if "(" in head else head
    fields = tail.split()  # fields[0] is field 3 (state)
    return Stat(comm=comm, state=fields[0], ppid=int(fields[1]), pgid=int(fields[2]), flags=int(fields[6]),
                start_ticks=int(fields[19]), rss_bytes=int(fields[21]) * PAGE_BYTES)


def parse_cmdline(raw: bytes) -> tuple[str, ...]:
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def read_stat(pid: int, procfs: Path = Path("/proc")) -> Stat | None:
    try:
        return parse_stat((procfs / str(pid) / "stat").read_text())
    except (OSError, IndexError, ValueError):
        return None


def read_proc(pid: int, procfs: Path = Path("/proc")) -> ProcInfo | None:
    """The process as /proc shows it now; None once it is gone."""
    base = procfs / str(pid)
    stat = read_stat(pid, procfs)
    if stat is None:
        return None
    try:
        oom_score = int((base / "oom_score").read_text())
        cmdline = parse_cmdline((base / "cmdline").read_bytes())
        cgroups = parse_proc_cgroup((base / "cgroup").read_text())
    except (OSError, ValueError):
        return None
    return ProcInfo(pid, stat, oom_score, cmdline, cgroups)


def all_pids(procfs: Path = Path("/proc")) -> list[int]:
    with contextlib.suppress(OSError):
        return sorted(int(name) for name in os.listdir(procfs) if name.isdigit())
    return []


def parents(procfs: Path = Path("/proc")) -> dict[int, Stat]:
    """Every live process's stat, for process groups and descendants."""
    found = {}
    for pid in all_pids(procfs):
        if (stat := read_stat(pid, procfs)) is not None:
            found[pid] = stat
    return found


def descendants(root: int, stats: dict[int, Stat]) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
