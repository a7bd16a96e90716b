"""A process as /proc shows it: what the freezer reads (files that never wait on the process), whether it is alive or
the same process, and whether it is headroom (cmdline: never on the fast path)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from exporter.units import parse_proc_cgroup

DEAD = ("Z", "X")  # /proc/PID/stat states of a process that has exited (zombie, dead)
PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Reading /proc/PID/cmdline or environ takes the target's mmap lock, which a process stuck in reclaim or on a dead NFS
# mount holds for ever: the freezer reads only stat, status, oom_score_adj and cgroup, which do not take it.


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat the freezer uses."""

    comm: str
    state: str  # R, S, D, T (stopped), t (traced), Z, ...
    ppid: int
    pgid: int
    flags: int
    start_ticks: int  # start time after boot in clock ticks: with the pid, a process's identity
    rss_bytes: int
    session: int = 0
    tty_nr: int = 0  # the controlling terminal's device number, 0 without one


@dataclass(frozen=True)
class Status:
    """The fields of /proc/PID/status the growth choice uses."""

    anon_bytes: int  # RssAnon
    shmem_bytes: int  # RssShmem: tmpfs/shm pages it maps
    tracer_pid: int  # a debugger or tracer attached (0: none)

    @property
    def charged_bytes(self) -> int:
        """What the process causes to be charged and cannot be reclaimed without swap."""
        return self.anon_bytes + self.shmem_bytes


@dataclass(frozen=True)
class ProcInfo:
    """One process as the victim choice sees it."""

    pid: int
    stat: Stat
    oom_score_adj: int  # -1000: the owner asked that it never be killed; it is never frozen either
    tracer_pid: int
    cgroups: dict[str, str]  # controller ('' for v2) -> path

    @property
    def kernel_thread(self) -> bool:
        """PF_KTHREAD (a zombie is not one: its flags lack the bit)."""
        return bool(self.stat.flags & PF_KTHREAD) or self.pid == 2 or self.stat.ppid == 2


def parse_stat(text: str) -> Stat:
    """/proc/PID/stat -> Stat; the command sits in parentheses and may hold spaces or ')'."""
    head, _, tail = text.rpartition(")")
    comm = head.split("(", 1)[1] if "(" in head else head
    fields = tail.split()  # fields[0] is field 3 (state)
    return Stat(comm=comm, state=fields[0], ppid=int(fields[1]), pgid=int(fields[2]), flags=int(fields[6]),
                start_ticks=int(fields[19]), rss_bytes=int(fields[21]) * PAGE_BYTES, session=int(fields[3]),
                tty_nr=int(fields[4]))


def parse_status(text: str) -> Status:
    """/proc/PID/status -> Status (a kernel thread or zombie has no Rss lines: 0)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssShmem", "TracerPid"):
            values[key] = int(rest.split()[0])
    return Status(values.get("RssAnon", 0) * 1024, values.get("RssShmem", 0) * 1024, values.get("TracerPid", 0))


def read_small(path: str) -> str:
    """One small /proc file in one read (os.open/os.read: a third of pathlib's cost, which counts at 100s of pids)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 8192).decode(errors="replace")
    finally:
        os.close(fd)


def read_stat(pid: int, procfs: Path = Path("/proc")) -> Stat | None:
    try:
        return parse_stat(read_small(f"{procfs}/{pid}/stat"))
    except (OSError, IndexError, ValueError):
        return None


def read_status(pid: int, procfs: Path = Path("/proc")) -> Status | None:
    try:
        return parse_status(read_small(f"{procfs}/{pid}/status"))
    except (OSError, IndexError, ValueError):
        return None


def read_proc(pid: int, procfs: Path = Path("/proc"), stat: Stat | None = None) -> ProcInfo | None:
    """The process as /proc shows it now; None once it is gone."""
    base = procfs / str(pid)
    stat = stat or read_stat(pid, procfs)
    status = read_status(pid, procfs)
    if stat is None or status is None:
        return None
    try:
        adj = int(read_small(f"{base}/oom_score_adj"))
        cgroups = parse_proc_cgroup(read_small(f"{base}/cgroup"))
    except (OSError, ValueError):
        return None
    return ProcInfo(pid, stat, adj, status.tracer_pid, cgroups)


def read_written(pid: int, procfs: Path = Path("/proc")) -> int | None:
    """Bytes the process wrote (/proc/PID/io wchar); None where it may not be read (another user's process, or a
    process with capabilities the reader lacks, as under the shipped unit's bounding set)."""
    try:
        for line in read_small(f"{procfs}/{pid}/io").splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def pid_alive(pid: int, procfs: Path = Path("/proc")) -> bool:
    """The pid is a live process: not gone, not a zombie."""
    stat = read_stat(pid, procfs)
    return stat is not None and stat.state not in DEAD


def same_process(pid: int, start_ticks: int, procfs: Path = Path("/proc")) -> bool:
    """The pid still belongs to the process that was recorded (same start time), and it is not dead."""
    stat = read_stat(pid, procfs)
    return stat is not None and stat.start_ticks == start_ticks and stat.state not in DEAD


def read_cmdline(pid: int, procfs: Path = Path("/proc")) -> list[str]:
    """The process's arguments (empty for a kernel thread); raises OSError once it is gone. Never on the fast path:
    reading another process's cmdline can block on its memory map lock."""
    return (procfs / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")


def is_headroom(cmdline: list[str]) -> bool:
    """Whether a command line runs headroom (`headroom ...`, `python -m headroom ...`)."""
    names = [os.path.basename(arg) for arg in cmdline[:3]]
    return "headroom" in names or any(a == "-m" and b == "headroom" for a, b in zip(cmdline, cmdline[1:3]))


def all_pids(procfs: Path = Path("/proc")) -> list[int]:
    with contextlib.suppress(OSError):
        return sorted(int(name) for name in os.listdir(procfs) if name.isdigit())
    return []


def parents(procfs: Path = Path("/proc")) -> dict[int, Stat]:
    """Every live process's stat, for descendants."""
    found = {}
    for pid in all_pids(procfs):
        if (stat := read_stat(pid, procfs)) is not None:
            found[pid] = stat
    return found


def stats_of(pids, procfs: Path = Path("/proc")) -> dict[int, Stat]:
    """The stat of each of `pids` still alive (a domain's processes)."""
    return {pid: stat for pid in pids if (stat := read_stat(pid, procfs)) is not None}


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


def tty_path(tty_nr: int) -> Path | None:
    """The device of a controlling terminal number: /dev/pts/N (major 136-143) or /dev/ttyN (major 4); else None."""
    major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return Path(f"/dev/pts/{(major - 136) * 256 + minor}")
    if major == 4 and minor < 64:
        return Path(f"/dev/tty{minor}")
    return None
