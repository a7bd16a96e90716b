"""The manager's lease side: a new request, a dry run, serving the queue with backfill, heartbeats and releases (a mixin
of Manager; the plan's arithmetic is guard/core/backfill.py)."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace

from guard.core.backfill import (Blocked, Room, advice, charge, describe, freeing_helps, may_pass, never_fits, room_now,
                            shadow)
from guard.core.leases import Admission, admit, queue_order
from guard.common.types import AdmissionOutcome, Decision, Lease, LeaseStatus
from headroom.contract import WorkerState

FREE_WAIT_SECONDS = 120  # a free_worker request waits at least this long for the worker to be freed


class QueueMixin:
    """Needs the Manager's lock, book, snapshot, decision, settings, reconciler, clock, publish and worker_hold."""

    worker_hold: Room | None = None  # what the worker's processes held at the last tick (None: unknown)

    def leases(self) -> list[Lease]:
        """Active (granted or waiting) leases, from memory; the store is written through on every change."""
        return self.book.leases()

    def get_lease(self, lease_id: str) -> Lease | None:
        """A copy of the lease as it stands (the tick rewrites the live one: a reader must never see half of that)."""
        with self.lock:
            return copy_of(self.book.get(lease_id))

    def admit(self, lease: Lease, decision: Decision | None = None) -> Admission:
        return admit(
            lease, self.snapshot, decision or self.decision, self.leases(), self.settings, self.reconciler is not None
        )

    def blocked_ahead(self, priority: int, now: float) -> list[Blocked]:
        """The waiting requests a new one at `priority` queues behind, each with its shadow time."""
        leases = self.leases()
        room = room_now(self.snapshot, leases, self.settings)
        return [self.blocked(lease, room, leases, now) for lease in queue_order(leases) if lease.priority >= priority]

    def blocked(self, lease: Lease, room: Room, leases: list[Lease], now: float) -> Blocked:
        found = shadow(lease, self.snapshot, room, leases)  # a finite shadow is protected by its spare: no bound needed
        found.hard = math.isinf(found.shadow_at) and self.book.passed_too_long(
            lease.id, now, self.settings.backfill_max_pass_seconds
        )
        return found

    def serve_queue(self, decision: Decision, now: float) -> None:
        """Grant waiting leases in order (priority, then FIFO) against this tick's levels; a later one that fits is
        granted past a blocked one when that does not delay the blocked one's expected start (backfill)."""
        blocked: list[Blocked] = []
        for lease in queue_order(self.leases()):
            admission = self.admit(lease, decision)
            if admission.outcome == AdmissionOutcome.GRANTED and may_pass(lease, admission.gpu, blocked):
                self.book.passed_over([b.lease for b in blocked], now)
                self.book.grant(lease, admission, now)
                charge(blocked, lease, admission.gpu)
                continue
            leases = self.leases()
            room = room_now(self.snapshot, leases, self.settings)
            entry = self.blocked(lease, room, leases, now)
            if self.freed_for_nothing(lease, entry, room, now):
                continue
            self.note_waiting(lease, admission, entry, room, len(blocked), now)
            blocked.append(entry)

    def freed_for_nothing(self, lease: Lease, entry: Blocked, room: Room, now: float) -> bool:
        """The worker was freed for `lease` and even every lease ending would not make room: refuse it now."""
        if not (lease.frees_worker and self.snapshot.worker_state == WorkerState.FREED and math.isinf(entry.shadow_at)):
            return False
        self.book.end(
            lease,
            LeaseStatus.REFUSED,
            f"more than freeing the worker made room for: at most {describe(room)} fits now; ask for that much or less",
            now,
        )
        return True

    def note_waiting(
        self, lease: Lease, admission: Admission, entry: Blocked, room: Room, ahead: int, now: float
    ) -> None:
        """Record why `lease` waits (with what would work instead) and whether it holds the worker freed."""
        frees = lease.frees_worker or (
            admission.needs_free and freeing_helps(lease, self.snapshot, room, self.worker_hold)
        )
        reason = self.waiting_reason(lease, admission, frees, entry, room, ahead, now)
        if (reason, frees) != (lease.reason, lease.frees_worker):
            lease.reason, lease.frees_worker = reason, frees
            self.book.save(lease)

    def waiting_reason(
        self, lease: Lease, admission: Admission, frees: bool, entry: Blocked, room: Room, ahead: int, now: float
    ) -> str:
        why = (
            admission.reason
            if admission.outcome != AdmissionOutcome.GRANTED
            else f"queued behind {ahead} earlier request(s) it would delay"
        )
        if admission.needs_free and not frees:
            why = "freeing the worker would not make room; waiting for leases to end"
        return f"{why}; {advice(lease, entry, room, now, self.worker_hold, self.snapshot)}"

    def new_lease(self, lease_fields: dict, now: float, lease_id: str | None = None) -> Lease:
        return Lease(
            id=lease_id or uuid.uuid4().hex[:16],
            created_at=now,
            expires_at=now + lease_fields["ttl_seconds"],
            **lease_fields,
        )

    def answer(self, lease: Lease, now: float) -> tuple[Admission, list[Blocked]]:
        """What admission says about `lease` now: refused at once when it can never fit, granted only when it delays
        no earlier waiting request (the reason then says so)."""
        ahead = self.blocked_ahead(lease.priority, now)
        if not self.decision.stale and self.snapshot.ok:
            never = never_fits(lease, self.snapshot, self.settings, self.worker_hold)
            if never is not None:
                return never, ahead
        admission = self.admit(lease)
        if admission.outcome == AdmissionOutcome.GRANTED and not may_pass(lease, admission.gpu, ahead):
            return Admission(
                AdmissionOutcome.REFUSED,
                f"{len(ahead)} earlier request(s) are queued ahead and granting this now would delay them",
                admission.gpu,
            ), ahead
        return admission, ahead

    def request(self, lease_fields: dict, wait_seconds: int) -> tuple[Lease | None, Admission, int]:
        """Admit a new request now: granted, queued (lease waiting, with its queue position) or refused."""
        with self.lock:
            now = self.clock()
            lease = self.new_lease(lease_fields, now)
            admission, ahead = self.answer(lease, now)
            if admission.outcome == AdmissionOutcome.GRANTED:
                self.book.passed_over([b.lease for b in ahead], now)
                self.book.grant(lease, admission, now)
                self.publish()
                return copy_of(lease), admission, 0
            never = admission.reason.startswith("can never fit")
            leases = self.leases()
            room = room_now(self.snapshot, leases, self.settings)
            frees = admission.needs_free and freeing_helps(lease, self.snapshot, room, self.worker_hold)
            if admission.stale or never or (wait_seconds <= 0 and not frees):
                self.book.refuse(lease, admission, now)
                self.publish()  # the admission counters readers see
                return None, admission, 0
            lease.frees_worker = frees
            lease.wait_until = now + max(wait_seconds, FREE_WAIT_SECONDS if frees else 0)
            lease.reason = self.waiting_reason(
                lease, admission, frees, self.blocked(lease, room, leases, now), room, len(ahead), now
            )
            self.book.queue(lease, now)
            self.publish()
            return copy_of(lease), admission, len(ahead) + 1

    def check(self, lease_fields: dict) -> Admission:
        """Would `lease_fields` be granted now? Reserves nothing, records nothing (headroom check)."""
        with self.lock:
            now = self.clock()
            return self.answer(self.new_lease(lease_fields, now, "dry-run"), now)[0]

    def touch(self, lease_id: str) -> None:
        """The client of a waiting request is still there (it polls): it keeps its place."""
        with self.lock:
            self.book.touch(lease_id, self.clock())

    def heartbeat(self, lease_id: str, pid: int | None = None) -> Lease | None:
        """A copy of the lease after the heartbeat (None: no such lease)."""
        with self.lock:
            lease = self.book.get(lease_id)
            if lease is None or not lease.active:
                return copy_of(lease)
            self.book.heartbeat(lease, pid, self.clock())
            self.publish()
            return copy_of(lease)

    def release(self, lease_id: str) -> Lease | None:
        """A copy of the lease as released (None: no such lease)."""
        with self.lock:
            lease = self.book.get(lease_id)
            if lease is None or not lease.active:
                return copy_of(lease)
            ended = self.book.end(lease, LeaseStatus.RELEASED, "released by the holder", self.clock())
            self.publish(wake=True)
            return copy_of(ended)


def copy_of(lease: Lease | None) -> Lease | None:
    return replace(lease) if lease is not None else None
