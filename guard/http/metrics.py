"""The guard's own /metrics: a collect-on-scrape Collector over the published view, in its own CollectorRegistry."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from guard.protect.freezer import OUTCOMES
from guard.http.fastmetrics import fast_path_families, histogram_family
from guard.core.leases import gpu_room, ram_room
from guard.common.types import LeaseStatus
from guard.core.published import Published

P = "headroom_guard_"
WORKER_STATES = ("running", "throttled", "paused", "freed")


def _levels(read, settings):
    view = read.guard
    family = GaugeMetricFamily(
        P + "level", "Level per resource: 0 ok, 1 warn, 2 throttle, 3 pause, 4 free, 5 freeze.", labels=["resource"]
    )
    for name, rs in view.state.resources.items():
        family.add_metric([name], int(rs.level))
    yield family
    yield GaugeMetricFamily(
        P + "overall_level", "The most severe level over all resources.", value=int(view.state.level)
    )


def _worker(read, settings):
    view = read.guard
    desired = GaugeMetricFamily(P + "worker_desired_state", "1 for the worker state the guard wants.", labels=["state"])
    for state in WORKER_STATES:
        desired.add_metric([state], 1.0 if view.decision.desired.state == state else 0.0)
    yield desired
    actions = CounterMetricFamily(
        P + "actions", "Calls to the worker by action and result.", labels=["action", "result"]
    )
    for (action, result), count in sorted(view.actions.items()):
        actions.add_metric([action, result], count)
    yield actions
    yield GaugeMetricFamily(
        P + "maintenance", "1 while maintenance mode is on.", value=1.0 if view.maintenance.on else 0.0
    )
    yield GaugeMetricFamily(
        P + "dry_run", "1 when the guard only logs what it would do.", value=1.0 if settings.dry_run else 0.0
    )


def _leases(read, settings):
    view = read.guard
    leases, snapshot = view.leases, view.snapshot
    counts = GaugeMetricFamily(P + "leases", "Leases by status.", labels=["status"])
    for status in (LeaseStatus.GRANTED, LeaseStatus.WAITING):
        counts.add_metric([status], sum(1 for lease in leases if lease.status == status))
    yield counts
    reserved = GaugeMetricFamily(P + "reserved_bytes", "Bytes held back for granted leases.", labels=["resource"])
    reserved.add_metric(["ram"], ram_room(snapshot, leases, settings)["reserved_bytes"])
    for gpu in snapshot.gpus:
        reserved.add_metric([f"gpu:{gpu.gpu}"], gpu_room(snapshot, gpu, leases, settings)["reserved_bytes"])
    yield reserved
    admissions = CounterMetricFamily(P + "admissions", "Lease requests by result.", labels=["result"])
    for result in ("granted", "queued", "refused"):
        admissions.add_metric([result], view.admissions.get(result, 0))
    yield admissions


def _source(read, settings):
    view = read.guard
    yield GaugeMetricFamily(
        P + "source_up", "1 when the last observation succeeded.", value=1.0 if view.snapshot.ok else 0.0
    )
    yield GaugeMetricFamily(
        P + "signals_stale",
        "1 while signals are stale (admissions refused).",
        value=1.0 if view.decision.stale else 0.0,
    )
    age = read.now - view.snapshot.taken_at if view.snapshot.taken_at else float("nan")
    yield GaugeMetricFamily(P + "snapshot_age_seconds", "Age of the last observation.", value=age)
    yield histogram_family("tick_seconds", "Duration of ticks since start (observe, decide, act).", view.tick_histogram)
    yield CounterMetricFamily(P + "ticks", "Ticks run since start.", value=view.ticks)


def _freezer(read, settings):
    """Freezer series, present (at zero) when freezing is off too: 'nothing frozen' is then the truth, not a gap."""
    freezer = read.freezer
    frozen = freezer.frozen if freezer is not None else ()
    outcomes = freezer.outcomes if freezer is not None else dict.fromkeys(OUTCOMES, 0)
    yield GaugeMetricFamily(
        P + "frozen", "Processes the guard holds frozen now (each with what was stopped with it).", value=len(frozen)
    )
    oldest = max((seconds for _, seconds in frozen), default=0.0)
    yield GaugeMetricFamily(
        P + "frozen_longest_seconds", "How long the longest-frozen process has been frozen (0: none).", value=oldest
    )
    ended = CounterMetricFamily(
        P + "freezes",
        "Freezes by how they ended: thawed (room made), manual, no_room_thawed, "
        "terminated, recovered (a restarted guard thawed it), shutdown, failed.",
        labels=["outcome"],
    )
    for outcome, count in sorted(outcomes.items()):
        ended.add_metric([outcome], count)
    yield ended
    yield CounterMetricFamily(
        P + "thaw_failures",
        "Thaws the kernel refused (EPERM, EROFS): the record is kept and retried; HeadroomGuardFrozenLong fires.",
        value=freezer.thaw_failures if freezer is not None else 0,
    )


def _store(read, settings):
    health = read.store
    errors = CounterMetricFamily(
        P + "store_errors", "Writes to the state database that failed, by operation.", labels=["operation"]
    )
    for operation, count in sorted(read.store_errors.items()):
        errors.add_metric([operation], count)
    yield errors
    yield GaugeMetricFamily(
        P + "store_writable",
        "1 while the state database can be written (0: disk full or failing).",
        value=1.0 if health["writable"] else 0.0,
    )
    yield GaugeMetricFamily(
        P + "store_unrecorded",
        "Writes (events, leases, state) waiting in memory for the store.",
        value=health["unrecorded"],
    )
    yield CounterMetricFamily(
        P + "store_dropped_events",
        "Unrecorded events pushed out of memory by newer ones.",
        value=health["dropped_events"],
    )
    yield GaugeMetricFamily(
        P + "store_corrupt_files",
        "Corrupt state databases moved aside and still in the state dir.",
        value=len(health["corrupt_files"]),
    )


class GuardCollector:
    """Reads the published view at scrape time (no lock); nothing is set from a background loop."""

    def __init__(self, read: Callable[[], Published], settings):
        self.read, self.settings = read, settings

    def collect(self):
        read = self.read()
        for part in (_levels, _worker, _leases, _source, _store, _freezer, fast_path_families):
            yield from part(read, self.settings)


def build_registry(read: Callable[[], Published], settings) -> CollectorRegistry:
    """/metrics over `read` (the facade's view): the guard's series and the fast path's, one read per scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GuardCollector(read, settings))
    return registry
