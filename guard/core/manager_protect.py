"""The manager's protection side: the fast path's wishes, the acting thread, the worker's restarts (a mixin of
Manager)."""

from __future__ import annotations

from guard.core.protection import forget_free, with_override, worker_restarted
from headroom.contract import Desired, WorkerState
from guard.common.types import LeaseStatus
from guard.protect.victim import Protected

RUN_CGROUP_PREFIX = "headroom-run-"  # the cgroup `headroom run` makes for a leased command (headroom/client/isolate.py)


class ProtectionMixin:
    """Needs the Manager's lock, store, clock, state, decision, reconciler, protection, acting and fastpath."""

    @property
    def override(self) -> Desired | None:
        """The most severe protection wish now (None when no episode lasts)."""
        return self.protection.view().override

    @property
    def downtime(self):
        return self.protection.downtime

    @property
    def gpu_pids(self) -> frozenset[int]:
        return self.protection.view().gpu_pids

    def freeze_facts(self) -> Protected:
        """Who the freezer must never freeze, from the published view (never the live state): the worker's own report
        (its pids; its cgroup when a unit of its own) and configured cgroup, and every granted lease's pid and
        cgroup."""
        view = self.view
        trees: dict[int, str] = {}
        cgroups: dict[str, str] = {}
        worker = view.worker
        if worker is not None and self.settings.freeze_protect_worker:
            trees.update({pid: "the worker (its own report)" for pid in worker.pids or ()})
            if worker.own_cgroup and worker.own_cgroup.rsplit("/", 1)[-1].endswith(".service"):
                cgroups[worker.own_cgroup] = "the worker"
            if isinstance(worker.cgroup, dict) and str(worker.cgroup.get("path", "")).startswith("/"):
                cgroups[worker.cgroup["path"]] = "the worker"
        for lease in view.leases:
            if lease.pid and lease.status == LeaseStatus.GRANTED:
                who = f"lease {lease.id} ({lease.holder})"
                trees[lease.pid] = who
                cgroups.update({path: who for path in lease_cgroups(lease.pid)})
        return Protected(trees=trees, cgroups=cgroups)

    def read_worker(self) -> WorkerState | None:
        """The worker's state: read here without an acting thread, else the acting thread's last read (never waits)."""
        state = self.reconciler.read() if self.acting is None else getattr(self.reconciler.observed, "state", None)
        observed = self.reconciler.observed
        if worker_restarted(self._seen_observed, observed, self.decision.desired.state) and self.override is None:
            with self.lock:
                self.state = forget_free(self.state)
            self.store.add_event(
                "worker", "the worker restarted: its old free decision is dropped until a fresh reason"
            )
        self._seen_observed = observed
        if state in (WorkerState.STARTING, WorkerState.WAKING, WorkerState.FREEING, WorkerState.FREED):
            self._grew_at = self.clock()  # it loads (or will load) its engine: growth the guard caused
        return state

    def worker_settling(self) -> bool:
        """Within the prediction window after the worker last started, woke or was freed (it loads after it says
        running)."""
        return self._grew_at is not None and self.clock() - self._grew_at < self.settings.predict_window_seconds

    def protect(self, desired: Desired | None, message: str, data: dict | None = None, source: str = "ram") -> None:
        """A fact from the fast path or the GPU watch: `source` wants the worker `desired` (freed; None once its cause
        is gone). Handed to the protection owner and recorded; the wish goes to the worker at once, and the next tick
        composes it into its one decision (nothing is decided here)."""
        now = self.clock()
        self.protection.wish(source, desired, now, (data or {}).get("pid"))
        with self.lock:
            self.store.add_event("protect", message, data or {}, at=now)
            wish = with_override(self.state, self.decision, desired)[1].desired if desired is not None else None
            self.publish()
        if wish is not None and self.acting is not None:
            self.acting.submit(wish, self.maintenance)

    def start_background(self, fastpath=None, gpu_watch=None) -> None:
        """Control calls on their own thread, and the fast path and the GPU watch (if any) on theirs."""
        import sys

        from guard.targets.actuator import ActingThread

        sys.setswitchinterval(0.001)  # a waking fast path gets the GIL within 1 ms, not the default 5 ms

        if self.reconciler is not None and self.acting is None:
            self.reconciler.read()  # the first tick already knows the worker's state
            self.acting = ActingThread(
                self.reconciler, self.record_actions, self.clock, self.settings.tick_seconds
            ).start()
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
        from guard.protect.procinfo import pid_alive

        if self.protection.gpu_cause_gone(pid_alive):
            self.protect(
                None, "GPU: the frozen processes exited; the worker may run again after the recovery hold", source="gpu"
            )


def lease_cgroups(pid: int) -> list[str]:
    """The cgroups `headroom run` made for a leased command (any hierarchy), read from /proc/PID/cgroup (no
    blocking)."""
    from exporter.units import parse_proc_cgroup

    try:
        paths = parse_proc_cgroup(open(f"/proc/{pid}/cgroup").read()).values()
    except OSError:
        return []
    return sorted({path for path in paths if path.rsplit("/", 1)[-1].startswith(RUN_CGROUP_PREFIX)})


def gpu_froze(manager, event, free_level: int) -> None:
    """The GPU watch's fact (it froze a process) handed on as a wish: the worker is freed while that episode lasts."""
    if event.action != "froze":
        return
    pid, gpu = event.process.pid, event.gpu
    manager.protect(
        Desired(WorkerState.FREED, level=free_level, reason=f"GPU {gpu} freeze level"),
        f"GPU {gpu}: froze {event.process.comm} (pid {pid}); freeing the worker",
        {"pid": pid, "gpu": gpu},
        "gpu",
    )
