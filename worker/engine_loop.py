"""The engine loop: one thread adds, steps and aborts requests and applies control between iterations.

It owns the engine and the requests in flight; what it publishes and what it is asked goes through a narrow
interface, the Board (worker/controller.py's Controller is one), never through the board's attributes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable, Protocol

from headroom.contract import Desired, WorkerState
from worker.batches import RequestStatus
from worker.engines import ModelEngine
from worker.openai_format import output_line
from worker.store import Store
from worker.types import EngineRequest, EngineResult

log = logging.getLogger("headroom.worker.controller")
RETRY_SECONDS = 5.0  # wait before retrying a failed free or wake


class Board(Protocol):
    """What the loop reads and publishes; the board owns the lock and the published state."""

    def wish(self) -> tuple[Desired, bool]:
        """The desired state and whether maintenance is on; the generation they came with is now being applied."""

    def held(self) -> tuple[WorkerState, int | None, int | None]:
        """The published (state, concurrency, free level)."""

    def publish(self, state: WorkerState, concurrency: int | None = None) -> None: ...

    def observed(self, in_flight: int) -> None: ...

    def freed(self, level: int, method: str | None, seconds: float | None) -> None:
        """The engine is freed at `level` by `method` (None: it was never loaded) in `seconds`."""

    def woke(self, first: bool, seconds: float) -> None: ...

    def failed(self, error: str | None) -> None: ...

    def count(self, requeued: int = 0, steps: int = 0, seconds: float = 0.0, results: tuple = ()) -> None: ...


class EngineLoop:
    """The controller thread: only it calls the engine's add/step/abort/free/wake and touches the requests in flight."""

    def __init__(self, board: Board, store: Store, engine: ModelEngine, concurrency: int, pause_mode: str = "abort",
                 kill_at: str | None = None, on_fatal: Callable[[str], None] | None = None,
                 timer: Callable[[], float] = time.monotonic):
        self.board, self.store, self.engine, self.default_concurrency = board, store, engine, concurrency
        # How a pause treats requests in flight: abort (requeue), wait (let them finish), keep (hold them in the
        # engine). keep falls back to wait where the engine cannot hold requests (its core in another process, remote).
        self.pause_mode = pause_mode
        self.kill_at = kill_at  # tests only: SIGKILL this process at that point of a take-back (see _kill_point)
        self.on_fatal = on_fatal  # called when the engine cannot be built at start
        self.timer = timer
        self._flight: dict[int, EngineRequest] = {}  # store key -> request, in the order they started
        self._admit = False  # whether queued requests may start now
        self._stepping = False  # whether in-flight requests progress now
        self._queue_hint = True  # the queue may hold work (cleared when a claim comes back short)
        self._ever_loaded = False
        self._retry_at = 0.0
        self._stop = False
        self._poke = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-controller", daemon=True)

    # ---- called from other threads -------------------------------------------------------------------
    def start(self) -> None:
        requeued = self.store.requeue_running()
        if requeued:
            log.info("requeued %d requests a previous worker left unfinished", requeued)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop = True
        self.poke()
        self._thread.join(timeout)
        if not self._thread.is_alive() and self._flight:  # requeue now rather than at the next start
            try:
                self.store.requeue(list(self._flight))
            except Exception:
                log.warning("requeueing in-flight requests at stop failed (the next start does it)", exc_info=True)
        try:
            self.engine.close()
        except Exception:
            log.warning("engine close failed", exc_info=True)

    def poke(self, retry: bool = False) -> None:
        """Look again now (with `retry`, also at once after a failed free or wake)."""
        if retry:
            self._retry_at = 0.0
        self._queue_hint = True
        self._poke.set()

    # ---- the controller thread -----------------------------------------------------------------------
    def _observe(self) -> None:
        self.board.observed(self.engine.in_flight() if self.engine.loaded else 0)

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
        desired, maintenance_on = self.board.wish()
        if self.timer() < self._retry_at:
            return
        if desired.state == WorkerState.FREED:
            self._admit = self._stepping = False
            state, _, free_level = self.board.held()
            if state == WorkerState.FREED and free_level == desired.level:
                return self.board.publish(WorkerState.FREED)
            if state == WorkerState.FREED and self._ever_loaded:
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
            self.board.publish(WorkerState.THROTTLED, desired.concurrency)
        else:
            self._admit = self._stepping = True
            self.board.publish(WorkerState.RUNNING, self.default_concurrency)

    def _pause(self) -> None:
        """No request starts; those in flight are aborted and requeued, finish, or stay in the engine (pause_mode)."""
        self._admit = False
        mode = self.pause_mode if self.pause_mode != "keep" or self.engine.can_keep else "wait"
        if mode == "abort":
            self._take_back(list(self._flight), "paused")
        self._stepping = mode == "wait" and bool(self._flight)
        if self._stepping:  # draining: the state says paused once the last one finished
            self.board.publish(*self.board.held()[:2])
        else:
            self.board.publish(WorkerState.PAUSED)

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
        self.board.count(requeued=len(keys))
        self._observe()
        log.info("%s: aborted and requeued %d requests", why, len(keys))

    def _kill_point(self, point: str) -> None:
        """Tests only (HEADROOM_WORKER_TEST_KILL_AT): die by SIGKILL here, to prove exactly-once across it."""
        if self.kill_at == point:
            log.warning("test kill point %s: SIGKILL", point)
            os.kill(os.getpid(), signal.SIGKILL)

    def _free(self, level: int) -> None:
        if not self.engine.loaded:
            self.board.freed(level, None, None)
            self.board.publish(WorkerState.FREED)
            return
        previous = self.board.held()[0]
        self._take_back(list(self._flight), f"freeing at level {level}")
        self.board.publish(WorkerState.FREEING)
        started = self.timer()
        try:
            method = self.engine.free(level)
        except Exception as err:
            log.exception("freeing the engine failed")
            self.board.failed(f"free failed: {err}")
            self._retry_at = self.timer() + RETRY_SECONDS
            self.board.publish(previous)
            return
        seconds = self.timer() - started
        self.board.freed(level, method, seconds)
        self._observe()
        log.info("freed the engine at level %d by %s in %.2fs", level, method, seconds)
        self.board.publish(WorkerState.FREED)

    def _wake(self) -> None:
        first = not self._ever_loaded
        previous = self.board.held()[0]
        self.board.publish(WorkerState.STARTING if first else WorkerState.WAKING)
        started = self.timer()
        try:
            self.engine.load() if first else self.engine.wake()
        except Exception as err:
            log.exception("building the engine failed")
            self.board.failed(f"{'load' if first else 'wake'} failed: {err}")
            self._retry_at = self.timer() + RETRY_SECONDS
            self.board.publish(previous)
            if first and self.on_fatal:
                self.on_fatal(f"the {self.engine.kind} engine could not be built: {err}")
            return
        seconds = self.timer() - started
        self._ever_loaded = True
        self.board.woke(first, seconds)
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
        limit = self.board.held()[1] or self.default_concurrency
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
        self.board.count(steps=1, seconds=seconds)
        self._observe()

    def _commit(self, results: list[EngineResult]) -> None:
        """Write finished requests in one transaction; if that fails the store requeues them (run again, written
        once)."""
        lines = [
            (res.key, _outcome(res), output_line(self._flight.pop(res.key).custom_id, res))
            for res in results
            if res.key in self._flight
        ]
        if not self.store.finish(lines):
            log.error("writing %d results failed; they run again once the store can be written", len(lines))
            self._queue_hint = True
            return
        done = {key for key, _, _ in lines}
        self.board.count(
            results=tuple(
                (_outcome(res), res.prompt_tokens, res.completion_tokens) for res in results if res.key in done
            )
        )


def _outcome(res: EngineResult) -> RequestStatus:
    return RequestStatus.COMPLETED if res.ok else RequestStatus.FAILED
