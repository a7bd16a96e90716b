"""Who the freezer may freeze and how: the protect rules, the victim choice (highest oom_score), the freeze method."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from guard import cgroupctl
from guard.procinfo import ProcInfo, Stat, descendants, parents, read_proc

HEADROOM_MODULES = ("headroom", "guard", "exporter", "worker")


@dataclass(frozen=True)
class Candidate:
    """The process to freeze and what freezing it touches."""

    info: ProcInfo
    score: int  # what it was ranked by (oom_score, or GPU bytes)
    method: str  # "cgroup-v2" | "cgroup-v1" | "sigstop"
    cgroup: cgroupctl.FreezerCgroup | None  # for the cgroup methods
    members: tuple[tuple[int, int], ...]  # (pid, start_ticks) of every process it stops
    pgid: int  # the process group signalled as a whole; 0 when only the members are signalled


def is_headroom(cmdline: tuple[str, ...]) -> bool:
    """`headroom ...`, `python .../bin/headroom ...` or `python -m headroom|guard|exporter|worker ...`."""
    head = cmdline[:3]
    if any(os.path.basename(arg) == "headroom" for arg in head):
        return True
    for first, second in zip(cmdline, cmdline[1:4]):
        if first == "-m" and second.split(".")[0] in HEADROOM_MODULES:
            return True
    return False


def protect_reason(info: ProcInfo, rules: list[str], protected: set[int], protect_headroom: bool) -> str | None:
    """Why `info` must never be frozen, or None. Pure: the rules are config entries such as 'unit:sshd.service'."""
    if info.pid == 1:
        return "PID 1"
    if info.kernel_thread or not info.cmdline:
        return "kernel thread"
    if info.pid in protected:
        return "protected pid (the worker, headroom, a lease)"
    if protect_headroom and is_headroom(info.cmdline):
        return "headroom's own process"
    argv0 = os.path.basename(info.cmdline[0])
    for rule in rules:
        kind, _, name = rule.partition(":")
        if kind == "command" and name in (info.stat.comm, argv0):
            return f"protected by {rule}"
        if kind == "unit" and any(name in path.split("/") for path in info.cgroups.values()):
            return f"protected by {rule}"
        if kind == "cgroup" and any(path == name or path.startswith(name.rstrip("/") + "/") for path in info.cgroups.values()):
            return f"protected by {rule}"
    return None


class Chooser:
    """Ranks a domain's processes and picks the first that may be frozen, with the method that freezes only it."""

    def __init__(self, rules: list[str], protect_headroom: bool, method: str, procfs: Path, cgroupfs: Path):
        self.rules, self.protect_headroom, self.method = list(rules), protect_headroom, method
        self.procfs, self.cgroupfs = procfs, cgroupfs

    def oom_score(self, pid: int) -> int:
        try:
            return int((self.procfs / str(pid) / "oom_score").read_text())
        except (OSError, ValueError):
            return -1

    def pick(self, pids: list[int], protected: set[int], skip: set[int],
             score: Callable[[int], int] | None = None) -> Candidate | None:
        """Highest score first (the kernel's oom_score by default); None when nothing may be frozen."""
        score = score or self.oom_score
        ranked = sorted(((score(pid), pid) for pid in pids if pid not in skip), reverse=True)
        stats: dict[int, Stat] | None = None
        for value, pid in ranked:
            if value < 0:
                break
            info = read_proc(pid, self.procfs)
            if info is None or info.stat.state in ("Z", "X", "T", "t"):
                continue  # dead, or already stopped (Ctrl-Z, a debugger): freezing it frees nothing, thawing would resume it
            if protect_reason(info, self.rules, protected, self.protect_headroom) is not None:
                continue
            stats = stats if stats is not None else parents(self.procfs)
            candidate = self._method(info, value, protected | skip, stats)
            if candidate is not None:
                return candidate
        return None

    def _may_stop(self, pids: set[int], protected: set[int]) -> bool:
        for pid in pids:
            info = read_proc(pid, self.procfs)
            if info is not None and (pid in protected or
                                     protect_reason(info, self.rules, protected, self.protect_headroom) is not None):
                return False
        return True

    def _method(self, info: ProcInfo, value: int, protected: set[int], stats: dict[int, Stat]) -> Candidate | None:
        own = descendants(info.pid, stats) | {pid for pid, st in stats.items() if st.pgid == info.stat.pgid}
        if self.method in ("auto", "cgroup"):
            cg = cgroupctl.freezer_of_pid(info.pid, self.procfs, self.cgroupfs)
            if cg is not None:
                inside = set(cgroupctl.pids(cg))
                if inside and inside <= own and self._may_stop(inside, protected):
                    members = tuple((pid, stats[pid].start_ticks) for pid in sorted(inside) if pid in stats)
                    return Candidate(info, value, f"cgroup-v{cg.version}", cg, members, 0)
            if self.method == "cgroup":
                return None
        return self.sigstop(info, value, protected, stats)

    def sigstop(self, info: ProcInfo, value: int, protected: set[int], stats: dict[int, Stat] | None = None) -> Candidate:
        """SIGSTOP to its whole process group when the group holds nothing protected (nor the guard), else to it alone."""
        stats = stats if stats is not None else parents(self.procfs)
        group = {pid for pid, st in stats.items() if st.pgid == info.stat.pgid}
        whole_group = info.stat.pgid not in (0, os.getpgid(0)) and self._may_stop(group, protected)
        # members already stopped by someone else stay out of the record, so a thaw never resumes them
        chosen = sorted(p for p in group if stats[p].state not in ("T", "t")) if whole_group else [info.pid]
        members = tuple((pid, stats[pid].start_ticks if pid in stats else info.stat.start_ticks) for pid in chosen)
        return Candidate(info, value, "sigstop", None, members, info.stat.pgid if whole_group else 0)
