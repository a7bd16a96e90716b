"""The protection state's one owner (wishes by source, the GPU episode, downtime) and what the tick takes from it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Callable

from guard.protect.domain import DomainObs
from guard.common.histogram import Histogram
from guard.common.types import Decision, Desired, GuardState, Level, ResourceState, Snapshot
from headroom.contract import WorkerState, WorkerStatus

DOWNTIME_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
UP_STATES = ("running", "throttled")


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
    desired = (
        state.desired
        if state.desired.state != WorkerState.FREED
        else Desired(WorkerState.PAUSED, reason="worker restarted; free forgotten")
    )
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
            if self.down_since is None and desired.state in (WorkerState.PAUSED, WorkerState.FREED):
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


@dataclass(frozen=True)
class ProtectionView:
    """One immutable copy of the protection state: what a tick (or /metrics) reads, once."""

    override: Desired | None  # the most severe wish now (None when no episode lasts)
    sources: tuple[str, ...]  # who wishes it: "ram" (the fast path), "gpu"
    gpu_pids: frozenset[int]  # processes frozen for a GPU in the current GPU episode


class Protection:
    """Owns the protection state with its own lock: the fast path and the GPU watch call it, the tick reads view()."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._wishes: dict[str, Desired] = {}  # protection wishes (freed) by source, while episodes last
        self._gpu_pids: set[int] = set()
        self.downtime = DowntimeMeter()  # changed only under the lock, through start/worker_seen
        self._view = ProtectionView(None, (), frozenset())

    def _publish(self) -> None:
        override = max(self._wishes.values(), key=lambda d: d.severity, default=None)
        self._view = ProtectionView(override, tuple(sorted(self._wishes)), frozenset(self._gpu_pids))

    def view(self) -> ProtectionView:
        return self._view  # immutable, replaced whole: no lock needed to read it

    def wish(self, source: str, desired: Desired | None, now: float, pid: int | None = None) -> None:
        """`source` wants the worker at `desired` (None: its cause is gone); `pid` was frozen for it (GPU)."""
        with self.lock:
            if desired is None:
                self._wishes.pop(source, None)
            else:
                self._wishes[source] = desired
                self.downtime.start(now)
                if pid is not None and source == "gpu":
                    self._gpu_pids.add(pid)
            self._publish()

    def gpu_cause_gone(self, alive: Callable[[int], bool]) -> bool:
        """A GPU episode ends once every process it froze has exited; True when it just ended."""
        with self.lock:
            if "gpu" not in self._wishes or any(alive(pid) for pid in self._gpu_pids):
                return False
            self._gpu_pids.clear()
            self._publish()
            return True

    def worker_seen(self, observed_state: str | None, desired: Desired, now: float) -> float | None:
        with self.lock:
            return self.downtime.update(observed_state, desired, now)
