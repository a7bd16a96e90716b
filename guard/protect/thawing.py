"""Thawing one freeze record: resume only what it names (pid and start time match), thaw its cgroup, report what failed.

Shared by the running guard's freezer and by `headroom thaw --all`, which works with no guard running.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from exporter.units import parse_proc_cgroup
from guard.protect import cgroupctl
from guard.protect.procinfo import same_process

Member = tuple[int, int]  # (pid, start_ticks)


@dataclass(frozen=True)
class Release:
    """What thawing one record did: `error` is None when nothing it names is left stopped by the guard."""

    error: str | None = None
    left: tuple[Member, ...] = ()  # still to resume: after a refused SIGCONT those, after a refused cgroup write all
    note: str = ""  # "thawed", or why nothing was done (gone, another boot, not the recorded processes)


def _in_cgroup(pid: int, path: str, version: int, procfs: Path) -> bool:
    try:
        paths = parse_proc_cgroup((procfs / str(pid) / "cgroup").read_text())
    except OSError:
        return False
    return paths.get("" if version == 2 else "freezer") == path


def release(fp, procfs: Path = Path("/proc"), cgroupfs: Path = Path("/sys/fs/cgroup"), verify: bool = False) -> Release:
    """Thaw the record `fp` (a FrozenProcess). With `verify` (a record from another guard process), a cgroup is thawed
    only while a recorded member (same pid and start time) is still in it: never a cgroup someone else froze since."""
    if fp.cgroup is not None:
        return _release_cgroup(fp, procfs, cgroupfs, verify)
    if fp.method != "sigstop":
        return Release(f"unknown freeze method {fp.method!r}", tuple(fp.members))
    failed: list[Member] = []
    errors: list[str] = []
    resumed = 0
    for pid, start in fp.members:
        if not same_process(pid, start, procfs):
            continue  # gone, or the pid is now another process's: it was never stopped by the guard
        try:
            os.kill(pid, signal.SIGCONT)
            resumed += 1
        except ProcessLookupError:
            continue
        except OSError as err:  # EPERM: the guard lost the right to signal it (capabilities, user namespace)
            failed.append((pid, start))
            errors.append(f"SIGCONT to {pid}: {err.strerror or err}")
    if failed:
        return Release("; ".join(errors), tuple(failed))
    return Release(note="thawed" if resumed else "none of its processes is there any more (nothing resumed)")


def _release_cgroup(fp, procfs: Path, cgroupfs: Path, verify: bool) -> Release:
    version = 2 if fp.method == "cgroup-v2" else 1
    cg = cgroupctl.freezer_of(cgroupfs, fp.cgroup, version)
    if cg is None:
        return Release(note="its cgroup is gone")
    if (
        verify
        and fp.members
        and not any(
            same_process(pid, start, procfs) and _in_cgroup(pid, fp.cgroup, version, procfs)
            for pid, start in fp.members
        )
    ):
        return Release(note=f"none of the recorded processes is in {fp.cgroup} any more: left as it is")
    try:
        cgroupctl.thaw(cg)
    except OSError as err:  # EROFS, EACCES: a read-only or delegated cgroup tree
        return Release(f"thawing cgroup {fp.cgroup}: {err.strerror or err}", tuple(fp.members))
    if getattr(fp, "moved_from", None) is not None:  # the cgroup the guard made: its processes go back, it is removed
        try:
            cgroupctl.dissolve(cg, fp.moved_from)
        except OSError as err:  # thawed already: only the move back failed, which no process notices
            return Release(note=f"thawed (its processes stay in {fp.cgroup}: {err.strerror or err})")
    return Release(note="thawed")
