"""The real guard process on a full state disk and on corrupt databases (real SQLite files, real exporter, real HTTP)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess

import httpx
import pytest

from guard.common.store import Store
from guard.common.types import Lease
from tests.diskfull import CORRUPTIONS, checkpoint, small_disk
from tests.guard.realstack import MiB, TOKEN, Allocator, Stack, domain_cgroup, start
from tests.guard.test_real import LEVELS, QUIET, mib_for
from tests.helpers import REPO, free_port, need, headroom_cmd, stop_process, wait_for, write_toml

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def full_disk_stack(tmp_path):
    with domain_cgroup(400 * MiB) as cgroup, small_disk(tmp_path / "state", "2m") as disk:
        stack = Stack(tmp_path, cgroup, {"ram_margin": "16MiB", **QUIET,
                                         "ram": {"enter": LEVELS, "band": "5%", "grace_seconds": 0.3, "hold_seconds": 1.0}})
        try:
            yield stack, disk, cgroup
        finally:
            stack.stop()


@pytest.mark.kernel
def test_a_full_state_disk_does_not_stop_protection(full_disk_stack):
    stack, disk, cgroup = full_disk_stack
    disk.fill()
    created = stack.guard.post("/v1/leases", json={"holder": "t", "ram_bytes": "1MiB", "ttl_seconds": 60})
    assert created.status_code == 507 and "disk is full" in created.json()["detail"], created.text

    allocator = Allocator(cgroup)
    try:
        allocator.hold(0)
        allocator.hold(mib_for(cgroup, cgroup.usage(), 0.32))  # below the pause threshold (40 % available)
        wait_for(lambda: stack.worker.get("/control/state").json()["desired"] == {"state": "paused"}, 15,
                 what=f"the worker paused with a full disk; headroom {stack.headroom()}\n{stack.logs()}")
    finally:
        allocator.stop()
    ready = stack.guard.get("/readyz")
    assert ready.status_code == 503 and "disk is full" in ready.json()["reason"], ready.text
    assert 'headroom_guard_store_errors_total{operation="event"}' in stack.guard.get("/metrics").text
    assert "headroom_guard_store_writable 0.0" in stack.guard.get("/metrics").text

    with status_page(stack) as page:  # the status page says it in words
        page.wait_for_selector("#store-line", timeout=10_000)
        assert "cannot write (disk full)" in page.inner_text("#store-line")

    stop_process(stack.procs["exporter"])
    wait_for(lambda: stack.headroom()["stale"] is True, 15, what="stale: true once the exporter is gone")

    disk.free()
    wait_for(lambda: (s := stack.headroom()["store"])["writable"] and s["unrecorded"] == 0, 15, what="the store written again")
    events = stack.guard.get("/v1/events", params={"limit": 1000}).json()["events"]
    assert any(e["kind"] == "level" and "pause" in e["message"] for e in events), events
    assert any(e["kind"] == "signals" and "stale" in e["message"] for e in events), events


@contextlib.contextmanager
def status_page(stack):
    """The guard's status page in Debian's headless chromium."""
    need(importlib.util.find_spec("playwright") is not None, "playwright (tests/requirements.txt)")
    from playwright.sync_api import sync_playwright

    from tests.status.conftest import chromium_path
    from tests.status.test_page import CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(str(stack.guard.base_url).rstrip("/") + "/")
            yield page
        finally:
            browser.close()


def seeded_database(state_dir) -> bytes:
    """A guard database with a lease and events in it, everything checkpointed into the main file."""
    store = Store(state_dir)
    store.put_lease(Lease(id="abcd", holder="t", ram_bytes=1, gpu_bytes=0, gpu="any", ttl_seconds=60, created_at=1.0,
                          expires_at=2.0, status="released"))
    for i in range(200):
        store.add_event("level", f"event {i} " + "x" * 200)
    store.close()
    checkpoint(state_dir / "guard.sqlite3")
    return (state_dir / "guard.sqlite3").read_bytes()


def guard_config(tmp_path, on_corrupt: str) -> tuple:
    ports = {"exporter": free_port(), "guard": free_port()}
    config = write_toml(tmp_path / "headroom.toml", {
        "state_dir": str(tmp_path / "state"), "log_level": "info",
        "exporter": {"listen": f"127.0.0.1:{ports['exporter']}", "collectors": ["memory", "pressure"]},
        "guard": {"listen": f"127.0.0.1:{ports['guard']}", "token": TOKEN, "store_on_corrupt": on_corrupt,
                  "exporter_url": f"http://127.0.0.1:{ports['exporter']}/metrics"}})
    return config, ports


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_a_corrupt_database_is_moved_aside_and_said_everywhere(tmp_path, damage):
    config, ports = guard_config(tmp_path, "move_aside")
    database = tmp_path / "state" / "guard.sqlite3"
    seeded_database(tmp_path / "state")
    CORRUPTIONS[damage](database)
    broken = database.read_bytes()
    procs = [start(headroom_cmd("exporter", "--config", str(config)), tmp_path / "exporter.log"),
             start(headroom_cmd("guard", "--config", str(config)), tmp_path / "guard.log")]
    base = f"http://127.0.0.1:{ports['guard']}"
    try:
        ready = wait_for(lambda: (r := httpx.get(base + "/readyz", timeout=2)).status_code == 200 and r, 30,
                         what=f"the guard ready after moving the file aside\n{(tmp_path / 'guard.log').read_text()}")
        moved = list(database.parent.glob("guard.sqlite3.corrupt-*"))
        assert [p.name for p in moved if not p.name.endswith(("-wal", "-shm"))] and moved[0].read_bytes() == broken
        store = ready.json()["store"]
        assert store["recovered"]["moved_to"] == str(moved[0]) and store["corrupt_files"] == [str(moved[0])]
        events = httpx.get(base + "/v1/events", params={"kind": "store"}, headers={"Authorization": f"Bearer {TOKEN}"}).json()["events"]
        assert len(events) == 1 and "corrupt" in events[0]["message"] and str(moved[0]) in events[0]["message"]
        assert "headroom_guard_store_corrupt_files 1.0" in httpx.get(base + "/metrics").text
        assert "corrupt" in (tmp_path / "guard.log").read_text()
        lease = httpx.post(base + "/v1/leases", json={"holder": "t", "ram_bytes": "1MiB", "ttl_seconds": 60},
                           headers={"Authorization": f"Bearer {TOKEN}"})
        assert lease.status_code in (201, 409), lease.text  # the fresh database works (409: this host is busy)
    finally:
        for proc in procs:
            stop_process(proc)


def test_refuse_exits_before_serving_and_keeps_the_file(tmp_path):
    config, ports = guard_config(tmp_path, "refuse")
    database = tmp_path / "state" / "guard.sqlite3"
    seeded_database(tmp_path / "state")
    CORRUPTIONS["garbage_header"](database)
    broken = database.read_bytes()
    result = subprocess.run(headroom_cmd("guard", "--config", str(config)), capture_output=True, text=True, timeout=60,
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")},
                                 "PYTHONPATH": str(REPO)})
    assert result.returncode == 5, result.stderr
    assert str(database) in result.stderr and "refuse" in result.stderr and "corrupt" in result.stderr
    assert "Traceback" not in result.stderr
    assert database.read_bytes() == broken and not list(database.parent.glob("*.corrupt-*"))
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports['guard']}/readyz", timeout=2)

