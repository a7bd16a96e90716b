"""The manager's protection side: the fast path's wishes, the acting thread, the worker's restarts (a mixin of Manager)."""

from __future__ import annotations

from guard.protection import forget_free, with_override, worker_restarted
from guard.types import Desired
from headroom.contract import WorkerState


class ProtectionMixin:
    """Needs the Manager's lock, store, clock, state, decision, reconciler, overrides, downtime, acting and fastpath."""

    @property
    def override(self) -> Desired | None:
        """The most severe protection wish now (None when no episode lasts)."""
        return max(self.overrides.values(), key=lambda d: d.severity, default=None)

    def read_worker(self) -> WorkerState | None:
        """The worker's state: read here without an acting thread, else the acting thread's last read (never waits)."""
        state = self.reconciler.read() if self.acting is None else getattr(self.reconciler.observed, "state", None)
        observed = self.reconciler.observed
        if worker_restarted(self._seen_observed, observed, self.decision.desired.state) and self.override is None:
            with self.lock:
                self.state = forget_free(self.state)
            self.store.add_event("worker", "the worker restarted: its old free decision is dropped until a fresh reason")
        self._seen_observed = observed
        if state in (WorkerState.STARTING, WorkerState.WAKING, WorkerState.FREEING, WorkerState.FREED):
            self._grew_at = self.clock()  # it loads (or will load) its engine: growth the guard caused
        return state

    def worker_settling(self) -> bool:
        """Within the prediction window after the worker last started, woke or was freed (it loads after it says running)."""
        return self._grew_at is not None and self.clock() - self._grew_at < self.settings.predict_window_seconds

    def protect(self, desired: Desired | None, message: str, data: dict | None = None, source: str = "ram") -> None:
        """A protection wish from `source` (freed, or None once its cause is gone): recorded, sent to the worker at once."""
        with self.lock:
            now = self.clock()
            if desired is None:
                self.overrides.pop(source, None)
            else:
                self.overrides[source] = desired
            self.store.add_event("protect", message, data or {}, at=now)
            if desired is None:
                return
            self.downtime.start(now)
            self.state, self.decision = with_override(self.state, self.decision, desired)
            wish = self.decision.desired
        if self.acting is not None:
            self.acting.submit(wish, self.maintenance)

    def start_background(self, fastpath=None, gpu_watch=None) -> None:
        """Control calls on their own thread, and the fast path and the GPU watch (if any) on theirs."""
        import sys

        from guard.actuator import ActingThread

        sys.setswitchinterval(0.001)  # a waking fast path gets the GIL within 1 ms, not the default 5 ms

        if self.reconciler is not None and self.acting is None:
            self.reconciler.read()  # the first tick already knows the worker's state
            self.acting = ActingThread(self.reconciler, self.record_actions, self.clock, self.settings.tick_seconds).start()
        if fastpath is not None:
            self.fastpath = fastpath
            fastpath.start()
        if gpu_watch is not None:
            self.gpu_watch = gpu_watch.start()

    def stop_background(self) -> None:
        if getattr(self, "gpu_watch", None) is not None:
            thread, stop = self.gpu_watch
            stop.set()
            thread.join(timeout=5)
        if self.fastpath is not None:
            self.fastpath.close()
        if self.acting is not None:
            self.acting.stop()

    def end_gpu_episode(self) -> None:
        """The GPU freeze's cause is gone once every process it froze has exited: the worker may come back."""
        from guard.fastpath import pid_alive

        if "gpu" in self.overrides and not any(pid_alive(pid) for pid in self.gpu_pids):
            self.gpu_pids.clear()
            self.protect(None, "GPU: the frozen processes exited; the worker may run again after the recovery hold", source="gpu")
