"""The lease book: the active leases in memory, written through to the store, each change with its event atomically."""

from __future__ import annotations

from collections import Counter
from typing import Callable

from guard.core.leases import Admission
from guard.common.store import Store
from guard.common.types import Lease, LeaseStatus
from headroom.sizes import format_size


class LeaseBook:
    """Owns the active-lease cache and the store's lease table; the caller holds the manager's lock around each call."""

    def __init__(self, store: Store, clock: Callable[[], float], poll_grace_seconds: float = 6.0):
        self.store, self.clock, self.poll_grace_seconds = store, clock, poll_grace_seconds
        self.active: dict[str, Lease] = {lease.id: lease for lease in store.active_leases()}
        self.admissions: Counter = Counter()  # granted / queued / refused, since start (for /metrics)
        now = clock()
        self.seen: dict[str, float] = {
            lease_id: now for lease_id in self.active
        }  # waiting lease -> its client's last poll
        self.passed: dict[str, float] = {}  # waiting lease -> when a later request was first granted past it

    def touch(self, lease_id: str, now: float) -> None:
        if lease_id in self.seen:
            self.seen[lease_id] = now

    def passed_over(self, leases: list[Lease], now: float) -> None:
        for lease in leases:
            self.passed.setdefault(lease.id, now)

    def passed_too_long(self, lease_id: str, now: float, limit_seconds: float) -> bool:
        since = self.passed.get(lease_id)
        return since is not None and now - since >= limit_seconds

    def leases(self) -> list[Lease]:
        """Active (granted or waiting) leases, from memory."""
        return list(self.active.values())

    def get(self, lease_id: str) -> Lease | None:
        lease = self.active.get(lease_id)
        return lease if lease is not None else self.store.get_lease(lease_id)

    def save(
        self, lease: Lease, message: str | None = None, data: dict | None = None, now: float | None = None
    ) -> None:
        """Write `lease` (with a "lease" event when `message` is given, in the same transaction) and update the
        cache."""
        event = (
            ("lease", f"lease {lease.id} ({lease.holder}) {message}", data or {"lease": lease.id}) if message else None
        )
        self.store.put_lease(lease, event, at=now)
        if lease.active:
            self.active[lease.id] = lease
        else:
            self.active.pop(lease.id, None)
        if lease.status != LeaseStatus.WAITING:
            self.seen.pop(lease.id, None)
            self.passed.pop(lease.id, None)

    def expire(self, now: float) -> None:
        """End granted leases whose TTL ran out, queued ones whose wait ran out (also after a restart) and queued ones
        whose client stopped polling (it was killed: it must not be granted, nor hold the worker freed)."""
        for lease in self.leases():
            if lease.status == LeaseStatus.GRANTED and lease.expires_at <= now:
                self.end(lease, LeaseStatus.EXPIRED, "TTL ran out without a heartbeat", now)
            elif lease.status != LeaseStatus.WAITING:
                continue
            elif (lease.wait_until or lease.expires_at) <= now:
                waited = now - lease.created_at
                self.end(lease, LeaseStatus.REFUSED, f"gave up waiting after {waited:.0f} s: {lease.reason}", now)
            elif now - self.seen.setdefault(lease.id, now) > self.poll_grace_seconds:
                self.end(
                    lease,
                    LeaseStatus.REFUSED,
                    f"withdrawn: its client stopped polling for over {self.poll_grace_seconds:g} s",
                    now,
                )

    def end(self, lease: Lease, status: LeaseStatus, reason: str, now: float) -> Lease:
        lease.status, lease.reason, lease.ended_at = status, reason, now
        self.save(lease, f"{status}: {reason}", now=now)
        return lease

    def grant(self, lease: Lease, admission: Admission, now: float) -> None:
        lease.status, lease.gpu_chosen, lease.granted_at = LeaseStatus.GRANTED, admission.gpu, now
        lease.expires_at, lease.reason = now + lease.ttl_seconds, "granted"
        self.save(
            lease,
            f"granted: ram {format_size(lease.ram_bytes)}, gpu {format_size(lease.gpu_bytes)}"
            + (f" on GPU {admission.gpu}" if admission.gpu else ""),
            now=now,
        )
        self.admissions["granted"] += 1

    def queue(self, lease: Lease, now: float) -> None:
        self.seen[lease.id] = now
        self.save(lease, f"queued: {lease.reason}", now=now)
        self.admissions["queued"] += 1

    def refuse(self, lease: Lease, admission: Admission, now: float) -> None:
        """A request refused outright: counted and recorded, nothing stored for the lease."""
        self.admissions["refused"] += 1
        self.store.add_event(
            "admission", f"refused {lease.holder}: {admission.reason}", {"shortfall": admission.shortfall}, at=now
        )

    def heartbeat(self, lease: Lease, pid: int | None, now: float) -> Lease:
        """Extend a granted lease's TTL (a waiting one only counts as polled: its wait is not extended, so a
        heartbeating client cannot hold its place past its wait); a new pid is recorded with its event."""
        message = None
        if pid is not None and pid != lease.pid:
            lease.pid, message = pid, f"used by pid {pid}"
        if lease.status == LeaseStatus.GRANTED:
            lease.expires_at = now + lease.ttl_seconds
        else:
            self.touch(lease.id, now)
        self.save(lease, message, {"lease": lease.id, "pid": pid} if message else None, now=now)
        return lease
