"""What a reader gets: the published view with the freezer, fast-path and store summaries (all copies), and the
publication long polls wait on."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from guard.protect.freezer import OUTCOMES, FrozenProcess
from guard.core.protection import ProtectionView
from guard.common.types import Decision, GuardState, Lease, Snapshot
from headroom.contract import Maintenance, WorkerStatus


@dataclass(frozen=True)
class HistogramCopy:
    """A histogram as it stood: every bucket at most `count` (the buckets are read before the count)."""

    buckets: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    total: float


def copy_histogram(hist, buckets: tuple[float, ...] | None = None) -> HistogramCopy:
    counts = tuple(hist.counts)  # first: a concurrent observe() then only makes count larger, never smaller
    return HistogramCopy(tuple(buckets if buckets is not None else hist.buckets), counts, hist.count, hist.total)


@dataclass(frozen=True)
class GuardView:
    """What the tick decided, published whole after each tick and each lease, maintenance or protection change, so a
    reader never sees half of one (and never takes the manager's lock)."""

    snapshot: Snapshot
    state: GuardState
    decision: Decision
    leases: tuple[Lease, ...]  # copies: a later heartbeat does not change a published view
    maintenance: Maintenance
    worker: WorkerStatus | None  # the worker's status as last read
    worker_error: str | None
    ticks: int
    wake_held: str | None = None  # why a freed worker's wake is held back (guard/core/wakegate.py); None when it is not
    actions: dict = field(default_factory=dict)  # (action, result) -> calls to the worker since start
    admissions: dict = field(default_factory=dict)  # granted / queued / refused since start
    tick_histogram: HistogramCopy | None = None
    driven: bool = False  # the guard drives a worker
    worker_warning: str | None = None  # a worker enabled in the config that this guard does not drive


@dataclass(frozen=True)
class FreezerSummary:
    """What the freezer holds frozen (with how long each, as of the read) and how its freezes ended."""

    frozen: tuple[tuple[FrozenProcess, float], ...] = ()  # (record, seconds frozen)
    thaw_errors: dict = field(default_factory=dict)  # pid -> why the kernel refused its thaw
    outcomes: dict = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    thaw_failures: int = 0


def summarize_freezer(freezer) -> FreezerSummary | None:
    """From the freezer's own lock-free publication (never its lock: a look stuck on /proc must not stall a reader)."""
    if freezer is None:
        return None
    frozen = tuple((fp, freezer.frozen_seconds(fp)) for fp in freezer.frozen())
    errors = {fp.pid: error for fp, _ in frozen if (error := freezer.thaw_error(fp.pid)) is not None}
    return FreezerSummary(frozen, errors, dict(freezer.outcomes), freezer.thaw_failures)


@dataclass(frozen=True)
class FastSummary:
    """The fast path's loop as it stood: its newest look, interval, gaps, steps, reactions and wake-ups."""

    last_taken_at: float | None
    interval: float
    gaps: HistogramCopy
    max_gap_ratio: float
    steps: HistogramCopy
    reactions: HistogramCopy
    wakeups: int
    stuck_seconds: float


def summarize_fast(fast) -> FastSummary | None:
    if fast is None:
        return None
    last = fast.last
    return FastSummary(last.taken_at if last is not None else None, fast.interval, copy_histogram(fast.gaps),
                       fast.max_gap_ratio, copy_histogram(fast.steps), copy_histogram(fast.reactions), fast.wakeups,
                       fast.stuck_seconds())


@dataclass(frozen=True)
class Published:
    """Everything a reader (routes, page, /metrics, history) gets: each part a copy its owner published whole."""

    guard: GuardView
    protection: ProtectionView
    downtime: HistogramCopy
    freezer: FreezerSummary | None  # None: the guard has no freezer
    fast: FastSummary | None  # None: no fast path
    store: dict  # the store's health (Store.health_view)
    store_errors: dict  # operation -> failed writes
    store_reason: str | None  # why the store cannot be written, in words
    now: float  # the guard's clock at the read


class Publication:
    """A counter bumped at each publication that may move a waiting lease, and the asyncio waiters it wakes (a queued
    request's long poll)."""

    def __init__(self) -> None:
        self.version = 0
        self.lock = threading.Lock()
        self.waiters: set = set()  # (loop, asyncio.Event)

    def bump(self) -> None:
        with self.lock:
            self.version += 1
            waiters, self.waiters = self.waiters, set()
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # its loop has closed: nobody waits there any more
                pass

    def watch(self, loop, event) -> int:
        """Wake `event` (on `loop`) at the next publication; the version now, to compare against."""
        with self.lock:
            self.waiters.add((loop, event))
            return self.version

    def forget(self, loop, event) -> None:
        with self.lock:
            self.waiters.discard((loop, event))
