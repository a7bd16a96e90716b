"""The controller thread's half of the Controller: the engine loop (add, step, abort) and control applied between iterations."""

from __future__ import annotations

import logging
import os
import signal
import time

from headroom.contract import WorkerState
from worker.batches import RequestStatus
from worker.openai_format import output_line
from worker.types import EngineResult

log = logging.getLogger("headroom.worker.controller")
RETRY_SECONDS = 5.0  # wait before retrying a failed free or wake


class EngineLoop:
    """Mixed into Controller (worker/controller.py), which owns the attributes; only the controller thread calls these."""

    # ---- the controller thread: state ----------------------------------------------------------------
    def _set_state(self, state: WorkerState, concurrency: int | None = None) -> None:
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
                log.exception("controller iteration failed")
                time.sleep(1)
            self._poke.wait(0.5)
            self._poke.clear()

    # ---- the controller thread: control between iterations -------------------------------------------
    def _reconcile(self) -> None:
        with self.lock:
            desired, maintenance_on, self._applying = self.desired, self.maintenance.on, self._generation
        if self.timer() < self._retry_at:
            return
        if desired.state == WorkerState.FREED:
            self._admit = self._stepping = False
            if self.state == WorkerState.FREED and self.free_level == desired.level:
                return self._set_state(WorkerState.FREED)
            if self.state == WorkerState.FREED and self._ever_loaded:
                self._wake()  # a different level: wake, then free again at the new one
            self._free(desired.level or 2)
            return
        if not self.engine.loaded:
            self._admit = self._stepping = False
            self._wake()
            if not self.engine.loaded:
                return
        if maintenance_on or desired.state == WorkerState.PAUSED:
            self._pause()
        elif desired.state == WorkerState.THROTTLED:
            self._take_back(list(self._flight)[desired.concurrency:], f"throttled to {desired.concurrency}")
            self._admit = self._stepping = True
            self._set_state(WorkerState.THROTTLED, desired.concurrency)
        else:
            self._admit = self._stepping = True
            self._set_state(WorkerState.RUNNING, self.default_concurrency)

    def _pause(self) -> None:
        """No request starts; those in flight are aborted and requeued, finish, or stay in the engine (pause_mode)."""
        self._admit = False
        mode = self.pause_mode if self.pause_mode != "keep" or self.engine.can_keep else "wait"
        if mode == "abort":
            self._take_back(list(self._flight), "paused")
        self._stepping = mode == "wait" and bool(self._flight)
        if self._stepping:  # draining: the state says paused once the last one finished
            self._set_state(self.state, self.concurrency)
        else:
            self._set_state(WorkerState.PAUSED)

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
            self._set_state(WorkerState.FREED)
            return
        previous = self.state
        self._take_back(list(self._flight), f"freeing at level {level}")
        self._set_state(WorkerState.FREEING)
        started = self.timer()
        try:
            method = self.engine.free(level)
        except Exception as err:
            log.exception("freeing the engine failed")
            self.engine_error, self._retry_at = f"free failed: {err}", self.timer() + RETRY_SECONDS
            self._set_state(previous)
            return
        seconds = self.timer() - started
        with self.lock:
            self.free_level, self.free_method, self.engine_error = level, method, None
            self.counters.frees[method] = self.counters.frees.get(method, 0) + 1
            self.counters.free_seconds += seconds
            self.counters.last_free_seconds = seconds
        self._observe()
        log.info("freed the engine at level %d by %s in %.2fs", level, method, seconds)
        self._set_state(WorkerState.FREED)

    def _wake(self) -> None:
        first = not self._ever_loaded
        previous = self.state
        self._set_state(WorkerState.STARTING if first else WorkerState.WAKING)
        started = self.timer()
        try:
            self.engine.load() if first else self.engine.wake()
        except Exception as err:
            log.exception("building the engine failed")
            self.engine_error, self._retry_at = f"{'load' if first else 'wake'} failed: {err}", self.timer() + RETRY_SECONDS
            self._set_state(previous)
            if first and self.on_fatal:
                self.on_fatal(f"the {self.engine.kind} engine could not be built: {err}")
            return
        seconds = self.timer() - started
        with self.lock:
            self._ever_loaded, self.free_level, self.engine_error = True, None, None
            if not first:
                self.counters.wakes += 1
                self.counters.wake_seconds += seconds
                self.counters.last_wake_seconds = seconds
        log.info("engine %s in %.2fs", "built" if first else "woken", seconds)

    # ---- the controller thread: the engine loop ------------------------------------------------------
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
        # A short claim means the queue is empty, unless the store could not be written (then retry next pass).
        self._queue_hint = len(requests) == room or not self.store.health.writable
        if not requests:
            return
        self._flight.update((r.key, r) for r in requests)
        refused = self.engine.add(requests)
        if refused:
            self._commit(refused)

    def _iterate(self) -> None:
        started = self.timer()
        try:
            results = self.engine.step()
        except Exception as err:  # the engine itself broke: what it held fails, named
            log.exception("engine iteration failed")
            error = {"code": "engine_error", "message": f"{type(err).__name__}: {err}"}
            keys = list(self._flight)
            self.engine.abort(keys)
            results = [EngineResult(key, 0, None, error) for key in keys]
        seconds = self.timer() - started
        if results:
            self._commit(results)
        with self.lock:
            self.counters.steps += 1
            self.counters.iteration_seconds += seconds
        self._observe()

    def _commit(self, results: list[EngineResult]) -> None:
        """Write finished requests in one transaction; if that fails the store requeues them (run again, written once)."""
        lines = [(res.key, _outcome(res), output_line(self._flight.pop(res.key).custom_id, res))
                 for res in results if res.key in self._flight]
        if not self.store.finish(lines):
            log.error("writing %d results failed; they run again once the store can be written", len(lines))
            self._queue_hint = True
            return
        done = {key for key, _, _ in lines}
        with self.lock:
            for res in (r for r in results if r.key in done):
                self.counters.requests[_outcome(res)] += 1
                self.counters.prompt_tokens += res.prompt_tokens
                self.counters.generated_tokens += res.completion_tokens


def _outcome(res: EngineResult) -> RequestStatus:
    return RequestStatus.COMPLETED if res.ok else RequestStatus.FAILED
