"""The freezer's thawing side (a mixin of Freezer): thaw with per-record error isolation and retries, the records in
frozen.json, the monotonic clock, recovery at start and thawing at shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from guard.protect import frozenfile, thawing
from guard.protect.freezeops import tell_terminal
from guard.protect.procinfo import same_process

if TYPE_CHECKING:
    from guard.protect.freezer import FrozenProcess

log = logging.getLogger("headroom.guard.freezer")
STORE_KEY = "freezer.frozen"  # where guards before frozen.json kept their records: still read (and emptied) at start
THAW_RETRY_SECONDS = 1.0  # a thaw the kernel refused is tried again this often (its record is kept meanwhile)
CLOSE_LOCK_SECONDS = 5.0  # at shutdown, how long to wait for a look that holds the freezer before thawing without it


class ThawMixin:
    """Needs the Freezer's lock, settings, store, procfs, cgroupfs, clock, monotonic, records, boot_id, _frozen, _view,
    _thaw_failed, _exempt, _terminating, outcomes and _note."""

    # --- thawing ------------------------------------------------------------------------------
    def thaw(self, pid: int, reason: str, outcome: str = "manual", verify: bool = False) -> bool:
        """Thaw one frozen process (and what was stopped with it); False when the freezer did not freeze it, or when the
        kernel refused (the record is kept, retried every THAW_RETRY_SECONDS, and `thaw_error(pid)` says why)."""
        with self.lock:
            fp = self._frozen.get(pid)
            if fp is None:
                return False
            result = self._release(fp, verify)
            if result.error is not None:
                self._keep_failed(fp, result, outcome, reason, verify)
                return False
            self._thaw_failed.pop(pid, None)
            self._forget(pid)
            if fp.tty:
                tell_terminal(Path(fp.tty), f"resumed {fp.comm} ({fp.pid}): {reason}")
            self.outcomes[outcome] += 1
            if outcome in ("manual", "no_room_thawed"):
                self._exempt.update(dict(fp.members) or {fp.pid: 0})
            done = result.note if result.note != "thawed" else f"after {self.frozen_seconds(fp):.1f} s"
            self._note("thaw", f"thawed {fp.comm} ({fp.pid}) {done}: {reason}", {**fp.to_json(), "outcome": outcome})
            log.warning("thawed %s (%d): %s", fp.comm, fp.pid, reason)
            return True

    def _keep_failed(self, fp: FrozenProcess, result: thawing.Release, outcome: str, reason: str, verify: bool) -> None:
        """A refused thaw keeps its record (narrowed to what is still stopped) and is retried; said once per record."""
        first = fp.pid not in self._thaw_failed
        self.thaw_failures += 1
        self._thaw_failed[fp.pid] = (result.error, self.monotonic() + THAW_RETRY_SECONDS, outcome, reason, verify)
        if result.left != fp.members:
            self._frozen[fp.pid] = replace(fp, members=result.left)
            self._persist()
        if first:
            log.error("could not thaw %s (%d): %s; the record is kept and the thaw retried", fp.comm, fp.pid,
                      result.error)
            self._note("thaw", f"could not thaw {fp.comm} ({fp.pid}): {result.error}; kept frozen in the records and "
                               f"retried every {THAW_RETRY_SECONDS:g} s (`headroom thaw --all` also retries)",
                       {**fp.to_json(), "outcome": "thaw_failed", "error": result.error})

    def thaw_error(self, pid: int) -> str | None:
        """Why the last thaw of `pid` failed (None when it did not); lock-free, like frozen()."""
        failed = self._thaw_failed.get(pid)
        return failed[0] if failed else None

    def retry_thaws(self) -> None:
        """Try again every refused thaw whose retry time has come."""
        with self.lock:
            now = self.monotonic()
            for pid, (_, due, outcome, reason, verify) in list(self._thaw_failed.items()):
                if now >= due and pid in self._frozen:
                    self.thaw(pid, reason + " (retried)", outcome, verify)
                elif pid not in self._frozen:
                    del self._thaw_failed[pid]

    def thaw_all(self, reason: str, outcome: str = "thawed", verify: bool = False) -> list[FrozenProcess]:
        """Thaw every record; one that fails (or raises) never stops the others."""
        done = []
        with self.lock:
            for fp in list(self._frozen.values()):
                try:
                    if self.thaw(fp.pid, reason, outcome, verify):
                        done.append(fp)
                except Exception:  # noqa: BLE001 a bug on one record must not leave the rest frozen
                    log.exception("thawing %s (%d) failed", fp.comm, fp.pid)
        return done

    def _release(self, fp: FrozenProcess, verify: bool = False) -> thawing.Release:
        """Undo one record's freeze (the one place a new freeze method adds its undo); never raises for the kernel."""
        return thawing.release(fp, self.procfs, self.cgroupfs, verify)

    def _signal_if_same(self, pid: int, start_ticks: int, sig: int) -> bool:
        if not same_process(pid, start_ticks, self.procfs):
            return False  # gone (or dead, not yet reaped), or the pid now belongs to another process
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            return True
        return False

    def _forget(self, pid: int) -> None:
        self._frozen.pop(pid, None)
        self._persist()

    def _persist(self) -> None:
        """Publish the records to readers and write them to frozen.json (before a freeze, after a thaw); never
        raises."""
        for pid, fp in list(self._frozen.items()):
            if fp.frozen_boot is None:  # stamped once, when first recorded (just before the freeze)
                self._frozen[pid] = replace(fp, frozen_boot=self.monotonic(), boot_id=self.boot_id)
        self._view = tuple(sorted(self._frozen.values(), key=lambda fp: fp.frozen_at))
        try:
            frozenfile.write_records(self.records, [fp.to_json() for fp in self._frozen.values()])
        except OSError as err:  # a full disk must never stop a freeze or a thaw
            log.error("could not write the freeze records to %s: %s", self.records, err)

    # --- views --------------------------------------------------------------------------------
    def frozen(self) -> tuple[FrozenProcess, ...]:
        """The records, oldest first; never waits on the lock (a look stuck on /proc must not stall /metrics)."""
        return self._view

    def frozen_seconds(self, fp: FrozenProcess) -> float:
        """How long `fp` has been frozen, on the monotonic clock (the wall clock only for a record from before)."""
        return self.monotonic() - fp.frozen_boot if fp.frozen_boot is not None else self.clock() - fp.frozen_at

    def expired(self, now: float | None = None) -> list[FrozenProcess]:
        """Frozen for freeze_max_seconds (monotonic); a record whose thaw failed is being retried instead."""
        return [
            fp
            for fp in self.frozen()
            if fp.pid not in self._thaw_failed and self.frozen_seconds(fp) >= self.settings.freeze_max_seconds
        ]

    # --- start and stop -----------------------------------------------------------------------
    def recover(self) -> list[FrozenProcess]:
        """At start: thaw everything a previous guard recorded as frozen (in frozen.json, or in the store by an older
        guard). Each is checked against what is there now: a process by pid and start time, a cgroup by a recorded
        member still in it, a record from another boot is dropped. A refused thaw keeps its record and is retried."""
        from guard.protect.freezer import FrozenProcess

        with self.lock:
            items = frozenfile.read_records(self.records) + self._legacy_records()
            records = {}
            for fp in (FrozenProcess.from_json(item) for item in items):
                if fp.boot_id and fp.boot_id != self.boot_id:
                    log.warning("dropped the record of %s (%d): frozen in another boot", fp.comm, fp.pid)
                    continue
                records.setdefault(fp.pid, fp)
            self._frozen.update(records)
            self._persist()  # now in frozen.json whatever their source, before the store key is emptied
            if items:
                with contextlib.suppress(Exception):
                    self.store.set(STORE_KEY, [])
            for fp in records.values():
                try:
                    self.thaw(
                        fp.pid, "recovered at start: a previous guard froze it and stopped", "recovered", verify=True
                    )
                except Exception:  # noqa: BLE001 one bad record never stops the recovery of the others
                    log.exception("recovering %s (%d) failed", fp.comm, fp.pid)
        return list(records.values())

    def _legacy_records(self) -> list[dict]:
        try:
            return list(self.store.get(STORE_KEY, []) or [])
        except Exception as err:  # noqa: BLE001 a damaged store must not stop the recovery from frozen.json
            log.warning("could not read the older freeze records from the store: %s", err)
            return []

    def close(self) -> None:
        """On guard shutdown: thaw everything; what the kernel refuses stays in frozen.json for `headroom thaw --all`
        (the unit's ExecStopPost=) and the next start. A termination in progress is not frozen."""
        if not self.lock.acquire(timeout=CLOSE_LOCK_SECONDS):  # a look stuck mid-pick holds it: thaw from the file
            from guard.protect.recovery import thaw_and_log

            log.error("the freezer is busy (a stuck look); thawing from %s without it", self.records)
            thaw_and_log(self.records.parent)
            return
        try:
            self.thaw_all("the guard is stopping", "shutdown")
            self._terminating.clear()
        finally:
            self.lock.release()
