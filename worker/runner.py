"""The runner: one thread owns the engine and drives its loop (add, step, abort), applying control between iterations."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable

from worker.control import check_possible, reached
from worker.engines import Engine
from worker.openai_format import output_line
from worker.store import Store
from worker.types import Counters, Desired, EngineRequest, EngineResult, Maintenance

log = logging.getLogger("headroom.worker.runner")
RETRY_SECONDS = 5.0  # wait before retrying a failed free or wake
PAUSE_MODES = ("abort", "wait", "keep")


class Runner:
    def __init__(self, store: Store, engine: Engine, concurrency: int, on_fatal: Callable[[str], None] | None = None,
                 pause_mode: str = "abort", kill_at: str | None = None):
        self.store, self.engine, self.default_concurrency = store, engine, concurrency
        self.on_fatal = on_fatal  # called when the engine cannot be built at start
        # How a pause treats requests in flight: abort (requeue), wait (let them finish), keep (hold them in the engine).
        self.pause_mode = pause_mode if pause_mode != "keep" or engine.can_keep else "wait"
        self.kill_at = kill_at  # tests only: SIGKILL this process at that point of a take-back (see _kill_point)
        self.default_retry_after = 300  # Retry-After in maintenance when none was given
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # notified on every state change
        self.desired = Desired(at=time.time())
        self.maintenance: Maintenance = store.load_maintenance()
        self.state, self.since = "starting", time.time()
        self.concurrency: int | None = None
        self.free_level: int | None = None
        self.free_method: str | None = None
        self.engine_error: str | None = None
        self.in_flight = 0  # requests the engine holds, counted by the engine after each iteration
        self.in_flight_peak = 0  # the most the engine held at once since the last transition began
        self.counters = Counters()
        self._flight: dict[int, EngineRequest] = {}  # store key -> request, in the order they started
        self._admit = False  # whether queued requests may start now
        self._stepping = False  # whether in-flight requests progress now
        self._generation = 0  # bumped by every accepted PUT
        self._applying = 0  # the generation the runner is acting on
        self._begun = -1  # the last generation the runner has begun to apply
        self._accepted_at = 0.0  # monotonic time the last desired state or maintenance was accepted
        self.last_control_to_idle_seconds: float | None = None  # accepted -> nothing in the engine (pause, free)
        self._queue_hint = True  # the queue may hold work (cleared when a claim comes back short)
        self._ever_loaded = False
        self._retry_at = 0.0
        self._stop = False
        self._poke = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-runner", daemon=True)

    # ---- called from the HTTP side -------------------------------------------------------------
    def start(self) -> None:
        requeued = self.store.requeue_running()
        if requeued:
            log.info("requeued %d requests a previous worker left unfinished", requeued)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop = True
        self.poke()
        self._thread.join(timeout)
        try:
            self.engine.close()
        except Exception:
            log.warning("engine close failed", exc_info=True)

    def poke(self) -> None:
        self._queue_hint = True
        self._poke.set()

    def set_desired(self, desired: Desired) -> int:
        """Accept a desired state (Conflict when impossible); returns its generation for wait_begun()."""
        check_possible(desired, self.engine.free_levels(), self.engine.kind)
        with self.lock:
            if not desired.same_target(self.desired) or self.desired.state == "freed":
                self._retry_at = 0.0
            self.desired = desired
            self._generation += 1
            self._accepted_at = time.monotonic()
            generation = self._generation
        self.poke()
        return generation

    def set_maintenance(self, value: Maintenance) -> int:
        self.store.save_maintenance(value)
        with self.lock:
            self.maintenance = value
            self._generation += 1
            self._accepted_at = time.monotonic()
            generation = self._generation
        self.poke()
        return generation

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch, cancelled = self.store.cancel(batch_id)
        with self.lock:
            self.counters.requests["cancelled"] += cancelled
        return batch

    def wait_begun(self, generation: int, timeout: float) -> bool:
        """Wait until the runner has begun applying `generation` (or reached it); True when reached."""
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

    def snapshot(self) -> dict[str, Any]:
        """The contract's state object (GET /control/state)."""
        with self.lock:
            return {
                "state": self.state, "desired": self.desired.as_dict(), "concurrency": self.concurrency,
                "free_level": self.free_level, "maintenance": self.maintenance.as_dict(),
                "engine": {"kind": self.engine.kind, "model": self.engine.model, "loaded": self.engine.loaded,
                           "free_method": self.free_method, "free_levels": self.engine.free_levels(),
                           "error": self.engine_error},
                "queue": self.store.queue_depth(), "in_flight": self.in_flight, "in_flight_peak": self.in_flight_peak,
                "pause_mode": self.pause_mode, "since": self.since,
                "last_control_to_idle_seconds": self.last_control_to_idle_seconds,
                "last_free_seconds": self.counters.last_free_seconds,
                "last_wake_seconds": self.counters.last_wake_seconds,
            }

    # ---- the runner thread: state ----------------------------------------------------------------
    def _set_state(self, state: str, concurrency: int | None = None) -> None:
        """Publish the state; the generation being applied counts as begun."""
        with self.changed:
            if (state, concurrency) != (self.state, self.concurrency):
                if state != self.state:
                    self.since = time.time()
                    log.info("state %s -> %s", self.state, state)
                self.state, self.concurrency = state, concurrency
            if self._begun < self._applying:
                self._begun = self._applying
                self.in_flight_peak = self.in_flight
                if state in ("paused", "freeing", "freed") and self.in_flight == 0:
                    self.last_control_to_idle_seconds = time.monotonic() - self._accepted_at
            self.changed.notify_all()

    def _observe(self) -> None:
        count = self.engine.in_flight() if self.engine.loaded else 0
        with self.lock:
            self.in_flight = count
            self.in_flight_peak = max(self.in_flight_peak, count)

    def _loop(self) -> None:
        while not self._stop:
            try:
                self._reconcile()
                if self._pass():
                    continue
            except Exception:  # keep the worker alive; the error is in the log and the state object
                log.exception("runner iteration failed")
                time.sleep(1)
            self._poke.wait(0.5)
            self._poke.clear()

    # ---- the runner thread: control between iterations -------------------------------------------
    def _reconcile(self) -> None:
        with self.lock:
            desired, maintenance_on, self._applying = self.desired, self.maintenance.on, self._generation
        if time.monotonic() < self._retry_at:
            return
        if desired.state == "freed":
            self._admit = self._stepping = False
            if self.state == "freed" and self.free_level == desired.level:
                return self._set_state("freed")
            if self.state == "freed" and self._ever_loaded:
                self._wake()  # a different level: wake, then free again at the new one
            self._free(desired.level or 2)
            return
        if not self.engine.loaded:
            self._admit = self._stepping = False
            self._wake()
            if not self.engine.loaded:
                return
        if maintenance_on or desired.state == "paused":
            self._pause()
        elif desired.state == "throttled":
            self._take_back(list(self._flight)[desired.concurrency:], f"throttled to {desired.concurrency}")
            self._admit = self._stepping = True
            self._set_state("throttled", desired.concurrency)
        else:
            self._admit = self._stepping = True
            self._set_state("running", self.default_concurrency)

    def _pause(self) -> None:
        """No request starts; those in flight are aborted and requeued, finish, or stay in the engine (pause_mode)."""
        self._admit = False
        if self.pause_mode == "abort":
            self._take_back(list(self._flight), "paused")
        self._stepping = self.pause_mode == "wait" and bool(self._flight)
        if self._stepping:  # draining: the state says paused once the last one finished
            self._set_state(self.state, self.concurrency)
        else:
            self._set_state("paused")

    def _take_back(self, keys: list[int], why: str) -> None:
        """Abort `keys` in the engine, then requeue them: they restart from scratch and are written once."""
        if not keys:
            return
        self.engine.abort(keys)
        self._kill_point("after_abort")
        self.store.requeue(keys)
        self._kill_point("after_requeue")
        for key in keys:
            self._flight.pop(key, None)
        self._queue_hint = True
        with self.lock:
            self.counters.requeued += len(keys)
        self._observe()
        log.info("%s: aborted and requeued %d requests", why, len(keys))

    def _kill_point(self, point: str) -> None:
        """Tests only (HEADROOM_WORKER_TEST_KILL_AT): die by SIGKILL here, to prove exactly-once across it."""
        if self.kill_at == point:
            log.warning("test kill point %s: SIGKILL", point)
            os.kill(os.getpid(), signal.SIGKILL)

    def _free(self, level: int) -> None:
        if not self.engine.loaded:
            with self.lock:
                self.free_level, self.free_method = level, self.free_method or "not_loaded"
            self._set_state("freed")
            return
        previous = self.state
        self._take_back(list(self._flight), f"freeing at level {level}")
        self._set_state("freeing")
        started = time.monotonic()
        try:
            method = self.engine.free(level)
        except Exception as err:
            log.exception("freeing the engine failed")
            self.engine_error, self._retry_at = f"free failed: {err}", time.monotonic() + RETRY_SECONDS
            self._set_state(previous)
            return
        seconds = time.monotonic() - started
        with self.lock:
            self.free_level, self.free_method, self.engine_error = level, method, None
            self.counters.frees[method] = self.counters.frees.get(method, 0) + 1
            self.counters.free_seconds += seconds
            self.counters.last_free_seconds = seconds
        self._observe()
        log.info("freed the engine at level %d by %s in %.2fs", level, method, seconds)
        self._set_state("freed")

    def _wake(self) -> None:
        first = not self._ever_loaded
        previous = self.state
        self._set_state("starting" if first else "waking")
        started = time.monotonic()
        try:
            self.engine.load() if first else self.engine.wake()
        except Exception as err:
            log.exception("building the engine failed")
            self.engine_error, self._retry_at = f"{'load' if first else 'wake'} failed: {err}", time.monotonic() + RETRY_SECONDS
            self._set_state(previous)
            if first and self.on_fatal:
                self.on_fatal(f"the {self.engine.kind} engine could not be built: {err}")
            return
        seconds = time.monotonic() - started
        with self.lock:
            self._ever_loaded, self.free_level, self.engine_error = True, None, None
            if not first:
                self.counters.wakes += 1
                self.counters.wake_seconds += seconds
                self.counters.last_wake_seconds = seconds
        log.info("engine %s in %.2fs", "built" if first else "woken", seconds)

    # ---- the runner thread: the engine loop ------------------------------------------------------
    def _pass(self) -> bool:
        """Top up to the limit, run one engine iteration; False when there is nothing to do."""
        if not self.engine.loaded:
            return False
        if self._admit:
            self._top_up()
        if not (self._stepping and self._flight):
            self._observe()
            return False
        self._iterate()
        return True

    def _top_up(self) -> None:
        """Start queued requests (production, test, bulk; oldest first) while fewer than the limit are in flight."""
        with self.lock:
            limit = self.concurrency or self.default_concurrency
        room = limit - len(self._flight)
        if room <= 0 or not self._queue_hint:
            return
        _, requests = self.store.claim(room)
        self._queue_hint = len(requests) == room
        if not requests:
            return
        self._flight.update((r.key, r) for r in requests)
        refused = self.engine.add(requests)
        if refused:
            self._commit(refused)

    def _iterate(self) -> None:
        started = time.monotonic()
        try:
            results = self.engine.step()
        except Exception as err:  # the engine itself broke: what it held fails, named
            log.exception("engine iteration failed")
            error = {"code": "engine_error", "message": f"{type(err).__name__}: {err}"}
            keys = list(self._flight)
            self.engine.abort(keys)
            results = [EngineResult(key, 0, None, error) for key in keys]
        seconds = time.monotonic() - started
        if results:
            self._commit(results)
        with self.lock:
            self.counters.steps += 1
            self.counters.iteration_seconds += seconds
        self._observe()

    def _commit(self, results: list[EngineResult]) -> None:
        """Write finished requests in one transaction; if that fails they are requeued (run again, written once)."""
        lines = [(res.key, "completed" if res.ok else "failed", output_line(self._flight.pop(res.key).custom_id, res))
                 for res in results if res.key in self._flight]
        try:
            self.store.finish(lines)
        except Exception:
            log.exception("writing %d results failed; requeueing them", len(lines))
            self.store.requeue(key for key, _, _ in lines)
            self._queue_hint = True
            return
        done = {key for key, _, _ in lines}
        with self.lock:
            for res in (r for r in results if r.key in done):
                self.counters.requests["completed" if res.ok else "failed"] += 1
                self.counters.prompt_tokens += res.prompt_tokens
                self.counters.generated_tokens += res.completion_tokens
