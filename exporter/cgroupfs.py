"""Cgroup hierarchies and memory cgroup files, v1 and v2: where each root is, pure parsers, one reader per cgroup.

The one place that finds a cgroup root (cgroup2, the v1 memory and freezer hierarchies) and parses memory.stat."""

from __future__ import annotations

from pathlib import Path

from exporter.pressure import read_pressure
from exporter.types import CgroupMemory

V1_UNLIMITED = 2**62  # v1 reports "no limit" as PAGE_COUNTER_MAX pages, e.g. 9223372036854771712


def detect_memory_root(cgroupfs: Path, version: str = "auto") -> tuple[Path, int] | None:
    """(root of the memory hierarchy, 1 or 2); None when no memory controller is mounted."""
    controllers = cgroupfs / "cgroup.controllers"
    if version in ("auto", "2") and controllers.exists() and "memory" in controllers.read_text().split():
        return cgroupfs, 2
    if version in ("auto", "1") and (cgroupfs / "memory" / "memory.usage_in_bytes").exists():
        return cgroupfs / "memory", 1
    return None


def v2_root(cgroupfs: Path) -> Path | None:
    """The cgroup2 mount: cgroupfs itself on a pure v2 host, cgroupfs/unified on a hybrid one; None without one."""
    for candidate in (cgroupfs, cgroupfs / "unified"):
        if (candidate / "cgroup.procs").exists() and (candidate / "cgroup.controllers").exists():
            return candidate
    return None


def v1_freezer_root(cgroupfs: Path) -> Path | None:
    """The v1 freezer hierarchy; None where it is not mounted."""
    root = cgroupfs / "freezer"
    return root if (root / "freezer.state").exists() or (root / "cgroup.procs").exists() else None


def hierarchy_roots(cgroupfs: Path) -> list[Path]:
    """Every hierarchy one cgroup path may stand in: cgroup2, the v1 freezer, the memory hierarchy (each once)."""
    memory = detect_memory_root(cgroupfs)
    found = (v2_root(cgroupfs), v1_freezer_root(cgroupfs), memory[0] if memory else None)
    return list(dict.fromkeys(root for root in found if root is not None and root.is_dir()))


def parse_flat_keyed(text: str) -> dict[str, int]:
    """'key value' lines (memory.stat, memory.events, memory.oom_control) -> dict."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values


def parse_limit(text: str) -> int | None:
    """A limit file's content in bytes; None for unlimited ('max' in v2, the huge sentinel in v1)."""
    value = text.strip()
    if value == "max":
        return None
    number = int(value)
    return None if number >= V1_UNLIMITED else number


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def v1_swap(
    usage: int, limit: int | None, memsw_usage: str | None, memsw_limit: str | None
) -> tuple[int | None, int | None]:
    """(swap used, swap allowance) from v1's memsw files (RAM + swap); (None, None) without swap accounting."""
    if memsw_usage is None or memsw_limit is None:
        return None, None
    both = parse_limit(memsw_limit)
    allowance = None if both is None else max(0, both - limit) if limit is not None else None
    return max(0, int(memsw_usage) - usage), allowance


def read_cgroup_v1(directory: Path, name: str) -> CgroupMemory:
    usage = int((directory / "memory.usage_in_bytes").read_text())
    stat = parse_flat_keyed(_read(directory / "memory.stat") or "")
    oom = parse_flat_keyed(_read(directory / "memory.oom_control") or "")
    limit = parse_limit((directory / "memory.limit_in_bytes").read_text())
    swap, swap_limit = v1_swap(
        usage, limit, _read(directory / "memory.memsw.usage_in_bytes"), _read(directory / "memory.memsw.limit_in_bytes")
    )
    return CgroupMemory(
        cgroup=name,
        usage_bytes=usage,
        limit_bytes=limit,
        high_bytes=None,  # v1 has no memory.high
        reclaimable_bytes=stat.get("total_inactive_file", stat.get("inactive_file")),
        oom_kills=oom.get("oom_kill"),
        swap_bytes=swap,
        swap_limit_bytes=swap_limit,
    )


def read_cgroup_v2(directory: Path, name: str) -> CgroupMemory:
    stat = parse_flat_keyed(_read(directory / "memory.stat") or "")
    events = parse_flat_keyed(_read(directory / "memory.events") or "")
    high = _read(directory / "memory.high")
    swap = _read(directory / "memory.swap.current")
    swap_max = _read(directory / "memory.swap.max")
    maximum = _read(directory / "memory.max")
    return CgroupMemory(
        cgroup=name,
        usage_bytes=int((directory / "memory.current").read_text()),
        limit_bytes=parse_limit(maximum) if maximum is not None else None,
        high_bytes=parse_limit(high) if high is not None else None,
        reclaimable_bytes=stat.get("inactive_file"),
        oom_kills=events.get("oom_kill"),
        swap_bytes=int(swap) if swap is not None else None,
        swap_limit_bytes=parse_limit(swap_max) if swap_max is not None else None,
        pressure=read_pressure(directory / "memory.pressure") or (),
    )


def read_cgroup(memory_root: Path, version: int, path: str) -> CgroupMemory | None:
    """The memory state of cgroup `path` ('/a/b'); None when it does not exist (right now)."""
    directory = memory_root / path.lstrip("/")
    if not directory.is_dir():
        return None
    try:
        return read_cgroup_v2(directory, path) if version == 2 else read_cgroup_v1(directory, path)
    except FileNotFoundError:
        return None  # removed while we read it
