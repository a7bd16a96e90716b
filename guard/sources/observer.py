"""One observation per tick: the configured source's Snapshot plus what each leased process tree uses now."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Protocol

import httpx
import psutil

from guard.protect.domain import DomainObs
from guard.common.settings import GuardSettings
from guard.common.types import Snapshot
from headroom.sizes import format_size


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


def merge_fast(snapshot: Snapshot, fast: DomainObs | None) -> Snapshot:
    """The tick's RAM values from the fast path's look when that is newer than the source's (same domain)."""
    if fast is None or not snapshot.ok or fast.taken_at <= snapshot.taken_at - 0.001:
        return snapshot
    return replace(snapshot, ram_total_bytes=fast.total_bytes, ram_available_bytes=fast.available_bytes)


def merge_fast_room(snapshot: Snapshot, fast: DomainObs | None) -> Snapshot:
    """The tick's RAM and swap values from the fast path's newer look: RAM alone into ram_available_bytes (leases are
    granted on RAM; the fast path's available_bytes includes the swap room), the domain's free swap beside it."""
    if fast is None:
        return snapshot
    ram = fast.ram_available_bytes if fast.ram_available_bytes is not None else fast.available_bytes
    merged = merge_fast(snapshot, replace(fast, available_bytes=ram))
    if merged is snapshot or fast.swap_free_bytes is None:
        return merged
    return replace(merged, swap_free_bytes=fast.swap_free_bytes)


def build_source(settings: GuardSettings, transport=None, clock: Callable[[], float] = time.time) -> Source:
    """The configured source: the exporter's /metrics or Prometheus' query API."""
    if settings.source == "prometheus":
        from guard.sources.promsource import PrometheusSource, build_queries

        prometheus = settings.prometheus
        queries = build_queries(prometheus.preset, prometheus.queries, prometheus.instance, settings.memory_domain)
        return PrometheusSource(prometheus.url, queries, settings.memory_domain,
                                settings.source_timeout_seconds, transport, clock)
    from guard.sources.metrics_source import ExporterSource

    return ExporterSource(
        settings.exporter_url, settings.memory_domain, settings.source_timeout_seconds, transport, clock
    )


class OomFeed:
    """New OOM kills from the exporter's /events, polled at most every `every_seconds`; never raises.

    The first poll takes kills from the last `backfill_seconds` only, so a restarted guard does not replay old history
    beyond what the status page charts; afterwards a kill is new when it is later than the newest one already seen.
    """

    def __init__(
        self,
        url: str,
        client: httpx.Client,
        every_seconds: float = 1.0,
        backfill_seconds: float = 900.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.url, self.client, self.every_seconds = url, client, every_seconds  # the source's client, shared
        self.monotonic = monotonic
        self.newest: float = clock() - backfill_seconds
        self.seen: set[tuple] = set()
        self.next_poll = 0.0

    def poll(self) -> list[OomKill]:
        now = self.monotonic()
        if now < self.next_poll:
            return []
        self.next_poll = now + self.every_seconds
        try:
            events = self.client.get(self.url).raise_for_status().json().get("events", [])
        except (httpx.HTTPError, ValueError, AttributeError):
            return []
        fresh = [
            e
            for e in events
            if e.get("kind") == "oom_kill"
            and (e.get("time_seconds") or 0) >= self.newest
            and (e.get("time_seconds"), e.get("pid")) not in self.seen
        ]
        for event in fresh:
            self.seen.add((event.get("time_seconds"), event.get("pid")))
        if fresh:
            self.newest = max(e.get("time_seconds") or 0 for e in fresh)
            self.seen = {key for key in self.seen if (key[0] or 0) >= self.newest}
        return [OomKill.of(e) for e in sorted(fresh, key=lambda e: e.get("time_seconds") or 0)]


@dataclass(frozen=True)
class OomKill:
    """One OOM kill the exporter reported: who died, where, what it held; `data` is the exporter's event as sent."""

    time_seconds: float | None
    pid: int | None
    comm: str | None
    cgroup: str | None
    unit: str | None
    global_oom: bool
    rss_bytes: float | None
    data: dict = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, event: dict) -> "OomKill":
        return cls(
            event.get("time_seconds"),
            event.get("pid"),
            event.get("comm"),
            event.get("cgroup"),
            event.get("unit"),
            bool(event.get("global_oom")),
            event.get("rss_bytes"),
            dict(event),
        )

    def describe(self) -> str:
        """One line for the event: the victim, its cgroup and unit, what it held."""
        unit = f" ({self.unit})" if self.unit else ""
        scope = "host-wide" if self.global_oom else "cgroup limit"
        rss = f", {format_size(self.rss_bytes)} RSS" if self.rss_bytes is not None else ""
        return f"OOM kill: {self.comm or '?'} (pid {self.pid}) in {self.cgroup or '/'}{unit}, {scope}{rss}"


def oom_feed_of(source) -> OomFeed | None:
    """A feed from the exporter's /events next to its /metrics; None for other sources (Prometheus: alerts say it)."""
    url, client = getattr(source, "url", None), getattr(source, "client", None)
    if isinstance(url, str) and url.rstrip("/").endswith("/metrics") and isinstance(client, httpx.Client):
        return OomFeed(url.rstrip("/")[: -len("/metrics")] + "/events", client)
    return None


class Observer:
    """Source + lease pid accounting; `observe(pids)` never raises."""

    def __init__(self, source: Source, oom_feed: OomFeed | None = None):
        self.source = source
        self.oom_feed = oom_feed or oom_feed_of(source)

    def oom_kills(self) -> list[OomKill]:
        """OOM kills the exporter saw since the last call (at most one poll per second)."""
        return self.oom_feed.poll() if self.oom_feed else []

    def observe(self, pids: Iterable[int] = ()) -> Snapshot:
        snapshot = self.source.fetch()
        pids = [p for p in pids if p]
        return with_pid_usage(snapshot, pids) if pids and snapshot.ok else snapshot

    def close(self) -> None:
        self.source.close()
