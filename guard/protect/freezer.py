"""The freezer: freeze the process tree that grows, record it (frozen.json), thaw it, never leave one frozen."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

from guard.protect import cgroupctl, frozenfile
from guard.protect.freezeops import describe_freeze, members, move_and_freeze, tell_terminal
from guard.protect.freezer_thaw import STORE_KEY, ThawMixin  # noqa: F401 STORE_KEY: where older guards kept the records
from guard.protect.growth import WINDOW_SECONDS
from guard.protect.procinfo import all_pids, read_stat, same_process, tty_path
from guard.protect.victim import Candidate, Chooser, Passed, Protected, headroom_family

log = logging.getLogger("headroom.guard.freezer")
# How a freeze ended (headroom_guard_freezes_total{outcome}); "failed" is a freeze the kernel refused.
OUTCOMES = ("thawed", "manual", "no_room_thawed", "terminated", "recovered", "shutdown", "failed")


@dataclass(frozen=True)
class FrozenProcess:
    """One frozen process tree."""

    pid: int
    comm: str
    method: str  # "cgroup-v2" | "cgroup-v1" ("sigstop" only in records of an older guard)
    cgroup: str | None  # the frozen cgroup's path in its hierarchy
    frozen_at: float  # wall clock seconds
    reason: str
    rss_bytes: int
    members: tuple[tuple[int, int], ...] = ()  # (pid, start_ticks) of every process frozen with it
    pgid: int = 0  # older records: the process group stopped as a whole
    score: int = 0  # bytes it grew within the window when chosen (RAM, or GPU bytes)
    moved_from: str | None = None  # set when the guard made the cgroup: where its processes go back at the thaw
    passed: tuple[dict, ...] = ()  # the growers passed over, and why
    tty: str | None = None  # the terminal told about the freeze
    frozen_boot: float | None = None  # CLOCK_BOOTTIME seconds when recorded: how long it is frozen (freeze_max_seconds)
    boot_id: str = ""  # the boot it was frozen in: a record from another boot names nothing that still exists

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "FrozenProcess":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["members"] = tuple(tuple(m) for m in values.get("members", ()))
        values["passed"] = tuple(values.get("passed", ()))
        return cls(**values)


class Freezer(ThawMixin):
    """Freezes, thaws and terminates; every freeze is recorded in frozen.json before it happens, and removed after."""

    def __init__(self, settings, store, *, procfs: Path = Path("/proc"), cgroupfs: Path = Path("/sys/fs/cgroup"),
                 clock: Callable[[], float] = time.time, protected_pids: Callable[[], set[int]] = set,
                 worker_pids: Callable[[], set[int]] = set, facts: Callable[[], Protected] = Protected,
                 records: Path | None = None, monotonic: Callable[[], float] | None = None):
        self.settings, self.store, self.procfs, self.cgroupfs, self.clock = settings, store, procfs, cgroupfs, clock
        # Durations run on CLOCK_BOOTTIME (a wall-clock step never ends a freeze early); a test's fake clock drives
        # both.
        self.monotonic = monotonic or (frozenfile.boottime if clock is time.time else clock)
        self.records = records or frozenfile.records_path(Path(store.path).parent)
        self.boot_id = frozenfile.boot_id()
        self.protected_pids, self.worker_pids, self.facts = protected_pids, worker_pids, facts
        self.chooser = Chooser(settings.freeze_method, procfs, cgroupfs)
        self.own = headroom_family(procfs) if settings.freeze_protect_headroom else {}
        self.lock = threading.RLock()
        self._frozen: dict[int, FrozenProcess] = {}
        self._view: tuple[FrozenProcess, ...] = ()  # what readers see: replaced whole, read without the lock
        # pid -> (error, retry at on the monotonic clock, outcome, reason, verify) of a thaw the kernel refused
        self._thaw_failed: dict[int, tuple[str, float, str, str, bool]] = {}
        self.thaw_failures = 0  # refused thaws since start (headroom_guard_thaw_failures_total)
        self._terminating: dict[int, tuple[FrozenProcess, float]] = {}  # pid -> (record, SIGKILL deadline)
        self.outcomes: Counter = Counter({name: 0 for name in OUTCOMES})
        # Thawed by hand or by on_no_room = thaw: the person or the kernel decides now, so it is never frozen again.
        self._exempt: dict[int, int] = {}  # pid -> start_ticks
        self.last_passed: tuple[Passed, ...] = ()  # the growers the last choice passed over

    # --- choosing -----------------------------------------------------------------------------
    def protected(self) -> Protected:
        """Every fact about who is never frozen: headroom, the worker, leases, the given pids, the rules."""
        extra = self.facts()
        pids = {os.getpid(): "headroom's own process (the guard)"}
        pids.update({pid: "a protected process" for pid in self.protected_pids()})
        if self.settings.freeze_protect_worker:
            pids.update({pid: "the worker (it listens on worker_url)" for pid in self.worker_pids()})
        pids.update(extra.pids)
        return Protected(
            pids,
            {**self.own, **extra.trees},
            dict(extra.cgroups),
            tuple(self.settings.freeze_protect) + tuple(extra.rules),
        )

    def pick(self, domain_pids: list[int], growth: dict[int, int]) -> tuple[Candidate | None, list[Passed]]:
        """The biggest grower's tree that may be frozen, and the growers passed over (with why)."""
        with self.lock:
            skip = {pid for fp in self._frozen.values() for pid, _ in fp.members} | set(self._frozen)
            for pid, start in list(self._exempt.items()):
                stat = read_stat(pid, self.procfs)
                if stat is None or stat.start_ticks != start:
                    del self._exempt[pid]  # gone: its pid may be reused by a process that was never thawed
            exempt = frozenset(self._exempt)
        return self.chooser.pick(growth, set(domain_pids), self.protected(), skip | exempt, exempt)

    # --- freezing -----------------------------------------------------------------------------
    def freeze(
        self,
        domain_pids: list[int],
        reason: str,
        now: float | None = None,
        growth: dict[int, int] | None = None,
        listing: Callable[[], list[int]] | None = None,
    ) -> FrozenProcess | None:
        """Pick, record, freeze; None when freezing is off, nothing grows that may be frozen, or the kernel refused.
        `listing` lists the domain afresh (children born during the stop); by default every process."""
        listing = listing or (lambda: all_pids(self.procfs))
        if not self.settings.freeze_enabled:
            return None
        with self.lock:
            candidate, passed = self.pick(domain_pids, growth or {})
            self.last_passed = tuple(passed)
            if candidate is None:
                return None
            fp = self._record(candidate, reason, self.clock() if now is None else now, passed)
            error = self._stop(fp, candidate, listing)
            if error is not None and candidate.moved_from is None:
                # e.g. a cgroup delegated to its user: root without CAP_DAC_OVERRIDE may not write it
                made, why = self.chooser.made(candidate.info, candidate.growth, candidate.tree)
                log.warning(
                    "cgroup freeze of %s failed (%s); %s", fp.cgroup, error, why or "a cgroup of its own instead"
                )
                self._forget(fp.pid)
                if made is not None:
                    candidate = made
                    fp = self._record(candidate, reason, fp.frozen_at, passed)
                    error = self._stop(fp, candidate, listing)
            if error is not None:
                self._forget(fp.pid)
                self.outcomes["failed"] += 1
                self._note("freeze", f"could not freeze {fp.comm} ({fp.pid}): {error}", fp.to_json())
                return None
            fp = self._settled(fp, candidate)
            text = describe_freeze(
                fp.comm,
                fp.pid,
                len(fp.members),
                candidate.growth,
                WINDOW_SECONDS,
                fp.method,
                candidate.moved_from is not None,
                reason,
                passed,
            )
            self._note("freeze", text, fp.to_json(), at=fp.frozen_at)
            log.warning("%s", text)
            return fp

    def _record(self, candidate: Candidate, reason: str, now: float, passed: list[Passed]) -> FrozenProcess:
        info = candidate.info
        fp = FrozenProcess(
            info.pid,
            info.stat.comm,
            candidate.method,
            candidate.cgroup.path,
            now,
            reason,
            info.stat.rss_bytes,
            candidate.members,
            0,
            candidate.growth,
            candidate.moved_from,
            tuple(p.to_json() for p in passed),
        )
        self._frozen[fp.pid] = fp
        self._persist()  # before the freeze: a guard killed right after it still leaves a record to thaw from
        return fp

    def _stop(self, fp: FrozenProcess, candidate: Candidate, listing: Callable[[], list[int]]) -> str | None:
        try:
            if candidate.moved_from is not None:
                done = move_and_freeze(candidate, self.procfs, listing)
            else:
                done = cgroupctl.freeze(candidate.cgroup, timeout=0.5)
            if not done:
                log.warning("cgroup %s not reported frozen within 0.5 s; it stays asked to freeze", fp.cgroup)
        except OSError as err:
            return str(err)
        return None

    def _settled(self, fp: FrozenProcess, candidate: Candidate) -> FrozenProcess:
        """Once frozen: the record names every process in the cgroup, and the job's terminal is told."""
        line = (
            f"froze {fp.comm} ({fp.pid}): it grew {candidate.growth >> 20} MiB while memory ran out; "
            "it resumes by itself once there is room (headroom status)"
        )
        tty = tell_terminal(tty_path(candidate.info.stat.tty_nr), line)
        fp = self._frozen.get(fp.pid, fp)  # as recorded (stamped with the boot-time clock)
        fp = replace(fp, members=members(candidate.cgroup, self.procfs) or fp.members, tty=tty)
        self._frozen[fp.pid] = fp
        self._persist()
        return fp

    def _note(self, kind: str, message: str, data: dict, at: float | None = None) -> None:
        try:
            self.store.add_event(kind, message, data, at=at)
        except Exception as err:  # noqa: BLE001 the same: recording never blocks freezing or thawing
            log.warning("could not record the event %r: %s", message, err)

    # --- no room ------------------------------------------------------------------------------
    def resolve_no_room(self, now: float | None = None) -> list[tuple[str, FrozenProcess]]:
        """Retry refused thaws; on_no_room for freezes past freeze_max_seconds, then SIGKILL terminations past their
        grace; what it did. Every duration is on the monotonic clock (`now` is no longer read)."""
        done: list[tuple[str, FrozenProcess]] = []
        self.retry_thaws()
        with self.lock:
            mono = self.monotonic()
            for pid, (fp, deadline) in list(self._terminating.items()):
                if mono >= deadline or not self._alive(fp):
                    killed = [p for p, start in fp.members if self._signal_if_same(p, start, signal.SIGKILL)]
                    del self._terminating[pid]
                    self.outcomes["terminated"] += 1
                    how = (
                        f"SIGKILL after {self.settings.freeze_terminate_grace_seconds:g} s"
                        if killed
                        else "exited on SIGTERM"
                    )
                    self._note(
                        "thaw", f"terminated {fp.comm} ({fp.pid}): {how}", {**fp.to_json(), "outcome": "terminated"}
                    )
                    done.append(("sigkill" if killed else "exited", fp))
            for fp in self.expired():
                waited = f"no room after {self.frozen_seconds(fp):.1f} s frozen"
                if self.settings.on_no_room == "thaw":
                    self.thaw(fp.pid, waited + " (on_no_room = thaw: the kernel decides)", "no_room_thawed")
                    done.append(("thawed", fp))
                else:
                    self._terminate(fp, mono, waited)
                    done.append(("sigterm", fp))
        return done

    def _terminate(self, fp: FrozenProcess, now: float, why: str) -> None:
        """SIGTERM while still stopped (delivered at once on thaw), then thaw so it can act on it; SIGKILL later."""
        for pid, start in fp.members:
            self._signal_if_same(pid, start, signal.SIGTERM)
        result = self._release(fp)
        if result.error is None:
            self._forget(fp.pid)
        else:  # still frozen: kept and retried; the SIGKILL below comes after the grace all the same
            self._keep_failed(fp, result, "thawed", why + " (thawed to act on SIGTERM)", False)
        self._terminating[fp.pid] = (fp, now + self.settings.freeze_terminate_grace_seconds)
        self._note(
            "thaw",
            f"terminating {fp.comm} ({fp.pid}): {why} (on_no_room = terminate: SIGTERM, "
            f"SIGKILL after {self.settings.freeze_terminate_grace_seconds:g} s)",
            {**fp.to_json(), "outcome": "sigterm"},
        )
        log.warning("terminating %s (%d): %s", fp.comm, fp.pid, why)

    def _alive(self, fp: FrozenProcess) -> bool:
        return any(same_process(pid, start, self.procfs) for pid, start in fp.members)
