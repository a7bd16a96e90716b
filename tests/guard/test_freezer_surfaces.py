"""A freeze seen everywhere a person looks: API, /metrics, `headroom status`, --watch, the status page; `headroom thaw`."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import threading

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from guard.app import Deps, create_app
from guard.cli import fetch_status, render
from guard.protect.freezer import Freezer
from guard.http.watch import screen
from headroom.serving import bind, make_server
from tests.guard.freezing import counting, grew, need_freezer_root, start_counter, stop
from tests.guard.support import GiB
from tests.helpers import REPO, free_port, headroom_cmd, need, wait_for


TOKEN = "freezer-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def frozen(make_manager, source, tmp_path):
    """A manager whose freezer holds a real counter (started here, in its own process group) frozen."""
    need_freezer_root()
    manager = make_manager(ram_margin=0, gpu_margin=0, ram={"enter": {}}, predict={"enter": {}})
    source.set(ram_available_bytes=16 * GiB)
    manager.freezer = Freezer(manager.settings, manager.store, clock=manager.clock)
    grower, outs = start_counter(tmp_path, "grower")
    try:
        fp = manager.freezer.freeze([grower.pid], "ram 120 MiB free, below the freeze threshold 150 MiB",
                                    growth=grew(grower.pid))
        assert fp is not None and not counting(outs[0])
        manager.tick()
        yield manager, grower, outs[0]
    finally:
        manager.freezer.close()
        stop(grower)


@pytest.mark.kernel
def test_api_metrics_and_manual_thaw(frozen):
    manager, grower, out = frozen
    with TestClient(create_app(None, Deps(manager, TOKEN, run_scheduler=False)), raise_server_exceptions=False) as api:
        listed = api.get("/v1/frozen").json()
        assert [p["pid"] for p in listed["processes"]] == [grower.pid] and listed["on_no_room"] == "thaw"
        assert api.get("/v1/headroom").json()["frozen"]["processes"][0]["method"] == "cgroup-v1"
        why = api.get("/v1/frozen").json()["processes"][0]["why"]
        assert why.startswith("grew 64.0 MiB: ram 120 MiB free") and "cgroup the guard made" in why
        text = api.get("/metrics").text
        assert "headroom_guard_frozen 1.0" in text and 'headroom_guard_freezes_total{outcome="manual"} 0.0' in text
        assert api.post(f"/v1/frozen/{grower.pid}/thaw").status_code == 401, "thawing needs the token"
        bad = api.post("/v1/frozen/abc/thaw", headers=AUTH)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["path", "pid"]
        assert api.post("/v1/frozen/0/thaw", headers=AUTH).status_code == 422
        missing = api.post(f"/v1/frozen/{grower.pid + 1}/thaw", headers=AUTH)
        assert missing.status_code == 404 and "not frozen" in missing.json()["detail"][0]["msg"]
        assert not counting(out), "a refused thaw thawed it anyway"
        done = api.post(f"/v1/frozen/{grower.pid}/thaw", headers=AUTH)
        assert done.status_code == 200 and done.json()["frozen"]["processes"] == []
        assert counting(out)
        text = api.get("/metrics").text
        assert "headroom_guard_frozen 0.0" in text and 'headroom_guard_freezes_total{outcome="manual"} 1.0' in text
        kinds = [e["kind"] for e in api.get("/v1/events", headers=AUTH).json()["events"]]
        assert "freeze" in kinds and "thaw" in kinds


@pytest.fixture
def served(frozen):
    """The same app on a real socket (uvicorn in a thread), for the CLI and the browser."""
    manager = frozen[0]
    listen = f"127.0.0.1:{free_port()}"
    server = make_server(create_app(None, Deps(manager, TOKEN, run_scheduler=False)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [bind(listen, "guard")]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, what="the guard app serving")
    try:
        yield f"http://{listen}", frozen
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.kernel
def test_status_watch_and_headroom_thaw(served, tmp_path):
    base, (manager, grower, out) = served
    status = fetch_status(base, 10, full=True)
    assert f"FROZEN: pid {grower.pid}" in render(status) and f"headroom thaw {grower.pid}" in render(status)
    console = Console(record=True, width=160)
    console.print(screen(status, 160))
    assert f"FROZEN  pid {grower.pid}" in console.export_text()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HEADROOM_TOKEN": TOKEN, "HEADROOM_STATE_DIR": str(tmp_path / "cli")}
    thaw = subprocess.run(headroom_cmd("thaw", str(grower.pid), "--url", base), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert thaw.returncode == 0 and f"thawed {grower.pid}" in thaw.stdout, thaw.stderr
    assert counting(out) and "FROZEN" not in render(fetch_status(base, 10))
    again = subprocess.run(headroom_cmd("thaw", str(grower.pid), "--url", base), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 1 and "is not frozen by the guard" in again.stderr
    assert manager.freezer.freeze([grower.pid], "again", growth=grew(grower.pid)) is None, "thawed by hand, it is never frozen again"


@pytest.mark.kernel
def test_status_page_shows_the_frozen_process(served):
    need(importlib.util.find_spec("playwright") is not None, "playwright (tests/requirements.txt)")
    from tests.status.conftest import chromium_path
    from tests.status.test_page import CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    base, (manager, grower, _) = served
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(base + "/")
            page.wait_for_function("Number(document.body.dataset.loaded || 0) >= 1", timeout=15_000)
            assert page.is_visible("#frozen-card") and not errors, errors
            row = page.inner_text(f"#frozen-table tr[data-pid='{grower.pid}']")
            assert "cgroup-v1" in row and f"headroom thaw {grower.pid}" in row
            manager.freezer.thaw(grower.pid, "test", "manual")
            page.wait_for_function("document.getElementById('frozen-card').hidden", timeout=15_000)
        finally:
            browser.close()


def test_the_views_find_the_fast_paths_freezer_when_the_engine_has_none(make_manager):
    from types import SimpleNamespace

    manager, freezer = make_manager(), object()
    assert manager.freezer_in_use() is None
    manager.fastpath = SimpleNamespace(freezer=freezer)
    assert manager.freezer_in_use() is freezer
    manager.freezer = other = object()
    assert manager.freezer_in_use() is other
