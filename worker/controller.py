"""The controller: the worker's published state and what the HTTP side may ask of it; the engine loop's Board."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from headroom.contract import Desired, Maintenance, WorkerState, WorkerStatus
from worker.batches import RequestStatus
from worker.control import check_possible, reached
from worker.engine_loop import EngineLoop
from worker.engines import ModelEngine
from worker.selfreport import own_cgroup, own_pids
from worker.store import Store
from worker.types import Counters

log = logging.getLogger("headroom.worker.controller")


class Controller:
    """The worker's published state and the HTTP side's calls; one thread (its EngineLoop) drives the engine and
    publishes through the Board methods below."""

    def __init__(
        self,
        store: Store,
        engine: ModelEngine,
        concurrency: int,
        on_fatal: Callable[[str], None] | None = None,
        pause_mode: str = "abort",
        kill_at: str | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
    ):
        # clock: unix seconds for what is published (since, accepted at); timer: seconds for measured durations.
        # Waits on the condition (wait_begun, wait_reached) keep real time: a fake timer could never wake them.
        self.clock, self.timer = clock, timer
        self.store, self.engine = store, engine
        self.default_retry_after = 300  # Retry-After in maintenance when none was given
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # notified on every state change
        self.desired = Desired(reason=None, at=clock())
        self.maintenance: Maintenance = store.load_maintenance()
        self.state, self.since = WorkerState.STARTING, clock()
        self.concurrency: int | None = None
        self.free_level: int | None = None
        self.free_method: str | None = None
        self.engine_error: str | None = None
        self.in_flight = 0  # requests the engine holds, counted by the engine after each iteration
        self.in_flight_peak = 0  # the most the engine held at once since the last transition began
        self.counters = Counters()
        self._generation = 0  # bumped by every accepted PUT
        self._applying = 0  # the generation the controller is acting on
        self._begun = -1  # the last generation the controller has begun to apply
        self._accepted_at = 0.0  # timer() when the last desired state or maintenance was accepted
        self.last_control_to_idle_seconds: float | None = None  # accepted -> nothing in the engine (pause, free)
        self.loop = EngineLoop(self, store, engine, concurrency, pause_mode, kill_at, on_fatal, timer)

    # ---- called from the HTTP side -------------------------------------------------------------
    def start(self) -> None:
        self.loop.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.loop.stop(timeout)

    def poke(self) -> None:
        self.loop.poke()

    def set_desired(self, desired: Desired) -> int:
        """Accept a desired state (Conflict when impossible); returns its generation for wait_begun()."""
        check_possible(desired, self.engine.free_levels(), self.engine.kind)
        with self.lock:
            retry = desired.key() != self.desired.key() or self.desired.state == WorkerState.FREED
            self.desired = desired
            self._generation += 1
            self._accepted_at = self.timer()
            generation = self._generation
        self.loop.poke(retry)
        return generation

    def set_maintenance(self, on: bool, reason: str | None, retry_after_seconds: int | None) -> int | None:
        """Turn maintenance on or off: saved, then applied, under the one lock, so what a restart reads is always the
        last value applied. None when it is already so (nothing to wait for but the state)."""
        with self.lock:
            current = self.maintenance
            if (on, reason, retry_after_seconds) == (current.on, current.reason, current.retry_after_seconds):
                return None
            value = Maintenance(on, reason, retry_after_seconds, current.since if on == current.on else self.clock())
            self.store.save_maintenance(value)
            self.maintenance = value
            self._generation += 1
            self._accepted_at = self.timer()
            generation = self._generation
        self.poke()
        return generation

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch, cancelled = self.store.cancel(batch_id)
        with self.lock:
            self.counters.requests[RequestStatus.CANCELLED] += cancelled
        return batch

    def wait_begun(self, generation: int, timeout: float) -> bool:
        """Wait until the controller has begun applying `generation` (or reached it); True when reached."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self._begun < generation and not self._reached():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            return self._reached()

    def wait_reached(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not self._reached():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
            return True

    def _reached(self) -> bool:
        return reached(self.desired, self.state, self.concurrency, self.free_level, self.maintenance.on)

    def status(self) -> WorkerStatus:
        """The contract's state object (GET /control/state)."""
        with self.lock:
            return WorkerStatus(
                state=self.state,
                desired=self.desired.as_dict(),
                concurrency=self.concurrency,
                free_level=self.free_level,
                maintenance=self.maintenance,
                engine={
                    "kind": self.engine.kind,
                    "model": self.engine.model,
                    "loaded": self.engine.loaded,
                    "free_method": self.free_method,
                    "free_levels": self.engine.free_levels(),
                    "error": self.engine_error,
                },
                queue=self.store.queue_depth(),
                in_flight=self.in_flight,
                in_flight_peak=self.in_flight_peak,
                pause_mode=self.loop.pause_mode,
                since=self.since,
                last_control_to_idle_seconds=self.last_control_to_idle_seconds,
                last_free_seconds=self.counters.last_free_seconds,
                last_wake_seconds=self.counters.last_wake_seconds,
                pids=own_pids(),
                own_cgroup=own_cgroup(),
            )

    def snapshot(self) -> dict[str, Any]:
        """status() as JSON-ready data (what the routes and metrics read)."""
        return self.status().model_dump(mode="json", exclude={"note", "cgroup"})

    # ---- the Board: called by the engine loop's thread -----------------------------------------------
    def wish(self) -> tuple[Desired, bool]:
        with self.lock:
            self._applying = self._generation
            return self.desired, self.maintenance.on

    def held(self) -> tuple[WorkerState, int | None, int | None]:
        with self.lock:
            return self.state, self.concurrency, self.free_level

    def publish(self, state: WorkerState, concurrency: int | None = None) -> None:
        """Publish the state; the generation being applied counts as begun."""
        with self.changed:
            if (state, concurrency) != (self.state, self.concurrency):
                if state != self.state:
                    self.since = self.clock()
                    log.info("state %s -> %s", self.state, state)
                self.state, self.concurrency = state, concurrency
            if self._begun < self._applying:
                self._begun = self._applying
                self.in_flight_peak = self.in_flight
                if state in (WorkerState.PAUSED, WorkerState.FREEING, WorkerState.FREED) and self.in_flight == 0:
                    self.last_control_to_idle_seconds = self.timer() - self._accepted_at
            self.changed.notify_all()

    def observed(self, in_flight: int) -> None:
        with self.lock:
            self.in_flight = in_flight
            self.in_flight_peak = max(self.in_flight_peak, in_flight)

    def freed(self, level: int, method: str | None, seconds: float | None) -> None:
        with self.lock:
            self.free_level = level
            if method is None:  # never loaded: nothing was freed
                self.free_method = self.free_method or "not_loaded"
                return
            self.free_method, self.engine_error = method, None
            self.counters.frees[method] = self.counters.frees.get(method, 0) + 1
            self.counters.free_seconds += seconds or 0.0
            self.counters.last_free_seconds = seconds

    def woke(self, first: bool, seconds: float) -> None:
        with self.lock:
            self.free_level, self.engine_error = None, None
            if not first:
                self.counters.wakes += 1
                self.counters.wake_seconds += seconds
                self.counters.last_wake_seconds = seconds

    def failed(self, error: str | None) -> None:
        with self.lock:
            self.engine_error = error

    def count(self, requeued: int = 0, steps: int = 0, seconds: float = 0.0, results: tuple = ()) -> None:
        """Add to the counters: requests requeued, engine iterations and their seconds, finished requests
        (status, prompt tokens, generated tokens)."""
        with self.lock:
            self.counters.requeued += requeued
            self.counters.steps += steps
            self.counters.iteration_seconds += seconds
            for status, prompt, generated in results:
                self.counters.requests[status] += 1
                self.counters.prompt_tokens += prompt
                self.counters.generated_tokens += generated
