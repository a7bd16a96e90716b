"""One observation per tick: the configured source's Snapshot plus what each leased process tree uses now."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Protocol

import psutil

from guard.settings import GuardSettings
from guard.types import Snapshot


class Source(Protocol):
    def fetch(self) -> Snapshot: ...

    def close(self) -> None: ...


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants; empty when it has gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def tree_rss(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def with_pid_usage(snapshot: Snapshot, pids: Iterable[int]) -> Snapshot:
    """Add RSS and GPU bytes of each lease's process tree (GPU bytes from the source's per-process series)."""
    ram: dict[int, float] = {}
    gpu: dict[int, dict[str, float]] = {}
    for pid in set(pids):
        procs = process_tree(pid)
        if not procs:
            continue
        members = {p.pid for p in procs}
        ram[pid] = tree_rss(procs)
        gpu[pid] = {g.gpu: sum(b for p, b in g.processes.items() if p in members) for g in snapshot.gpus}
    return replace(snapshot, pid_ram_bytes=ram, pid_gpu_bytes=gpu)


def build_source(settings: GuardSettings, transport=None) -> Source:
    """The configured source: the exporter's /metrics or Prometheus' query API."""
    if settings.source == "prometheus":
        from guard.promsource import PrometheusSource, build_queries

        queries = build_queries(settings.prometheus_preset, settings.prometheus_queries,
                                settings.prometheus_instance, settings.memory_domain)
        return PrometheusSource(settings.prometheus_url, queries, settings.memory_domain,
                                settings.source_timeout_seconds, transport)
    from guard.metrics_source import ExporterSource

    return ExporterSource(settings.exporter_url, settings.memory_domain, settings.source_timeout_seconds, transport)


class Observer:
    """Source + lease pid accounting; `observe(pids)` never raises."""

    def __init__(self, source: Source):
        self.source = source

    def observe(self, pids: Iterable[int] = ()) -> Snapshot:
        snapshot = self.source.fetch()
        pids = [p for p in pids if p]
        return with_pid_usage(snapshot, pids) if pids and snapshot.ok else snapshot

    def close(self) -> None:
        self.source.close()
