"""The cgroup worker target: pause, free and run a worker with no control endpoint through its cgroup (freezer, argv,
signals)."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from guard.protect import cgroupctl
from guard.targets.actuator import Outcome, accepted_status
from guard.common.types import ActionEvent
from guard.protect.procinfo import pid_alive
from guard.targets.cgroup_hierarchies import ANON_SLACK_BYTES, WorkerCgroup, holds_headroom, resolve
from guard.targets.cgroup_steps import run_argv, thaw_recorded, wait_until
from headroom.contract import Desired, EngineStatus, Maintenance, WorkerState, WorkerStatus
from headroom.errors import EXIT_CONFIG, HeadroomError

log = logging.getLogger("headroom.guard.cgroup_worker")
STORE_KEY = "cgroup_worker"  # {"name", "path", "frozen": [{"path", "directory", "version"}], "stopped", "known_pids"}
KILL_WAIT_SECONDS = 5.0  # after SIGKILL, how long the processes get to leave the cgroup


def observed_state(has_processes: bool, frozen: bool, busy: WorkerState | None, holds_memory: bool) -> WorkerState:
    """The contract's state from what the kernel shows: freed only once no process and none of its memory is left."""
    if busy == WorkerState.WAKING and not has_processes:
        return WorkerState.WAKING
    if not has_processes and not holds_memory:
        return WorkerState.FREED
    if busy == WorkerState.FREEING or not has_processes:
        return WorkerState.FREEING
    return WorkerState.PAUSED if frozen else WorkerState.RUNNING


class CgroupWorkerTarget:
    """The same interface as guard.targets.actuator's targets; slow transitions (stop, start) run on one thread of its
    own, in order."""

    kind = "cgroup"

    def __init__(self, cgroup: WorkerCgroup, store, name: str = "", stop_argv: list[str] | None = None,
                 start_argv: list[str] | None = None, stop_timeout: float = 10.0, throttle: str = "refuse"):
        self.cgroup, self.store, self.name = cgroup, store, name or cgroup.path
        self.stop_argv, self.start_argv = stop_argv, start_argv
        self.stop_timeout, self.throttle = stop_timeout, throttle
        self.lock = threading.Lock()
        self.record_lock = threading.Lock()  # one writer of the store record at a time
        self.frozen_items: list[dict] = []  # what is recorded as frozen by this guard
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cgroup-worker")
        self.accepted: Desired | None = None  # the last desired state taken on (echoed as "desired" for the reconciler)
        self.failure: tuple[tuple, str] | None = None  # (desired key, message) of a transition that failed
        self.busy: str | None = None  # "freeing" / "waking" while worker_stop / worker_start runs
        self.maintenance = False
        self.note = ""
        # pid -> GPU bytes, wired to the guard's last snapshot
        self.gpu_processes: Callable[[], dict[int, float]] = dict
        saved = store.get(STORE_KEY, {}) or {}
        same = saved.get("path") == cgroup.path
        self.stopped = bool(saved.get("stopped")) and same  # the guard stopped it and has not started it since
        self.known_pids: set[int] = set(saved.get("known_pids", [])) if same else set()
        self.since = time.time()
        self.recover(saved.get("frozen") or [])

    # --- the guard's state store -----------------------------------------------------------------
    def _record(self, frozen: list[dict] | None = None) -> None:
        """Write what a restarted guard must know (what it froze, whether it stopped the worker), from memory, whole."""
        with self.record_lock:
            if frozen is not None:
                self.frozen_items = frozen
            self.store.set(STORE_KEY, {"name": self.name, "path": self.cgroup.path, "stopped": self.stopped,
                                       "known_pids": sorted(self.known_pids), "frozen": self.frozen_items})

    def recover(self, frozen: list[dict]) -> None:
        """At start: thaw the cgroup a previous guard froze and could not thaw (it was killed); then the policy decides
        afresh."""
        for item in thaw_recorded(frozen):
            message = f"thawed worker cgroup {item['path']}, left frozen by a previous guard that did not exit cleanly"
            log.warning(message)
            data = {**ActionEvent("recover_thaw", "ok", message).data(), "cgroup": item["path"]}
            self.store.add_event("action", message, data)
        self._record(frozen=[])

    # --- the target interface -----------------------------------------------------------------------
    def read(self) -> WorkerStatus:
        pids = self.cgroup.pids()
        memory = self.cgroup.memory()
        gpu_bytes = self._gpu_bytes(pids)
        freezer = self.cgroup.freezer()
        frozen = freezer is not None and cgroupctl.is_frozen(freezer)
        with self.lock:
            if pids and self.stopped and self.busy is None:  # started again by someone else (a person, systemd)
                self.stopped, self.known_pids, self.note = False, set(), ""
                self._record()
            holds = memory.anon_bytes > ANON_SLACK_BYTES or gpu_bytes > 0
            state = observed_state(bool(pids), frozen, self.busy, holds)
            desired = self.accepted
            note = self.note or self._idle_note(pids, state)
        return WorkerStatus(
            state=state, desired=accepted_status(desired), maintenance=Maintenance(on=self.maintenance),
            since=self.since, engine=EngineStatus(kind="cgroup", loaded=bool(pids)), note=note, cgroup={
                "path": self.cgroup.path, "processes": len(pids), "frozen": frozen, "memory_bytes": memory.usage_bytes,
                "anon_bytes": memory.anon_bytes, "shmem_bytes": memory.shmem_bytes, "gpu_bytes": gpu_bytes})

    def _idle_note(self, pids: list[int], state: str) -> str:
        if pids or state != WorkerState.FREED:
            return ""
        if self.stopped and not self.start_argv:
            return f"the guard stopped the worker and has no worker_start: a person must restart it ({self.name})"
        return "" if self.stopped else f"no process in {self.cgroup.path}: the worker is not running"

    def _gpu_bytes(self, pids: list[int]) -> float:
        """GPU memory still held by the worker: its processes, or ones it had that the last GPU listing still shows."""
        members = set(pids)
        listing = self.gpu_processes()
        exited = {pid for pid in self.known_pids & set(listing) if not pid_alive(pid)}  # not a reused pid
        return sum(used for pid, used in listing.items() if pid in members or pid in exited)

    def apply(self, desired: Desired) -> Outcome:
        if desired.state == WorkerState.THROTTLED and self.throttle == "refuse":
            return Outcome("refused", "a cgroup worker cannot be throttled from outside; "
                                      "set guard.worker_cgroup_throttle = \"pause\" to pause it instead")
        with self.lock:
            if self.failure and self.failure[0] == desired.key():
                message, self.failure = self.failure[1], None
                return Outcome("error", message)  # the reconciler backs off, then asks again
            self.accepted = desired
        future = self.executor.submit(self._transition, desired)
        try:
            # freeze and thaw finish at once; stop and start go on in the background
            outcome = future.result(timeout=0.1)
        except concurrent.futures.TimeoutError:
            outcome = Outcome("accepted", f"{desired.describe()} under way")
        # with the status (its accepted desired state), so the reconciler never sends a stop or start under way again
        return replace(outcome, state=self.read()) if outcome.result in ("ok", "accepted") else outcome

    def set_maintenance(self, on: bool, reason: str, retry_after: int) -> Outcome:
        self.maintenance = on
        return Outcome("ok", "a cgroup worker has no maintenance mode of its own; the guard pauses it instead")

    def close(self) -> None:
        """On the guard's exit: nothing it froze stays frozen; a stop or start under way is left to finish."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.frozen_items:
            thaw_recorded(self.frozen_items)
            self._record(frozen=[])

    # --- transitions (on the target's own thread) ------------------------------------------------------
    def _transition(self, desired: Desired) -> Outcome:
        try:
            if desired.state in (WorkerState.PAUSED, WorkerState.THROTTLED):
                return self._pause(desired)
            return self._free(desired) if desired.state == WorkerState.FREED else self._run(desired)
        except (OSError, ValueError) as err:  # a cgroup file that vanished or reads oddly: retried with backoff
            return self._fail(desired, f"{type(err).__name__}: {err}")
        finally:
            with self.lock:
                self.busy = None

    def _fail(self, desired: Desired, message: str) -> Outcome:
        log.warning("cgroup worker %s -> %s failed: %s", self.cgroup.path, desired.describe(), message)
        self.store.add_event("action", f"worker {desired.describe()} failed: {message}",
                             ActionEvent(f"set_{desired.state}", "error", message).data())
        with self.lock:
            self.failure = (desired.key(), message)
            if self.accepted is not None and self.accepted.key() == desired.key():
                self.accepted = None
        return Outcome("error", message)

    def _pause(self, desired: Desired) -> Outcome:
        if self.stopped:
            return Outcome("ok", "the worker is stopped; it stays stopped")
        freezer = self.cgroup.freezer()
        if freezer is None and not self.cgroup.pids():
            return Outcome("ok", f"nothing to pause: no process in {self.cgroup.path}")
        if freezer is None:
            return self._fail(desired, f"no freezer for {self.cgroup.path} (neither cgroup2 nor the v1 freezer has it)")
        self._record(frozen=[{"path": freezer.path, "directory": str(freezer.directory), "version": freezer.version}])
        if cgroupctl.freeze(freezer, timeout=0.25):
            return Outcome("ok", f"froze {self.cgroup.path}")
        return Outcome("accepted", "the kernel has not reported the cgroup frozen yet")

    def _thaw(self) -> None:
        freezer = self.cgroup.freezer()
        if freezer is not None:
            cgroupctl.thaw(freezer)
        self._record(frozen=[])

    def _free(self, desired: Desired) -> Outcome:
        pids = self.cgroup.pids()
        with self.lock:
            self.busy, self.stopped, self.note = "freeing", True, ""
            self.known_pids |= set(pids)
        self._record()
        self._thaw()  # a frozen process cannot act on SIGTERM; it gets the chance to shut down cleanly
        if self.stop_argv:
            how, error = "worker_stop", run_argv(self.stop_argv, self.stop_timeout)
        else:
            how, error = "SIGTERM", None
            self._signal(signal.SIGTERM)
        if not wait_until(lambda: not self.cgroup.pids(), self.stop_timeout):
            left = self._signal(signal.SIGKILL)
            how += f", then SIGKILL to {len(left)} process(es) still there after {self.stop_timeout:g}s"
            if not wait_until(lambda: not self.cgroup.pids(), KILL_WAIT_SECONDS):
                return self._fail(desired, f"{how}: processes {self.cgroup.pids()} are still in {self.cgroup.path}")
        detail = f"stopped the worker ({how})" + (f"; {error}" if error else "")
        data = {**ActionEvent("worker_stop", "ok", detail).data(), "cgroup": self.cgroup.path}
        self.store.add_event("action", detail, data)
        return Outcome("ok", detail)

    def _signal(self, sig: int) -> list[int]:
        reached = []
        for pid in self.cgroup.pids():  # by pid, only processes inside the worker's cgroup
            try:
                os.kill(pid, sig)
                reached.append(pid)
            except (ProcessLookupError, PermissionError):
                continue
        return reached

    def _run(self, desired: Desired) -> Outcome:
        self._thaw()
        if not self.stopped:
            return Outcome("ok", f"thawed {self.cgroup.path}")
        if self.cgroup.pids():
            with self.lock:
                self.stopped, self.known_pids = False, set()
            self._record()
            return Outcome("ok", "the worker was already started again")
        if not self.start_argv:
            return Outcome("ok", "the guard stopped the worker and has no worker_start: a person must restart it "
                                 f"({self.name})")
        with self.lock:
            self.busy = "waking"
        error = run_argv(self.start_argv, self.stop_timeout)
        if error is None and not wait_until(lambda: bool(self.cgroup.pids()), self.stop_timeout):
            error = f"worker_start exited 0 but no process appeared in {self.cgroup.path} within {self.stop_timeout:g}s"
        if error:
            return self._fail(desired, error)
        with self.lock:
            self.stopped, self.known_pids = False, set()
        self._record()
        started = ActionEvent("worker_start", "ok", "started the worker (worker_start)")
        self.store.add_event("action", started.message, started.data())
        return Outcome("ok", started.message)


def build_cgroup_target(guard, store, cgroupfs: Path = Path("/sys/fs/cgroup"),
                        procfs: Path = Path("/proc")) -> CgroupWorkerTarget:
    """The target for `worker_kind = "cgroup"`; refuses a configuration it cannot safely act on (HeadroomError, exit
    2)."""
    value = guard.worker_cgroup
    path = resolve(value, cgroupfs)
    saved = store.get(STORE_KEY, {}) or {}
    if path is None and saved.get("stopped") and saved.get("name") == value:
        # the guard stopped it (systemd removes a stopped unit's cgroup); it is started again later
        path = saved["path"]
    if path is None:
        raise HeadroomError(
            f"guard.worker_cgroup = {value!r}: no such cgroup or systemd unit under {cgroupfs} "
            "(looked in cgroup2, the v1 freezer and v1 memory hierarchies); is the worker running?", EXIT_CONFIG)
    cgroup = WorkerCgroup(path, cgroupfs)
    why = holds_headroom(cgroup, procfs)
    if why:
        raise HeadroomError(f"guard.worker_cgroup = {value!r} (cgroup {path}) holds {why}; freezing or stopping "
                            "it would stop headroom too: put the worker in a cgroup of its own", EXIT_CONFIG)
    if cgroup.exists() and cgroup.freezer() is None:
        raise HeadroomError(f"guard.worker_cgroup = {value!r}: cgroup {path} has no freezer (neither cgroup2 with "
                            "cgroup.freeze nor the v1 freezer has it), so it cannot be paused", EXIT_CONFIG)
    return CgroupWorkerTarget(cgroup, store, value, guard.worker_stop, guard.worker_start,
                              guard.worker_stop_timeout_seconds, guard.worker_cgroup_throttle)
