"""The `cgroup` collector: usage, limit, high, reclaimable cache, OOM kills and pressure of configured cgroups."""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from exporter.cgroupfs import detect_memory_root, read_cgroup
from exporter.pressure import pressure_families
from exporter.units import find_unit_path, is_unit_name

log = logging.getLogger("headroom.exporter.cgroup")

_GAUGES = (
    (
        "usage_bytes",
        "headroom_cgroup_memory_usage_bytes",
        "Memory charged to the cgroup (memory.current / usage_in_bytes).",
    ),
    (
        "limit_bytes",
        "headroom_cgroup_memory_limit_bytes",
        "Hard memory limit (memory.max / limit_in_bytes); absent when unlimited.",
    ),
    (
        "high_bytes",
        "headroom_cgroup_memory_high_bytes",
        "Throttling threshold (memory.high); absent when unlimited or on v1.",
    ),
    ("reclaimable_bytes", "headroom_cgroup_memory_reclaimable_bytes", "Inactive file cache the kernel reclaims first."),
    (
        "swap_bytes",
        "headroom_cgroup_memory_swap_bytes",
        "Swap used by the cgroup (memory.swap.current; v1: memsw - usage).",
    ),
    (
        "swap_limit_bytes",
        "headroom_cgroup_memory_swap_limit_bytes",
        "Swap the cgroup may use (memory.swap.max; v1: memsw limit - limit); absent when unbounded.",
    ),
)


class CgroupCollector:
    name = "cgroup"

    def __init__(self, cgroupfs: Path, targets: list[str], version: str = "auto"):
        self.cgroupfs = cgroupfs
        self.targets = targets
        self.version = version
        self._resolved: dict[str, str] = {}

    def _path_of(self, memory_root: Path, target: str) -> str | None:
        if not is_unit_name(target):
            return "/" + target.strip("/") if target.strip("/") else "/"
        cached = self._resolved.get(target)
        if cached and (memory_root / cached.lstrip("/")).is_dir():
            return cached
        found = find_unit_path(memory_root, target)
        if found:
            self._resolved[target] = found
        else:
            log.debug("unit %s has no memory cgroup right now", target)
        return found

    def collect(self):
        detected = detect_memory_root(self.cgroupfs, self.version)
        if detected is None or not self.targets:
            return
        memory_root, version = detected
        rows = []
        for target in self.targets:
            path = self._path_of(memory_root, target)
            stats = read_cgroup(memory_root, version, path) if path else None
            if stats is not None:
                rows.append(stats)
        yield from self._families(rows)

    def _families(self, rows):
        for attr, name, doc in _GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["cgroup"])
            for row in rows:
                value = getattr(row, attr)
                if value is not None:
                    family.add_metric([row.cgroup], value)
            yield family
        kills = CounterMetricFamily(
            "headroom_cgroup_oom_kills", "OOM kills inside the cgroup (memory.events / oom_control).", labels=["cgroup"]
        )
        for row in rows:
            if row.oom_kills is not None:
                kills.add_metric([row.cgroup], row.oom_kills)
        yield kills
        with_pressure = [({"cgroup": row.cgroup}, row.pressure) for row in rows if row.pressure]
        if with_pressure:
            yield from pressure_families(with_pressure, "headroom_cgroup_pressure_memory")
