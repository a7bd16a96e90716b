"""The guard's journal on a real full disk (a small tmpfs): protection goes on, nothing is lost, new leases get 507."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from guard.app import Deps, create_app
from guard.core.manager import Manager
from guard.sources.observer import Observer
from guard.common.store import Store, StoreUnavailable
from guard.common.types import Lease
from tests.diskfull import small_disk
from tests.guard.support import GiB, FakeClock, FakeSource, settings

TOKEN = "store-test-token"
PAUSE_AT = {"warn": "40%", "throttle": "30%", "pause": "20%", "free": "5%"}


@pytest.fixture
def disk(tmp_path):
    with small_disk(tmp_path / "state", "2m") as disk:
        yield disk


def lease(lease_id: str, status: str = "granted") -> Lease:
    return Lease(id=lease_id, holder="t", ram_bytes=1, gpu_bytes=0, gpu="any", ttl_seconds=60, created_at=1.0,
                 expires_at=61.0, status=status)


def test_writes_on_a_full_disk_wait_in_memory_and_are_written_once_there_is_room(disk):
    store = Store(disk.path)
    try:
        store.put_lease(lease("aaaa"))
        disk.fill()
        for i in range(50):  # enough rows that the WAL must grow
            assert store.add_event("level", f"event {i} " + "x" * 500) is None or i < 3
        assert not store.health.writable and store.health.full
        assert store.health.errors["event"] >= 1
        waiting = store.events()
        assert waiting[-1]["message"].startswith("event 49") and waiting[-1]["unrecorded"] is True

        store.put_lease(lease("aaaa", "released"))  # an update waits in memory; reads see it
        assert store.get_lease("aaaa").status == "released"
        store.set("maintenance", {"on": True})
        assert store.get("maintenance") == {"on": True}
        with pytest.raises(StoreUnavailable) as refused:  # a new lease must be durable
            store.put_lease(lease("bbbb"))
        assert refused.value.full and "disk is full" in str(refused.value)
        assert store.unrecorded() >= 50

        disk.free()
        assert store.retry()
        assert store.health.writable and store.unrecorded() == 0
        recorded = store.events(limit=1000)
        assert [e["message"][:9] for e in recorded[-3:]] == ["event 47 ", "event 48 ", "event 49 "]
        assert all(isinstance(e["id"], int) for e in recorded)
    finally:
        store.close()
    reopened = Store(disk.path)  # what waited in memory really reached the disk
    try:
        assert reopened.get_lease("aaaa").status == "released" and reopened.get("maintenance") == {"on": True}
        assert len([e for e in reopened.events(limit=1000) if e["message"].startswith("event ")]) == 50
    finally:
        reopened.close()


def test_a_full_disk_does_not_stop_the_guard_deciding_and_shows_everywhere(disk):
    clock = FakeClock()
    source = FakeSource(clock, ram_total_bytes=10 * GiB, ram_available_bytes=8 * GiB)
    manager = Manager(settings(ram={"enter": PAUSE_AT, "grace_seconds": 0, "hold_seconds": 0}, stale_after_seconds=3),
                    Observer(source), Store(disk.path), clock=clock)
    client = TestClient(create_app(None, Deps(manager, TOKEN, run_scheduler=False)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        manager.tick()
        disk.fill()
        created = client.post("/v1/leases", json={"holder": "t", "ram_bytes": "1MiB", "ttl_seconds": 60}, headers=auth)
        assert created.status_code == 507 and "disk is full" in created.json()["detail"], created.text
        assert client.get("/v1/leases").json()["leases"] == []  # nothing half-granted
        source.set(ram_available_bytes=1 * GiB)  # 10 % available: pause
        for _ in range(3):
            clock.advance(0.25)
            manager.tick()
        assert manager.decision.desired.state == "paused", manager.decision

        ready = client.get("/readyz")
        assert ready.status_code == 503 and "disk is full" in ready.json()["reason"]
        metrics = client.get("/metrics").text
        assert 'headroom_guard_store_errors_total{operation="event"}' in metrics
        assert "headroom_guard_store_writable 0.0" in metrics
        view = client.get("/v1/headroom").json()
        assert view["store"]["writable"] is False and view["store"]["unrecorded"] > 0

        source.set(ok=False, error="exporter stopped")  # stale must still be said while nothing can be written
        clock.advance(5)
        manager.tick()
        assert client.get("/v1/headroom").json()["stale"] is True

        disk.free()
        assert manager.store.retry()
        kinds = [e["kind"] for e in client.get("/v1/events", params={"after": 0, "limit": 1000}, headers=auth).json()["events"]]
        assert "level" in kinds and "signals" in kinds
        assert "headroom_guard_store_writable 1.0" in client.get("/metrics").text
    finally:
        manager.store.close()
