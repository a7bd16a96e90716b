"""The guard's fast path: a thread that watches the memory domain from the kernel and freezes/frees in milliseconds."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

from guard.protect.domain import DomainObs, DomainReader, Waker
from guard.protect.growth import MIN_GROWTH_BYTES, WINDOW_SECONDS, GrowthTracker, domain_shmem
from guard.common.histogram import Histogram
from guard.protect.procinfo import pid_alive
from guard.common.settings import GuardSettings
from guard.common.signals import Resource
from guard.common.types import Level
from headroom.contract import Desired, WorkerState
from headroom.sizes import format_size

log = logging.getLogger("headroom.guard.fastpath")
GAP_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
EPISODE_FREEZES = 3  # at most this many trees frozen in one episode: more growers than that is not one event


@dataclass(frozen=True)
class FastThresholds:
    """Available-bytes thresholds the fast path compares against (resolved from the ram rule for one domain size)."""

    freeze: float | None  # freeze the grower and free the worker at or below this
    pause: float  # thaw once back above this
    band: float


def thresholds_for(config: GuardSettings, total: float) -> FastThresholds:
    th = config.rules[Resource.RAM].at(total)
    pause = th.enter.get(Level.PAUSE, th.enter.get(Level.FREE, th.enter.get(Level.FREEZE, 0.0)))
    return FastThresholds(th.enter.get(Level.FREEZE), pause, th.band)


def next_interval(available: float, watch_at: float, max_rate: float, shortest: float, longest: float) -> float:
    """earlyoom's rule: sleep no longer than the fastest grower needs to eat the headroom above `watch_at`."""
    return min(longest, max(shortest, (available - watch_at) / max_rate))


def crossing_time(prev: DomainObs | None, cur: DomainObs, threshold: float) -> float:
    """When the available value crossed `threshold`, interpolated between the last look above it and this one."""
    if prev is None or prev.available_bytes <= threshold or prev.available_bytes <= cur.available_bytes:
        return cur.taken_at
    share = (prev.available_bytes - threshold) / (prev.available_bytes - cur.available_bytes)
    return prev.taken_at + share * (cur.taken_at - prev.taken_at)


@dataclass
class Episode:
    """One protection event: from the freeze (or urgent free) to the worker running again."""

    started_at: float
    crossed_at: float
    available_at_start: float
    pids: set[int] = field(default_factory=set)  # processes frozen in this episode
    max_available: float = 0.0  # highest available seen while something was frozen: start + what freeing gave back
    worker_bytes: float = 0.0  # what the worker takes back when it wakes, as known when the episode began
    thawed_at: float | None = None  # the last thaw: a thawed grower may go on taking the room it was frozen for
    cause_ended_at: float | None = None
    thaws: int = 0
    last_try_available: float = float("inf")  # available at the last freeze attempt (reset by a thaw)

    @property
    def footprint(self) -> float:
        """What the worker takes back when it wakes: its RSS at the start, or what freeing it gave back as seen from
        the domain while the grower was frozen, whichever is larger."""
        return max(self.worker_bytes, self.max_available - self.available_at_start, 0.0)


def cause_gone(episode: Episode, obs: DomainObs, th: FastThresholds, alive: Callable[[int], bool], frozen: int,
               growing: Callable[[set[int]], bool] = lambda pids: False) -> bool:
    """Nothing is frozen, and either every process frozen in the episode exited, or the thawed ones have been quiet for
    the growth window and the worker fits back with the band. A thawed grower that still grows takes the room the
    worker's wake would count on: both claiming it is how a wake and a load meet in an OOM kill."""
    if frozen:
        return False
    live = {pid for pid in episode.pids if alive(pid)}
    if episode.pids and not live:
        return True
    thawed_recently = episode.thawed_at is not None and obs.taken_at - episode.thawed_at < WINDOW_SECONDS
    if live and (thawed_recently or growing(live)):
        return False
    return obs.available_bytes - episode.footprint >= th.pause + th.band


class FastPath:
    """Observe the domain adaptively; at the freeze level freeze the grower and free the worker; thaw at once after."""

    def __init__(
        self,
        settings: GuardSettings,
        reader: DomainReader,
        manager,
        freezer=None,
        waker: Waker | None = None,
        clock: Callable[[], float] = time.time,
        alive: Callable[[int], bool] = pid_alive,
        worker_bytes: Callable[[], float] = lambda: 0.0,
    ):
        self.settings, self.reader, self.manager, self.freezer, self.clock, self.alive = (
            settings,
            reader,
            manager,
            freezer,
            clock,
            alive,
        )
        self.worker_bytes = worker_bytes
        self.waker = waker or Waker(reader, settings.fast_path_notify)
        self.growth = GrowthTracker(getattr(reader, "procfs", None) or Path("/proc"), domain_shmem(reader))
        self.max_rate = float(settings.fast_path_max_rate)
        self.last: DomainObs | None = None  # the latest look (published; read by the manager and /metrics)
        self.interval = settings.tick_seconds
        self.episode: Episode | None = None
        self.gaps = Histogram(GAP_BUCKETS)  # time between consecutive looks
        self.reactions = Histogram(GAP_BUCKETS)  # threshold crossing -> freeze (or urgent free) done
        self.steps = Histogram(GAP_BUCKETS)  # how long one look (and what it did: a freeze, a thaw) took
        self.max_gap_ratio = 0.0  # the worst gap relative to the interval planned for it
        self.wakeups = 0
        self.step_started: float | None = None  # monotonic start of the look in progress (None between looks)
        self.looked_at = time.monotonic()  # monotonic end of the last look: /readyz and the watchdog read its age
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    # --- the loop -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.freezer is not None:
            self.growth.start(self.reader.pids, self.clock)  # who grows, sampled beside the loop
        self.thread = threading.Thread(target=self.run, name="headroom-fastpath", daemon=True)
        self.thread.start()

    def run(self) -> None:
        _raise_priority()
        while not self._stop.is_set():
            started = time.perf_counter()
            self.step_started = time.monotonic()
            try:
                self.step()
                planned = self.interval
            except Exception:  # one bad look must not end protection
                log.exception("fast path step failed")
                planned = self.settings.tick_seconds
            self.looked_at, self.step_started = time.monotonic(), None
            self.steps.observe(time.perf_counter() - started)
            if self.waker.wait(planned):
                self.wakeups += 1

    def stuck_seconds(self) -> float:
        """How long since the fast path last finished a look (0 while it keeps looking): a look that blocks (a /proc
        read on a process stuck in the kernel, a lock) grows this; /readyz and the watchdog turn it into a restart."""
        if self.thread is None:
            return 0.0
        age = time.monotonic() - self.looked_at
        return age if age > self.settings.tick_seconds + 1.0 or not self.thread.is_alive() else 0.0

    def stop(self) -> None:
        self._stop.set()
        self.growth.stop()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.waker.close()

    # --- one iteration --------------------------------------------------------------------------
    def step(self) -> DomainObs | None:
        obs = self.reader.read()
        if obs is None:
            self.interval = self.settings.tick_seconds
            return None
        prev, self.last = self.last, obs
        if prev is not None:
            gap = obs.taken_at - prev.taken_at
            self.gaps.observe(gap)
            self.max_gap_ratio = max(self.max_gap_ratio, gap / max(self.interval, 1e-3))
        th = thresholds_for(self.settings, obs.total_bytes)
        if self.freezer is not None:
            self.freezer.resolve_no_room(obs.taken_at)
            self.growth.set_near(obs.available_bytes <= th.pause or self.episode is not None)
            if self.growth.thread is None and self.growth.due(obs.taken_at, self.growth.near):
                self.growth.sample(self.reader.pids(), obs.taken_at)  # no sampler thread (driven step by step)
        if th.freeze is not None and obs.available_bytes <= th.freeze:
            self.protect(prev, obs, th)
        elif self.episode is not None:
            self.recover(obs, th)
        watch_at = th.freeze if th.freeze is not None else th.pause
        self.interval = next_interval(
            obs.available_bytes,
            watch_at,
            self.max_rate,
            self.settings.fast_path_min_interval_seconds,
            self.settings.tick_seconds,
        )
        self.waker.arm(self.usage_thresholds(obs, th))
        return obs

    def usage_thresholds(self, obs: DomainObs, th: FastThresholds) -> list[int]:
        """Usage values (v1 thresholds) at which the kernel wakes the loop: the freeze and the pause crossings."""
        values = [th.pause] + ([th.freeze] if th.freeze is not None else [])
        return [int(obs.total_bytes - value) for value in values]

    def protect(self, prev: DomainObs | None, obs: DomainObs, th: FastThresholds) -> None:
        """At the freeze level: freeze the process the kernel would kill (once per further drop) and free the worker."""
        ep = self.episode
        drop = max(32 * 2**20, 0.01 * obs.total_bytes)
        if ep is not None and obs.available_bytes > ep.last_try_available - drop:
            return  # this crossing is handled; freeze another only if the domain keeps falling
        crossed = crossing_time(prev, obs, th.freeze)
        reason = f"{format_size(obs.available_bytes)} available <= freeze threshold {format_size(th.freeze)}"
        self.free_now(Desired(WorkerState.FREED, level=2, reason=f"freeze level: {reason}"))
        frozen = None
        if self.freezer is not None and not self.settings.dry_run and (ep is None or len(ep.pids) < EPISODE_FREEZES):
            pids = self.reader.pids()
            frozen = self.freezer.freeze(
                pids, reason, obs.taken_at, growth=self.growth.growth(pids, obs.taken_at), listing=self.reader.pids
            )
        if ep is None:
            ep = self.episode = Episode(
                started_at=obs.taken_at,
                crossed_at=crossed,
                available_at_start=obs.available_bytes,
                max_available=obs.available_bytes,
                worker_bytes=self.worker_bytes(),
            )
        else:
            ep.available_at_start = min(ep.available_at_start, obs.available_bytes)
        ep.last_try_available = obs.available_bytes
        if frozen is not None:
            ep.pids.add(frozen.pid)
        done = self.clock()
        self.reactions.observe(max(0.0, done - crossed))
        what = f"froze {frozen.comm} (pid {frozen.pid})" if frozen is not None else self.nothing_frozen()
        self.manager.protect(
            Desired(WorkerState.FREED, level=2, reason=f"freeze level: {reason}"),
            f"fast path: {what}; freeing the worker ({reason}); reaction {1000 * (done - crossed):.0f} ms",
            {"crossed_at": crossed, "acted_at": done, "pid": frozen.pid if frozen else None},
        )

    def free_now(self, desired: Desired) -> None:
        """The worker's free goes out first: before the freeze is chosen, recorded or confirmed, past any backoff."""
        acting = getattr(self.manager, "acting", None)
        if acting is not None:
            acting.submit(desired, self.manager.maintenance, urgent=True)

    def nothing_frozen(self) -> str:
        """Why this crossing froze nothing (the worker is freed all the same)."""
        passed = self.freezer.last_passed if self.freezer is not None else ()
        if self.freezer is None or self.settings.dry_run:
            return "nothing frozen (freezing is off)"
        if self.episode is not None and len(self.episode.pids) >= EPISODE_FREEZES:
            return f"nothing frozen ({EPISODE_FREEZES} trees frozen in this episode already)"
        if not passed:
            return "nothing frozen (no process grew enough to matter)"
        return "nothing frozen (" + "; ".join(f"{p.comm} ({p.pid}): {p.why}" for p in passed[:3]) + ")"

    def recover(self, obs: DomainObs, th: FastThresholds) -> None:
        """Thaw as soon as the domain is back above the pause threshold; end the episode once the cause is gone."""
        ep = self.episode
        frozen = self.freezer.frozen() if self.freezer is not None else ()
        if frozen:  # growth is stopped: a rise is what freeing the worker gave back
            ep.max_available = max(ep.max_available, obs.available_bytes)
        if frozen and obs.available_bytes > th.pause:
            thawed = self.freezer.thaw_all(f"{format_size(obs.available_bytes)} available, above the pause threshold")
            ep.thaws, ep.last_try_available = ep.thaws + len(thawed), float("inf")
            ep.thawed_at = obs.taken_at if thawed else ep.thawed_at
            frozen = self.freezer.frozen()
        if cause_gone(ep, obs, th, self.alive, len(frozen), self.still_growing):
            ep.cause_ended_at = obs.taken_at
            self.episode = None
            self.manager.protect(
                None,
                f"fast path: the cause is gone ({format_size(obs.available_bytes)} available); "
                f"the worker may run again after the recovery hold",
                {"episode_started_at": ep.started_at},
            )

    def still_growing(self, pids: set[int]) -> bool:
        """Whether any of `pids` grew by what matters within the growth window (the sampler's latest look)."""
        grown = self.growth.growth(None, self.clock())
        return any(grown.get(pid, 0) >= MIN_GROWTH_BYTES for pid in pids)

    def close(self) -> None:
        """Stop the loop and thaw whatever is frozen (guard shutdown)."""
        self.stop()
        if self.freezer is not None:
            self.freezer.close()


def _raise_priority() -> None:
    """Ask for a better nice value for this thread only (Linux nice is per thread); fine to be refused."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
    except (OSError, AttributeError):
        pass
