"""What the tick takes from the fast path: fresher RAM, the protection override, worker restarts and downtime."""

from __future__ import annotations

from dataclasses import replace

from guard.domain import DomainObs
from guard.fastpath import Histogram
from guard.types import Decision, Desired, GuardState, Level, ResourceState, Snapshot
from headroom.contract import WorkerState, WorkerStatus

DOWNTIME_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
UP_STATES = ("running", "throttled")


def merge_fast(snapshot: Snapshot, fast: DomainObs | None) -> Snapshot:
    """The tick's RAM values from the fast path's look when that is newer than the source's (same domain)."""
    if fast is None or not snapshot.ok or fast.taken_at <= snapshot.taken_at - 0.001:
        return snapshot
    return replace(snapshot, ram_total_bytes=fast.total_bytes, ram_available_bytes=fast.available_bytes)


def with_override(state: GuardState, decision: Decision, override: Desired | None) -> tuple[GuardState, Decision]:
    """The fast path's protection wins over a milder policy wish while it lasts (new values, inputs untouched)."""
    if override is None or override.severity <= decision.desired.severity:
        return state, decision
    new_state = replace(state, desired=override, level=max(state.level, Level.FREEZE))
    reasons = (override.reason, *decision.reasons)
    return new_state, replace(decision, desired=override, level=new_state.level, reasons=reasons, admissions_open=False)


def worker_restarted(before: WorkerStatus | None, after: WorkerStatus | None, wanted: str) -> bool:
    """The worker came back with a fresh desired state: it had accepted "freed", now it reports running/starting,
    while the guard still wants it freed (a wake the guard asked for is no restart)."""
    if before is None or after is None or wanted != WorkerState.FREED:
        return False
    return (before.desired.state == WorkerState.FREED and after.desired.state == WorkerState.RUNNING
            and after.state in (WorkerState.STARTING, WorkerState.RUNNING, WorkerState.WAKING))


def forget_free(state: GuardState) -> GuardState:
    """After a worker restart, no resource keeps a free decision without a fresh reason (it must be entered again)."""
    resources = {name: (ResourceState(level=Level.PAUSE, value=rs.value, why=rs.why) if rs.level >= Level.FREE else rs)
                 for name, rs in state.resources.items()}
    level = max((rs.level for rs in resources.values()), default=Level.OK)
    desired = state.desired if state.desired.state != WorkerState.FREED else Desired(WorkerState.PAUSED, reason="worker restarted; free forgotten")
    return replace(state, resources=resources, level=level, desired=desired)


class DowntimeMeter:
    """The worker's downtime per protection event: from leaving running (on the guard's wish) to running again."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.seen_down = False  # the worker has been observed down since down_since (a stale "running" ends nothing)
        self.histogram = Histogram(DOWNTIME_BUCKETS)
        self.last: float | None = None

    def start(self, now: float) -> None:
        """The guard has just decided to take the worker down (the fast path's free)."""
        if self.down_since is None:
            self.down_since = now

    def update(self, observed_state: str | None, desired: Desired, now: float) -> float | None:
        """Feed one tick; the downtime in seconds when the worker has just come back, else None."""
        if observed_state is None:
            return None
        if observed_state not in UP_STATES:
            if self.down_since is None and desired.state in ("paused", "freed"):
                self.down_since = now
            self.seen_down = self.down_since is not None
            return None
        if self.down_since is None or not self.seen_down:
            if self.down_since is not None and desired.state in UP_STATES:
                self.down_since = None  # the guard changed its mind before the worker ever went down
            return None
        seconds, self.down_since, self.last, self.seen_down = now - self.down_since, None, now - self.down_since, False
        self.histogram.observe(seconds)
        return seconds
