"""systemd units and cgroup paths: which unit owns a cgroup, where a unit's cgroup lives, a pid's cgroup."""

from __future__ import annotations

import re
from pathlib import Path

_UNIT_SUFFIX = re.compile(r"\.(service|scope|slice|socket|mount|swap|timer)$")


def unit_of_cgroup(path: str) -> str:
    """The deepest systemd unit in a cgroup path ('/system.slice/vllm.service' -> 'vllm.service'), '' if none."""
    for part in reversed([p for p in path.split("/") if p]):
        if _UNIT_SUFFIX.search(part):
            return part
    return ""


def is_unit_name(name: str) -> bool:
    return "/" not in name and bool(_UNIT_SUFFIX.search(name))


def default_unit_path(unit: str) -> str:
    """Where systemd puts `unit` by default: slices nest by their dashes, other units go in system.slice."""
    if unit.endswith(".slice"):
        if unit == "-.slice":
            return "/"
        stem = unit[: -len(".slice")]
        pieces = stem.split("-")
        return "/" + "/".join("-".join(pieces[: i + 1]) + ".slice" for i in range(len(pieces)))
    return f"/system.slice/{unit}"


def find_unit_path(memory_root: Path, unit: str, max_depth: int = 4) -> str | None:
    """The cgroup path of `unit` under `memory_root`: its default place, else a bounded search by name."""
    default = default_unit_path(unit)
    if (memory_root / default.lstrip("/")).is_dir():
        return default
    frontier = [memory_root]
    for _ in range(max_depth):
        next_frontier = []
        for directory in frontier:
            try:
                children = [c for c in directory.iterdir() if c.is_dir()]
            except OSError:
                continue
            for child in children:
                if child.name == unit:
                    return "/" + str(child.relative_to(memory_root))
            next_frontier.extend(children)
        frontier = next_frontier
    return None


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup -> {controller-or-'': path}; '' is the v2 unified entry ('0::/path')."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers = parts[1].split(",") if parts[1] else [""]
        for controller in controllers:
            paths[controller] = parts[2]
    return paths


def memory_cgroup_of_pid(procfs: Path, pid: int) -> str:
    """A process's memory cgroup path (v1 'memory' entry, else the unified one); '' when unreadable."""
    try:
        paths = parse_proc_cgroup((procfs / str(pid) / "cgroup").read_text())
    except OSError:
        return ""
    return paths.get("memory") or paths.get("", "") or paths.get("name=systemd", "")


def comm_of_pid(procfs: Path, pid: int) -> str:
    try:
        return (procfs / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""
