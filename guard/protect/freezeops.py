"""The freezer's kernel side: move a tree into the cgroup made for it and freeze it, catching children born meanwhile;
tell a frozen job's terminal; say in words who was frozen and who was passed over."""

from __future__ import annotations

import contextlib
import os
import termios
from pathlib import Path
from typing import Callable

from guard.protect import cgroupctl
from guard.protect.procinfo import descendants, read_proc, read_stat, stats_of
from guard.protect.victim import Candidate, Passed
from headroom.sizes import format_size

MOVE_PASSES = 20  # a tree forking every few ms settles in 2-3 passes


def _move_tree(candidate: Candidate, procfs: Path, listing: Callable[[], list[int]]) -> int:
    """One pass: move every process of the tree (its descendants in a fresh listing of the domain: a child born since
    is caught) not yet in the cgroup; how many moved."""
    cg, moved = candidate.cgroup, 0
    inside = set(cgroupctl.pids(cg))
    for pid in descendants(candidate.info.pid, stats_of(listing(), procfs)) - inside:
        info = read_proc(pid, procfs)
        if info is None or info.cgroups.get("freezer", "/") != "/":
            continue
        with contextlib.suppress(OSError):
            moved += cgroupctl.move(pid, cg)
    return moved


def move_and_freeze(candidate: Candidate, procfs: Path, listing: Callable[[], list[int]], timeout: float = 0.5) -> bool:
    """Make the cgroup, move the tree in until no pass finds a newcomer, freeze it, then move any straggler in (a v1
    cgroup freezes what joins it once frozen). True once the kernel says frozen."""
    cgroupctl.sweep(candidate.cgroup.directory.parent.parent.parent)  # cgroupfs: leftovers of earlier thaws
    candidate.cgroup.directory.mkdir(parents=True, exist_ok=True)
    if not cgroupctl.move(candidate.info.pid, candidate.cgroup):
        raise ProcessLookupError(f"pid {candidate.info.pid} is gone")
    for _ in range(MOVE_PASSES):
        if not _move_tree(candidate, procfs, listing):
            break
    done = cgroupctl.freeze(candidate.cgroup, timeout=timeout)
    if _move_tree(candidate, procfs, listing):
        done = cgroupctl.freeze(candidate.cgroup, timeout=timeout)
    return done


def members(cg: cgroupctl.FreezerCgroup, procfs: Path) -> tuple[tuple[int, int], ...]:
    """(pid, start_ticks) of every process in the cgroup now."""
    found = []
    for pid in cgroupctl.pids(cg):
        if (stat := read_stat(pid, procfs)) is not None:
            found.append((pid, stat.start_ticks))
    return tuple(found)


def tell_terminal(path: Path | None, line: str) -> str | None:
    """One line on the frozen job's terminal, only when that terminal is in canonical mode (a shell or a line-mode
    program: a full-screen program in raw mode is never written over); "\\r\\n" around it so no column is lost.
    The device path when written, else None. Never blocks (O_NONBLOCK)."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not termios.tcgetattr(fd)[3] & termios.ICANON:
            return None
        os.write(fd, f"\r\n[headroom] {line}\r\n".encode())
        return str(path)
    except (OSError, termios.error):
        return None
    finally:
        os.close(fd)


def describe_freeze(comm: str, pid: int, count: int, growth: int, window: float, method: str, made: bool,
                    reason: str, passed: list[Passed]) -> str:
    """The freeze event's words: who, how much it grew, how, why now, and who was passed over and why."""
    how = f"{method} (a freezer cgroup the guard made for its tree)" if made else f"{method} (its own cgroup)"
    tree = f" and {count - 1} descendant(s)" if count > 1 else ""
    text = f"froze {comm} ({pid}){tree}: grew {format_size(growth)} within the last {window:g} s; by {how}: {reason}"
    return text + describe_passed(passed)


def describe_passed(passed: list[Passed]) -> str:
    if not passed:
        return ""
    shown = "; ".join(f"{p.comm} ({p.pid}, grew {format_size(p.growth)}): {p.why}" for p in passed[:5])
    more = f"; and {len(passed) - 5} more" if len(passed) > 5 else ""
    return f"; passed over: {shown}{more}"
