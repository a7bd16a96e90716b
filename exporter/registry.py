"""Builds the exporter's own CollectorRegistry: each collector wrapped so one failure stays inside it."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

from exporter.cgroup import CgroupCollector
from exporter.follower import KmsgFollower, read_boot_time
from exporter.gpu import GpuCollector
from exporter.meminfo import MemoryCollector
from exporter.nvml import Nvml
from exporter.oom import OomCollector
from exporter.pressure import PressureCollector
from exporter.settings import ExporterSettings

log = logging.getLogger("headroom.exporter")


class CollectorSet:
    """Runs every collector on each scrape and reports headroom_collector_success / _duration_seconds."""

    def __init__(self, collectors: list):
        self.collectors = collectors
        self._logged: dict[str, str] = {}

    def describe(self):
        return []  # do not collect at registration time

    def collect(self):
        success = GaugeMetricFamily(
            "headroom_collector_success", "1 when the collector's last scrape succeeded.", labels=["collector"]
        )
        duration = GaugeMetricFamily(
            "headroom_collector_duration_seconds", "Time the collector's scrape took.", labels=["collector"]
        )
        for collector in self.collectors:
            start = time.perf_counter()
            ok, families = self._run(collector)
            yield from families
            success.add_metric([collector.name], 1.0 if ok else 0.0)
            duration.add_metric([collector.name], time.perf_counter() - start)
        yield success
        yield duration

    def _run(self, collector) -> tuple[bool, list]:
        try:
            families = list(collector.collect())
        except Exception as err:  # a failure stays inside one collector
            self._log_once(collector.name, f"collector {collector.name} failed: {err!r}")
            return False, []
        problem = getattr(collector, "problem", None)
        if problem:
            self._log_once(collector.name, f"collector {collector.name}: {problem}")
        else:
            self._logged.pop(collector.name, None)
        return not problem, families

    def _log_once(self, name: str, message: str) -> None:
        if self._logged.get(name) != message:
            log.warning("%s", message)
            self._logged[name] = message


def build(settings: ExporterSettings) -> tuple[CollectorRegistry, KmsgFollower | None]:
    """The registry for `settings`, and the kmsg follower (not yet started) when the oom or gpu collector runs."""
    enabled = set(settings.collectors)
    follower = None
    if enabled & {"oom", "gpu"}:
        follower = KmsgFollower(settings.kmsg, read_boot_time(settings.procfs), settings.events_max)
    collectors = []
    if "memory" in enabled:
        collectors.append(MemoryCollector(settings.procfs))
    if "pressure" in enabled:
        collectors.append(PressureCollector(settings.procfs))
    if "oom" in enabled:
        collectors.append(OomCollector(settings.procfs, follower))
    if "cgroup" in enabled:
        collectors.append(CgroupCollector(settings.cgroupfs, settings.cgroups, settings.cgroup_version))
    if "gpu" in enabled:
        collectors.append(GpuCollector(Nvml(settings.nvml_module), settings.procfs, follower))
    registry = CollectorRegistry()
    registry.register(CollectorSet(collectors))
    ProcessCollector(namespace="headroom_exporter", registry=registry)
    return registry, follower
