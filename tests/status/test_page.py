"""The status page in a real headless Chromium against a real exporter + guard: figures, leases, OOM kills, screenshot."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import uuid

import httpx
import pytest

from headroom.sizes import parse_size
from tests.guard.realstack import MiB, Allocator
from tests.helpers import REPO, need, need_root_memory_cgroup, wait_for
from tests.kernel import ALLOCATOR, memory_cgroup, spawn_in_cgroup
from tests.status.conftest import chromium_path

pytestmark = pytest.mark.kernel
ARTIFACTS = REPO / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's chromium, headless, with a fresh profile (--user-data-dir) for this module."""
    need(importlib.util.find_spec("playwright") is not None, "playwright (tests/requirements.txt)")
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


@pytest.fixture
def page(browser, stack):
    page = browser.new_page()
    page.errors = []
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(str(stack.guard.base_url).rstrip("/") + "/")
    try:
        page.wait_for_function("Number(document.body.dataset.loaded || 0) >= 1", timeout=10_000)
    except Exception:
        raise AssertionError(f"the page never drew: errors {page.errors}, banner {page.inner_text('#banner')!r}") from None
    yield page
    page.close()


def refreshes(page, more: int = 1) -> None:
    """Wait until the page has redrawn `more` more times from the API."""
    now = int(page.evaluate("Number(document.body.dataset.loaded || 0)"))
    page.wait_for_function(f"Number(document.body.dataset.loaded || 0) >= {now + more}", timeout=10_000)


def test_page_loads_without_console_errors_and_shows_the_ram_the_api_reports(page, stack):
    refreshes(page, 2)
    assert page.errors == []
    shown = page.inner_text("#ram-available")
    api = stack.headroom()["ram"]
    assert abs(parse_size(shown.replace(" ", "")) - api["available_bytes"]) <= max(8 * MiB, 0.02 * api["total_bytes"]), (shown, api)
    assert page.inner_text("#level").lower() == api["level"]
    assert "1.0 GiB" in page.inner_text("#res-ram")  # the domain's limit, as total
    assert [page.get_attribute(f"#res-ram .tick.t-{lvl}", "title") is not None for lvl in ("warn", "throttle", "pause", "free")] == [True] * 4
    assert page.locator("#charts svg").count() >= 1 and page.locator("#top-table tbody tr").count() >= 1
    for name in ("status.js", "charts.js", "status.css"):  # everything ships with the package: no CDN
        body = httpx.get(str(stack.guard.base_url).rstrip("/") + f"/static/{name}").text
        assert not re.search(r"(src|href)\s*=\s*[\"']?https?:", body) and "import(" not in body


def test_no_stray_null_and_the_token_note_reads_on_one_line(page, stack):
    """replaceChildren(null) printed "null" under the summary; the events note wrapped one word per line."""
    refreshes(page)
    assert "null" not in page.inner_text("#summary")
    page.route("**/v1/events*", lambda route: route.fulfill(status=401, body="{}", content_type="application/json"))
    refreshes(page)
    note = page.locator("#events li.empty")
    assert "events need the API token" in note.inner_text()
    box = note.bounding_box()
    assert box["width"] > 250 and box["height"] < 60, box
    page.unroute("**/v1/events*")


def test_an_enabled_worker_nobody_drives_is_a_warning_on_the_page(page, stack):
    """The guard's /v1/headroom says so (worker.warning); the page must show it, not "no worker is driven"."""
    def undriven(route):
        response = route.fetch()
        body = response.json()
        body["worker"].update(driven=False, warning="[worker] enabled = true but this guard does not drive it")
        route.fulfill(response=response, json=body)

    page.route("**/v1/headroom", undriven)
    refreshes(page)
    assert "warning: [worker] enabled = true but this guard does not drive it" in page.inner_text("#worker-warning")
    page.unroute("**/v1/headroom")
    assert page.errors == []


def test_a_lease_shows_while_it_lives(page, stack):
    holder = f"page-lease-{uuid.uuid4().hex[:6]}"
    created = stack.guard.post("/v1/leases", json={"holder": holder, "ram_bytes": "64MiB", "ttl_seconds": 60})
    assert created.status_code == 201, created.text
    row = page.locator(f"#lease-table tr:has-text('{holder}')")
    row.wait_for(timeout=8_000)
    assert "granted" in row.inner_text() and "64.0 MiB" in row.inner_text()
    assert stack.guard.delete(f"/v1/leases/{created.json()['lease']['id']}").status_code == 200
    row.wait_for(state="detached", timeout=8_000)
    assert page.errors == []


def test_an_oom_kill_in_a_memory_cgroup_shows_with_its_victim(page, stack):
    need_root_memory_cgroup()
    with memory_cgroup(96 * MiB, prefix="headroom-status-oom") as cg:
        child = spawn_in_cgroup(cg, ALLOCATOR.format(comm="hr-page-victim", hold_mb=16, grow_mb=400),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == -9, "growing past memory.max should be OOM-killed"
    event = page.locator("#events li.ev-oom_kill", has_text=f"(pid {child.pid})")  # earlier runs' kills may show too
    event.wait_for(timeout=10_000)
    assert "hr-page-victim" in event.inner_text() and cg.path in event.inner_text()
    history = stack.guard.get("/v1/history").json()
    assert any(m["kind"] == "oom_kill" and "hr-page-victim" in m["message"] for m in history["marks"])
    assert page.errors == []


def test_pressure_and_a_lease_at_a_glance_screenshot(page, stack):
    """Memory pressure in the domain throttles the worker; the page shows the level, the lease, the mark; screenshots."""
    created = stack.guard.post("/v1/leases", json={"holder": "olmo2-7b-test", "ram_bytes": "96MiB", "ttl_seconds": 120,
                                                   "pid": None})
    assert created.status_code == 201, created.text
    hog = Allocator(stack.cgroup)
    try:
        hog.hold(850)  # ~170 MiB left of 1 GiB: below throttle (20 %)
        wait_for(lambda: stack.headroom()["level"] in ("throttle", "pause"), 15, what="the guard to lean on the worker")
        page.locator("#charts g.mark-action").first.wait_for(state="attached", timeout=10_000)
        refreshes(page, 1)
        assert page.inner_text("#level").lower() in ("throttle", "pause")
        assert "olmo2-7b-test" in page.inner_text("#leases")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
        refreshes(page, 1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(ARTIFACTS / "status-page-phone.png"), full_page=True)
    finally:
        hog.stop()
        stack.guard.delete(f"/v1/leases/{created.json()['lease']['id']}")
    assert page.errors == []
