"""The runner: one thread owns the engine, applies the desired state between steps and runs steps from the store."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from worker.control import check_possible, reached
from worker.engines import Engine
from worker.openai_format import output_line
from worker.store import Store
from worker.types import Counters, Desired, EngineResult, Maintenance

log = logging.getLogger("headroom.worker.runner")
RETRY_SECONDS = 5.0  # wait before retrying a failed free or wake


class Runner:
    def __init__(self, store: Store, engine: Engine, concurrency: int, on_fatal: Callable[[str], None] | None = None):
        self.store, self.engine, self.default_concurrency = store, engine, concurrency
        self.on_fatal = on_fatal  # called when the engine cannot be built at start
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
        self.in_flight = 0
        self.counters = Counters()
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
        self._poke.set()

    def set_desired(self, desired: Desired) -> None:
        """Accept a desired state (Conflict when impossible); the runner applies it between steps."""
        check_possible(desired, self.engine.free_levels(), self.engine.kind)
        with self.lock:
            if not desired.same_target(self.desired) or self.desired.state == "freed":
                self._retry_at = 0.0
            self.desired = desired
        self.poke()

    def set_maintenance(self, value: Maintenance) -> None:
        self.store.save_maintenance(value)
        with self.lock:
            self.maintenance = value
        self.poke()

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch, cancelled = self.store.cancel(batch_id)
        with self.lock:
            self.counters.requests["cancelled"] += cancelled
        return batch

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
                "queue": self.store.queue_depth(), "in_flight": self.in_flight, "since": self.since,
                "last_free_seconds": self.counters.last_free_seconds,
                "last_wake_seconds": self.counters.last_wake_seconds,
            }

    # ---- the runner thread ---------------------------------------------------------------------
    def _set_state(self, state: str, concurrency: int | None = None) -> None:
        with self.changed:
            if (state, concurrency) != (self.state, self.concurrency):
                if state != self.state:
                    self.since = time.time()
                    log.info("state %s -> %s", self.state, state)
                self.state, self.concurrency = state, concurrency
            self.changed.notify_all()

    def _loop(self) -> None:
        while not self._stop:
            try:
                self._reconcile()
                if self._runnable() and self._run_step():
                    continue
            except Exception:  # keep the worker alive; the error is in the log and the state object
                log.exception("runner step failed")
                time.sleep(1)
            self._poke.wait(0.5)
            self._poke.clear()

    def _runnable(self) -> bool:
        with self.lock:
            return self.state in ("running", "throttled") and self.engine.loaded

    def _reconcile(self) -> None:
        with self.lock:
            desired, maintenance_on = self.desired, self.maintenance.on
        if time.monotonic() < self._retry_at:
            return
        if desired.state == "freed":
            if self.state == "freed" and self.free_level == desired.level:
                return
            if self.state == "freed" and self._ever_loaded:
                self._wake()  # a different level: wake, then free again at the new one
            self._free(desired.level or 2)
            return
        if not self.engine.loaded:
            self._wake()
            if not self.engine.loaded:
                return
        if maintenance_on or desired.state == "paused":
            self._set_state("paused")
        elif desired.state == "throttled":
            self._set_state("throttled", desired.concurrency)
        else:
            self._set_state("running", self.default_concurrency)

    def _free(self, level: int) -> None:
        if not self.engine.loaded:
            with self.lock:
                self.free_level, self.free_method = level, self.free_method or "not_loaded"
            self._set_state("freed")
            return
        previous = self.state
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

    def _run_step(self) -> bool:
        with self.lock:
            limit = self.concurrency or self.default_concurrency
        step, requests = self.store.claim(limit)
        if not requests:
            return False
        with self.lock:
            self.in_flight = len(requests)
        try:
            results = self.engine.run(requests)
        except Exception as err:  # the engine itself broke: these requests fail, named
            log.exception("step %d failed in the engine", step)
            error = {"code": "engine_error", "message": f"{type(err).__name__}: {err}"}
            results = [EngineResult(r.key, 0, None, error) for r in requests]
        by_key = {r.key: r for r in requests}
        if not self.store.finish((res.key, "completed" if res.ok else "failed", output_line(by_key[res.key].custom_id, res))
                                 for res in results):  # not committed: the store queues them again once it can write
            with self.lock:
                self.in_flight = 0
            return False
        self._count(results)
        return True

    def _count(self, results: list[EngineResult]) -> None:
        with self.lock:
            self.in_flight = 0
            self.counters.steps += 1
            for res in results:
                self.counters.requests["completed" if res.ok else "failed"] += 1
                self.counters.prompt_tokens += res.prompt_tokens
                self.counters.generated_tokens += res.completion_tokens
