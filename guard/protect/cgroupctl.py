"""Acting on a cgroup from outside: find its freezer, freeze, thaw, list its processes (v1 and v2)."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from exporter.cgroupfs import v1_freezer_root, v2_root
from exporter.units import parse_proc_cgroup

# Shared by the guard's freezer (a growing process) and the cgroup worker actuator (a worker without a control
# endpoint). Every path hangs off `cgroupfs` (normally /sys/fs/cgroup) and `procfs` (normally /proc).


@dataclass(frozen=True)
class FreezerCgroup:
    """A cgroup in a hierarchy that can freeze it."""

    path: str  # "/a/b", as /proc/PID/cgroup names it in that hierarchy
    directory: Path  # where its control files are
    version: int  # 2: cgroup.freeze / cgroup.events; 1: the freezer controller's freezer.state


def freezer_of(cgroupfs: Path, path: str, version: int | None = None) -> FreezerCgroup | None:
    """The freezable cgroup at `path` (v2 preferred, unless `version` says which); None when it does not exist."""
    v2 = v2_root(cgroupfs)
    if v2 is not None and version in (None, 2):
        directory = v2 / path.lstrip("/")
        if (directory / "cgroup.freeze").exists():
            return FreezerCgroup(path, directory, 2)
    v1 = v1_freezer_root(cgroupfs)
    if v1 is not None and version in (None, 1):
        directory = v1 / path.lstrip("/")
        if (directory / "freezer.state").exists() and directory != v1:  # the v1 root cannot be frozen
            return FreezerCgroup(path, directory, 1)
    return None


def freezer_of_pid(
    pid: int, procfs: Path = Path("/proc"), cgroupfs: Path = Path("/sys/fs/cgroup")
) -> FreezerCgroup | None:
    """The cgroup holding `pid` that can freeze it: its v2 cgroup, else its v1 freezer cgroup; None at a root."""
    try:
        paths = parse_proc_cgroup((procfs / str(pid) / "cgroup").read_text())
    except OSError:
        return None
    for key, version in (("", 2), ("freezer", 1)):
        path = paths.get(key)
        if path and path != "/":
            found = freezer_of(cgroupfs, path, version)
            if found is not None:
                return found
    return None


def is_frozen(cg: FreezerCgroup) -> bool:
    """What the kernel reports: v2 `frozen 1` in cgroup.events; v1 freezer.state FROZEN."""
    try:
        if cg.version == 2:
            return any(line.strip() == "frozen 1" for line in (cg.directory / "cgroup.events").read_text().splitlines())
        return (cg.directory / "freezer.state").read_text().strip() == "FROZEN"
    except OSError:
        return False


def _write_state(cg: FreezerCgroup, frozen: bool) -> None:
    if cg.version == 2:
        (cg.directory / "cgroup.freeze").write_text("1" if frozen else "0")
    else:
        (cg.directory / "freezer.state").write_text("FROZEN" if frozen else "THAWED")


def freeze(cg: FreezerCgroup, timeout: float = 1.0) -> bool:
    """Ask the kernel to freeze the cgroup and wait up to `timeout` for it to say so; True once frozen."""
    _write_state(cg, True)
    deadline = time.monotonic() + timeout
    while not is_frozen(cg):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def thaw(cg: FreezerCgroup) -> None:
    """Thaw the cgroup; a cgroup that is gone is already thawed."""
    with contextlib.suppress(FileNotFoundError):
        _write_state(cg, False)


def pids(cg: FreezerCgroup) -> list[int]:
    """Every process in the cgroup and below it (v2 cgroup.procs lists only the cgroup itself)."""
    return pids_under(cg.directory)


def pids_under(top: Path) -> list[int]:
    """Every process in the cgroup directory `top` of any hierarchy and below it; [] when it does not exist."""
    found: list[int] = []
    for directory, _subdirs, files in os.walk(top):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                found += [int(p) for p in (Path(directory) / "cgroup.procs").read_text().split()]
    return sorted(set(found))


# --- a freezer cgroup the guard makes for one process tree (v1 freezer hierarchy: memory accounting is unchanged) ---
GUARD_GROUP = "/headroom-guard"  # under the v1 freezer root; one child per frozen tree


def made_for(cgroupfs: Path, pid: int, start_ticks: int) -> FreezerCgroup | None:
    """Where the guard would freeze this tree in the v1 freezer hierarchy (not created yet); None without one."""
    root = v1_freezer_root(cgroupfs)
    if root is None:
        return None
    path = f"{GUARD_GROUP}/{pid}-{start_ticks}"
    return FreezerCgroup(path, root / path.lstrip("/"), 1)


def move(pid: int, cg: FreezerCgroup) -> bool:
    """Move one process (all its threads) into the cgroup; False when it is gone. In a frozen v1 cgroup it freezes."""
    try:
        (cg.directory / "cgroup.procs").write_text(str(pid))
        return True
    except ProcessLookupError:
        return False


def dissolve(cg: FreezerCgroup, back_to: str) -> None:
    """Thawed already: put every process back where it was (`back_to` in the same hierarchy), then remove the cgroup."""
    home = cg.directory.parent.parent / back_to.lstrip("/") if cg.path.startswith(GUARD_GROUP + "/") else None
    if home is None or not cg.directory.exists():
        return
    for _ in range(50):  # a child forked meanwhile is born in it: move again until it empties (a forker: a few passes)
        for pid in pids_under(cg.directory):
            with contextlib.suppress(OSError):
                (home / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            cg.directory.rmdir()
            return
        time.sleep(0.002)


def sweep(cgroupfs: Path) -> None:
    """Remove the guard's empty, thawed cgroups that a thaw could not remove at once (a process still exiting in it)."""
    root = v1_freezer_root(cgroupfs)
    top = root / GUARD_GROUP.lstrip("/") if root is not None else None
    if top is None or not top.is_dir():
        return
    for directory in top.iterdir():
        if directory.is_dir() and not pids_under(directory):
            with contextlib.suppress(OSError):
                if (directory / "freezer.state").read_text().strip() == "THAWED":
                    directory.rmdir()
