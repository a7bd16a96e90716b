"""The guard's manager: each tick observes, assesses, serves the lease queue, composes the worker's state, acts and
publishes one frozen view; it owns the lock."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import asdict, replace
from typing import Callable

from guard.core.manager_protect import ProtectionMixin
from guard.core.manager_queue import QueueMixin
from guard.core.history import History
from guard.core.leasebook import LeaseBook
from guard.common.histogram import TICK_BUCKETS, TickHistogram
from guard.core.policy import assess, compose
from guard.sources.observer import merge_fast_room
from guard.core.protection import Protection, with_override
from guard.core.published import (GuardView, Publication, Published, copy_histogram, summarize_fast,
                             summarize_freezer)
from guard.common.settings import GuardSettings
from guard.common.store import Store
from guard.protect.top import Top
from guard.core.wakegate import WakeState, gate, held_event, worker_bytes
from guard.targets.workerpids import WorkerPids
from guard.common.types import ActionEvent, Decision, Desired, GuardState, LeaseStatus, Level, ResourceState, Snapshot
from headroom.contract import Maintenance, WorkerState, WorkerStatus

log = logging.getLogger("headroom.guard")


Composed = tuple[GuardState, Decision, WakeState]  # a tick's composed decision, not yet kept


class Manager(ProtectionMixin, QueueMixin):
    """Observer, policy, queue, reconciler and store wired together; every entry point is thread-safe."""

    def __init__(self, settings: GuardSettings, observer, store: Store, reconciler=None,
                 clock: Callable[[], float] = time.time):
        self.settings, self.observer, self.store, self.reconciler, self.clock = (
            settings, observer, store, reconciler, clock)
        self.lock = threading.RLock()  # guards state, decision, leases; held only for in-memory work and SQLite
        self.tick_lock = threading.Lock()  # one tick at a time (scheduler and alert-triggered ticks)
        self.state = restore_state(store)
        self.snapshot = Snapshot(taken_at=0.0, ok=False, error="not observed yet")
        self.decision = Decision(
            self.state.level, self.state.desired, ("not observed yet",), stale=True, admissions_open=False)
        self.maintenance = Maintenance.from_dict(store.get("maintenance", None))
        self.actions: Counter = Counter()
        self.tick_histogram = TickHistogram()  # every tick since start (for /metrics)
        self.ticks = 0
        self.history = History()  # the status page's charts: last 15 minutes, in memory only
        self.top = Top()  # top memory users, scanned on request
        # the one owner of wishes, the GPU episode and downtime (guard/core/protection.py)
        self.protection = Protection()
        self.fastpath = None  # guard.protect.fastpath.FastPath, started by start_background()
        self.acting = None  # guard.targets.actuator.ActingThread: control calls off the observing threads
        self.wake = WakeState()  # the freed worker's return (guard/core/wakegate.py)
        self._seen_observed: WorkerStatus | None = None  # the worker's status at the previous tick (restart detection)
        self._grew_at: float | None = None  # when the worker was last seen starting, waking or freed (it loads after)
        self.worker_warning: str | None = None  # set by the wiring (guard/app.py) before the first tick
        self.freezer = None  # set when a freezer works without a fast path (tests); else the fast path's
        self.published = Publication()  # readers waiting for the next publication (a queued request's long poll)
        self.worker_pids = WorkerPids(settings.worker_url)  # never frozen; refreshed by the tick
        self.book = LeaseBook(store, clock, settings.queue_poll_grace_seconds)
        with self.lock:
            self.book.expire(self.clock())
            self.publish()

    # --- the view -------------------------------------------------------------------------------
    def publish(self, wake: bool = False) -> GuardView:
        """Freeze what readers see now (under the lock); `wake`: a waiting lease may have moved (a tick, a release), so
        the long polls waiting on the publication look again (not at every change: 50 pollers would wake in herds)."""
        reconciler = self.reconciler
        self.view = GuardView(self.snapshot, self.state, self.decision, tuple(replace(l) for l in self.book.leases()),
                              self.maintenance, reconciler.observed if reconciler else None,
                              reconciler.read_error if reconciler else None, self.ticks, self.wake.held,
                              dict(self.actions), dict(self.book.admissions),
                              copy_histogram(self.tick_histogram, TICK_BUCKETS), reconciler is not None,
                              self.worker_warning)
        if wake:
            self.published.bump()
        return self.view

    def set_worker_warning(self, warning: str | None) -> None:
        """What the status says about a worker this guard does not drive (set once, by the wiring)."""
        with self.lock:
            self.worker_warning = warning
            self.publish()

    def read(self) -> Published:
        """The published view with each part's own published summary: all a reader gets (no lock taken here)."""
        store, health = self.store, self.store.health
        with health.lock:
            errors = dict(health.errors)
        view = self.store.health_view()
        return Published(self.view, self.protection.view(), copy_histogram(self.protection.downtime.histogram),
                         summarize_freezer(self.freezer_in_use()), summarize_fast(self.fastpath), view, errors,
                         None if view["writable"] else health.reason(), self.clock())

    def freezer_in_use(self):
        """The guard's freezer: set on the manager, or the fast path's; None when the guard has none."""
        return self.freezer if self.freezer is not None else getattr(self.fastpath, "freezer", None)

    @property
    def admissions(self) -> Counter:
        return self.book.admissions

    # --- the tick -------------------------------------------------------------------------------
    def tick(self) -> Decision:
        """Observe (outside the state lock: the API never waits on HTTP); assess, serve the queue, compose once; act."""
        with self.tick_lock:
            started = time.perf_counter()
            snapshot = self.observe()
            with self.lock:
                now = self.clock()
                self.book.expire(now)
                state, assessed = assess(snapshot, self.state, now, self.settings)
                self.serve_queue(assessed, now)
                composed = self.compose(snapshot, state, assessed, now)
            composed = self.remeasure_before_free(composed, now)
            with self.lock:
                decision = self.commit(composed, now)
            self.worker_pids.refresh()
            self.worker_hold = measure_hold(self.worker_pids, snapshot)
            self.end_gpu_episode()
            self.act(decision, now)
            self.record_oom_kills()
            self.ticks += 1
            if self.ticks % 1000 == 0:
                self.store.prune_leases()
            self.tick_histogram.observe(time.perf_counter() - started)
            with self.lock:
                view = self.publish(wake=True)
            # the charts sample what was published
            self.history.add(view.snapshot, view.leases, view.decision.level.label)
            return decision

    def observe(self) -> Snapshot:
        pids = [lease.pid for lease in self.leases() if lease.pid and lease.status == LeaseStatus.GRANTED]
        snapshot = self.observer.observe(pids)
        if self.fastpath is not None:
            snapshot = merge_fast_room(snapshot, self.fastpath.last)
        if self.reconciler is not None:
            snapshot = replace(snapshot, worker_state=self.read_worker())
            snapshot = replace(snapshot, worker_settling=self.worker_settling())
        with self.lock:
            self.snapshot = snapshot
        return snapshot

    def compose(self, snapshot: Snapshot, state: GuardState, assessed: Decision, now: float) -> Composed:
        """The worker's desired state from the levels, the leases as served, maintenance and protection's wish; the
        freed worker's wake gate. Pure: nothing is recorded or kept here (commit() does that, once per tick)."""
        state, decision = compose(state, assessed, self.leases(), self.settings, self.maintenance)
        state, decision = with_override(state, decision, self.protection.view().override)  # one copy per tick
        held = worker_bytes(getattr(self.reconciler, "observed", None), self.worker_pids.rss_bytes())
        return gate(self.wake, snapshot, self.decision.desired, state, decision, self.settings, now, held)

    def commit(self, composed: Composed, now: float) -> Decision:
        """Keep this tick's decision and record what changed (once per tick)."""
        state, decision, wake = composed
        if (message := held_event(self.wake, wake)) is not None:
            self.store.add_event(
                "worker", message, {"held": wake.held, "footprint_bytes": wake.footprint_bytes}, at=now)
        self.wake = wake
        self.record_changes(self.state, self.decision, state, decision, now)
        self.state, self.decision = state, decision
        return decision

    def record_changes(
            self, old: GuardState, old_decision: Decision, new: GuardState, decision: Decision, now: float) -> None:
        """An event whenever the level, a resource's level, staleness or the desired worker state changes."""
        if decision.stale != old_decision.stale:
            self.store.add_event(
                "signals", "signals stale: " + "; ".join(decision.reasons) if decision.stale else "signals fresh again",
                at=now)
        for name, rs in new.resources.items():
            before = old.resources.get(name, ResourceState()).level
            if rs.level != before:
                self.store.add_event("level", f"{name}: {before.label} -> {rs.level.label} ({rs.why})",
                                     {"resource": name, "from": before.label, "to": rs.level.label}, at=now)
        if new.desired.key() != old.desired.key() or new.level != old.level:
            self.store.add_event(
                "decision", f"level {new.level.label}, worker {new.desired.describe()}: {new.desired.reason}",
                {"level": new.level.label, "desired": asdict(new.desired)}, at=now)
            self.store.set("policy", dump_state(new))

    def remeasure_before_free(self, composed: Composed, now: float) -> Composed:
        """Before a destructive free, observe and assess again (earlyoom's re-check); if memory recovered, the fresh
        assessment wins. The queue is not served again and nothing is recorded twice."""
        worker_state = self.snapshot.worker_state
        if (composed[1].desired.state != WorkerState.FREED or worker_state in (WorkerState.FREED, WorkerState.FREEING)
                or self.reconciler is None):
            return composed
        snapshot = self.observe()
        with self.lock:
            state, assessed = assess(snapshot, self.state, now, self.settings)
            fresh = self.compose(snapshot, state, assessed, now)
        if fresh[1].desired.state != WorkerState.FREED:
            self.store.add_event("action", "free aborted: the re-measure shows memory recovered", at=now)
        return fresh

    def act(self, decision: Decision, now: float) -> None:
        if self.reconciler is None:
            return
        back = self.protection.worker_seen(self.snapshot.worker_state, decision.desired, now)
        if back is not None:
            self.store.add_event(
                "worker", f"the worker is running again after {back:.1f} s down", {"downtime_seconds": back}, at=now)
        if self.acting is not None:
            self.acting.submit(decision.desired, self.maintenance)
            return
        self.record_actions(self.reconciler.reconcile(decision.desired, self.maintenance, now), now)

    def record_actions(self, events: list[ActionEvent], now: float) -> None:
        for event in events:
            with self.lock:
                self.actions[(event.action, event.result)] += 1
            self.store.add_event("action", f"{event.action} {event.result}: {event.message}", event.data(), at=now)
        if events:
            with self.lock:
                self.publish()  # the counters readers see

    def record_oom_kills(self) -> None:
        """OOM kills the exporter reported since the last poll become `oom_kill` events (at the kill's time)."""
        poll = getattr(self.observer, "oom_kills", None)
        kills = poll() if poll else []
        if not kills:
            return
        # A restarted guard is told the recent kills again: one already stored (same time, same pid) is not new.
        known = {(e["at"], e["data"].get("pid")) for e in self.store.events(limit=500, kind="oom_kill")}
        for kill in kills:
            if (kill.time_seconds, kill.pid) not in known:
                self.store.add_event("oom_kill", kill.describe(), kill.data, at=kill.time_seconds)

    # --- maintenance, alerts --------------------------------------------------------------------
    def set_maintenance(self, on: bool, reason: str = "", retry_after_seconds: int = 600) -> Maintenance:
        with self.lock:
            now = self.clock()
            self.maintenance = Maintenance(on, reason if on else None, retry_after_seconds, now)
            self.store.set("maintenance", self.maintenance.as_dict())
            self.store.add_event(
                "maintenance", f"maintenance {'on: ' + reason if on else 'off'}", self.maintenance.as_dict(), at=now)
            self.publish()
        return self.maintenance

    def alert(self, alerts: list[dict]) -> int:
        """Record Alertmanager alerts as events and evaluate at once."""
        for item in alerts:
            labels = item.get("labels") or {}
            summary = (item.get("annotations") or {}).get("summary", "")
            self.store.add_event(
                "alert", f"{item.get('status', 'firing')}: {labels.get('alertname', '?')} {summary}".strip(), item)
        self.tick()
        return len(alerts)


def measure_hold(worker_pids, snapshot: Snapshot) -> dict[str, float] | None:
    """What the worker's processes hold now (RAM and each GPU), so admission knows what freeing it could make; None when
    its processes are unknown (a remote worker)."""
    pids = worker_pids()
    if not pids:
        return None
    hold = {"ram": worker_pids.rss_bytes()}
    for gpu in snapshot.gpus:
        hold["gpu:" + gpu.gpu] = sum(used for pid, used in gpu.processes.items() if pid in pids)
    return hold


def dump_state(state: GuardState) -> dict:
    return {"level": int(state.level), "desired": asdict(state.desired),
            "resources": {name: int(rs.level) for name, rs in state.resources.items()}}


def restore_state(store: Store) -> GuardState:
    """The last persisted levels and desired worker state, so a restart does not flap the worker."""
    saved = store.get("policy")
    if not saved:
        return GuardState()
    resources = {name: ResourceState(level=Level(level)) for name, level in saved.get("resources", {}).items()}
    return GuardState(
        resources=resources, level=Level(saved.get("level", 0)), desired=Desired(**saved.get("desired", {})))
