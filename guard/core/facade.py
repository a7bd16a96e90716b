"""What the HTTP side may ask of the guard: the published view to read, and a few commands (request, check, heartbeat,
release, maintenance, alert, thaw); never the Manager itself."""

from __future__ import annotations

import asyncio
import time

from guard.core.history import History
from guard.core.leases import Admission
from guard.core.published import GuardView, Published
from guard.common.types import Lease, LeaseStatus
from headroom.contract import Maintenance

LIVENESS_SECONDS = 1.0  # a queued request's long poll checks its client is still there at least this often


class GuardFacade:
    """The routes' one handle on the guard; every answer is a copy or the published view."""

    def __init__(self, manager) -> None:
        self._manager = manager
        self.settings = manager.settings

    # --- reads ------------------------------------------------------------------------------------
    def view(self) -> Published:
        """Everything published, with the freezer's, fast path's and store's summaries (the store's lists its dir)."""
        return self._manager.read()

    def guard_view(self) -> GuardView:
        """Only what the last tick or change published (levels, leases, maintenance): the cheap read."""
        return self._manager.view

    def clock(self) -> float:
        return self._manager.clock()

    def lease(self, lease_id: str) -> Lease | None:
        """A copy of one lease (active or ended)."""
        return self._manager.get_lease(lease_id)

    def events(self, limit: int, after: int = 0, kind: str | None = None) -> list[dict]:
        return self._manager.store.events(limit, after, kind)

    def history(self) -> History:
        return self._manager.history

    def top(self, limit: int) -> dict:
        """Top memory users now (scans /proc: call it off the event loop)."""
        return self._manager.top.view(self._manager.view.snapshot, limit)

    # --- commands ---------------------------------------------------------------------------------
    def request(self, fields: dict, wait_seconds: int) -> tuple[Lease | None, Admission, int]:
        return self._manager.request(fields, wait_seconds)

    def check(self, fields: dict) -> Admission:
        return self._manager.check(fields)

    def heartbeat(self, lease_id: str, pid: int | None = None) -> Lease | None:
        return self._manager.heartbeat(lease_id, pid)

    def release(self, lease_id: str) -> Lease | None:
        return self._manager.release(lease_id)

    def maintenance(self, on: bool, reason: str = "", retry_after_seconds: int = 600) -> Maintenance:
        return self._manager.set_maintenance(on, reason, retry_after_seconds)

    def alert(self, alerts: list[dict]) -> int:
        """Record the alerts and tick at once (a tick does HTTP: call it off the event loop)."""
        return self._manager.alert(alerts)

    def thaw(self, pid: int) -> tuple[bool, str | None]:
        """Thaw a process the guard froze, by hand: (thawed, why the kernel refused when it did)."""
        freezer = self._manager.freezer_in_use()
        if freezer is None:
            return False, None
        if freezer.thaw(pid, "thawed by hand (API)", "manual"):
            return True, None
        return False, freezer.thaw_error(pid)

    async def wait_while_queued(self, lease_id: str, seconds: float, disconnected=None) -> Lease | None:
        """Long-poll: the lease once it leaves 'waiting' or after `seconds`, woken by each publication (not a poll).
        While the client holds the poll open it counts as polling; once it hangs up (`disconnected()`), it stops
        counting and the guard withdraws the request soon after."""
        manager, loop = self._manager, asyncio.get_running_loop()
        deadline = time.monotonic() + seconds
        while True:
            event = asyncio.Event()
            version = manager.published.watch(loop, event)
            manager.touch(lease_id)
            lease = manager.get_lease(lease_id)
            left = deadline - time.monotonic()
            if lease is None or lease.status != LeaseStatus.WAITING or left <= 0:
                manager.published.forget(loop, event)
                return lease
            if version == manager.published.version:  # nothing published since the read: wait for the next one
                try:
                    await asyncio.wait_for(event.wait(), min(left, LIVENESS_SECONDS))
                except asyncio.TimeoutError:
                    pass
            manager.published.forget(loop, event)
            if disconnected is not None and await disconnected():
                return lease
