"""Never hang, never wait on bookkeeping to protect: a /proc read that blocks (a FIFO in an injected procfs root, as
/proc/PID/cmdline blocks on a process whose mmap lock is held) never holds up the worker's free or the guard's views,
a stuck fast path fails /readyz and stops the systemd watchdog pings, and an urgent free skips the retry backoff."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from guard.targets.actuator import ActingThread, ContractTarget, Reconciler
from guard.app import Deps, build_deps, create_app
from guard.protect.domain import DomainReader
from guard.protect.fastpath import FastPath
from guard.protect.freezer import Freezer
from guard.protect.frozenfile import read_records
from guard.common.types import Desired
from guard.http.views import fast_path_stuck
from headroom import sdnotify
from headroom.config import load_settings
from headroom.contract import Maintenance
from tests.guard.freezing import counting, need_freezer_root, start_counter, stop
from tests.helpers import free_port, stop_process, wait_for, write_toml

TOKEN = "never-hang-test-token-0123456789"
CONTRACT_WORKER = Path(__file__).parent / "contract_worker.py"
GiB = 2**30


def answers_within(call, seconds: float = 2.0):
    """`call()`'s result, or AssertionError when it has not answered within `seconds` (it blocked)."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"no answer within {seconds} s: it waits on the stuck look"
    return box[0]


def blocking_file(path: Path) -> Path:
    """Replace `path` by a FIFO: opening it blocks until someone writes. Returns a second name of that FIFO."""
    held = path.with_name(path.name + ".held")
    os.mkfifo(held)
    os.link(held, path.with_name(path.name + ".new"))
    os.replace(path.with_name(path.name + ".new"), path)
    return held


def unblock(path: Path, held: Path, text: str) -> None:
    """Put a plain file back at `path`, then let the blocked reader of the FIFO (if any) read `text`."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)
    try:
        fifo = os.open(held, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: no reader is waiting on it
    except OSError as err:
        if err.errno != errno.ENXIO:
            raise
    else:
        with open(fifo, "w") as handle:
            handle.write(text)
    held.unlink()


def meminfo(total: int, available: int) -> str:
    return f"MemTotal: {total // 1024} kB\nMemFree: {available // 1024} kB\nMemAvailable: {available // 1024} kB\n"


def guard_settings(tmp: Path, worker_port: int | None = None, **guard):
    conf = write_toml(tmp / "headroom.toml", {"state_dir": str(tmp / "state"), "guard": {
        "listen": f"127.0.0.1:{free_port()}", "token": TOKEN, "stale_after_seconds": 1, "mlock": False,
        "exporter_url": f"http://127.0.0.1:{free_port()}/metrics",
        **({"worker_url": f"http://127.0.0.1:{worker_port}"} if worker_port else {}), **guard}})
    return load_settings(conf, environ={})


def contract_worker(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(CONTRACT_WORKER), "--port", str(port), "--token", TOKEN])
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/control/state", timeout=1).status_code == 200, 15,
             what="the contract worker")
    return proc


def puts(port: int) -> list[dict]:
    calls = httpx.get(f"http://127.0.0.1:{port}/_test/calls", timeout=2).json()["calls"]
    return [c["body"] for c in calls if c["method"] == "PUT" and c["path"] == "/control/state"]


def test_a_fast_path_stuck_on_a_blocking_read_fails_readyz_and_stops_the_watchdog(tmp_path):
    procfs = tmp_path / "proc"
    procfs.mkdir()
    (procfs / "meminfo").write_text(meminfo(16 * GiB, 12 * GiB))
    settings = guard_settings(tmp_path)
    manager = build_deps(settings).manager
    fast = FastPath(settings.guard, DomainReader("host", procfs=procfs), manager)
    manager.start_background(fast)
    client = TestClient(create_app(settings, Deps(manager, TOKEN, run_scheduler=False)))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.05)
    front = client.app.state.front
    pings = sdnotify.start_watchdog(lambda: fast_path_stuck(front.view(), front.settings) is None,
                                    environ={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"})

    def pinged(seconds: float) -> int:
        got, until = 0, time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                got += notify.recv(64) == b"WATCHDOG=1"
            except TimeoutError:
                pass
        return got

    try:
        assert pinged(0.5) >= 2, "the watchdog should ping while the fast path looks"
        held = blocking_file(procfs / "meminfo")
        stuck = wait_for(lambda: "fast path" in client.get("/readyz").json()["reason"], 10, what="/readyz to say stuck")
        assert stuck and client.get("/readyz").status_code == 503
        pinged(0.2)  # a ping already under way
        assert pinged(0.8) == 0, "the watchdog kept pinging for a stuck guard: systemd would never restart it"
        assert answers_within(lambda: client.get("/metrics")).status_code == 200
        unblock(procfs / "meminfo", held, meminfo(16 * GiB, 12 * GiB))
        wait_for(lambda: "fast path" not in client.get("/readyz").json().get("reason", ""), 10, what="the look done")
        assert pinged(0.6) >= 2, "the pings resume once the fast path looks again"
    finally:
        pings.set()
        manager.stop_background()
        notify.close()


def growing_status(path: Path, pid: int, done: threading.Event, per_second: int = 200 << 20) -> threading.Thread:
    """The injected /proc/PID/status of the grower shows RssAnon rising at `per_second` (the choice is by growth; how
    growth is measured from real processes is tests/guard/test_freeze_adversarial.py's subject, not this one's)."""
    real = Path(f"/proc/{pid}/status").read_text().splitlines()
    started = time.monotonic()

    def write() -> None:
        while not done.is_set():
            anon = int((time.monotonic() - started) * per_second) >> 10
            lines = [f"RssAnon:\t{anon} kB" if line.startswith("RssAnon:") else line for line in real]
            temp = path.with_name("status.tmp")
            temp.write_text("\n".join(lines) + "\n")
            os.replace(temp, path)
            done.wait(0.05)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    wait_for(path.exists, 5, what="the grower's status")
    return writer


@pytest.mark.kernel
def test_a_blocking_cmdline_read_never_holds_up_the_free_nor_the_views(tmp_path):
    """The process chosen has a cmdline that blocks: the free still reaches a real contract worker before the freeze is
    recorded, and /v1/frozen and /metrics answer while the look waits; the grower ends frozen, and thawed at close."""
    need_freezer_root()
    worker_port = free_port()
    worker = contract_worker(worker_port)
    grower, outs = start_counter(tmp_path, "grower")
    procfs = tmp_path / "proc"
    (procfs / str(grower.pid)).mkdir(parents=True)
    for name in ("stat", "oom_score", "oom_score_adj", "cgroup", "cmdline"):
        (procfs / str(grower.pid) / name).write_bytes(Path(f"/proc/{grower.pid}/{name}").read_bytes())
    held = blocking_file(procfs / str(grower.pid) / "cmdline")
    done = threading.Event()
    growing_status(procfs / str(grower.pid) / "status", grower.pid, done)
    (procfs / "meminfo").write_text(meminfo(16 * GiB, 12 * GiB))  # calm while the growth is measured
    settings = guard_settings(tmp_path, worker_port)
    manager = build_deps(settings).manager
    freezer = Freezer(settings.guard, manager.store, procfs=procfs)
    fast = FastPath(settings.guard, DomainReader("host", procfs=procfs), manager, freezer)
    client = TestClient(create_app(settings, Deps(manager, TOKEN, run_scheduler=False)))
    manager.start_background(fast)
    try:
        wait_for(lambda: len(fast.growth.samples) >= 2, 5, what="two samples of who grows")
        (procfs / "meminfo").write_text(meminfo(16 * GiB, GiB // 2))  # 3 %: below the 5 % freeze level
        wait_for(lambda: any(p["state"] == "freed" for p in puts(worker_port)), 5, what="the free at the worker")
        assert answers_within(lambda: client.get("/metrics")).status_code == 200
        frozen = answers_within(lambda: client.get("/v1/frozen")).json()["processes"]
        time.sleep(0.5)
        started = fast.step_started
        if started is not None and time.monotonic() - started > 0.4:  # the choice reads cmdline: it waits on the FIFO
            assert read_records(freezer.records) == [] and frozen == [], "recorded before the read could return"
            unblock(procfs / str(grower.pid) / "cmdline", held, Path(f"/proc/{grower.pid}/cmdline").read_text())
        [record] = wait_for(lambda: read_records(freezer.records), 5, what="the freeze recorded (the look went on)")
        assert record["pid"] == grower.pid and not counting(outs[0]), "recorded, yet the grower runs on"
    finally:
        done.set()
        if held.exists():
            unblock(procfs / str(grower.pid) / "cmdline", held, "python\0")
        manager.stop_background()
        freezer.close()
    try:
        assert counting(outs[0]), "the freezer's close left the grower frozen"
    finally:
        stop(grower)
        stop_process(worker)


def test_an_urgent_free_skips_the_retry_backoff(tmp_path):
    """A worker that was down pushed the backoff to its 15 s cap; the fast path's free goes out at once anyway."""
    port = free_port()
    reconciler = Reconciler(ContractTarget(f"http://127.0.0.1:{port}", TOKEN, 2.0), False, 0.5, 15.0)
    now = time.time()
    for _ in range(6):
        now = max(now, reconciler.next_attempt_at)
        assert reconciler.reconcile(Desired("paused", reason="test"), Maintenance(), now)[0].result == "error"
    assert reconciler.next_attempt_at - time.time() > 10, "the backoff should be at its cap now"
    worker = contract_worker(port)
    acting = ActingThread(reconciler, lambda events, at: None, read_every=0.25)
    try:
        acting.submit(Desired("freed", level=2, reason="test: freeze level"), Maintenance(), urgent=True)
        acting.submit(Desired("running", reason="test: a tick that has not seen the freeze yet"), Maintenance())
        acting.start()
        wait_for(lambda: any(p["state"] == "freed" for p in puts(port)), 3, what="the urgent free at the worker")
        assert [p["state"] for p in puts(port)] == ["freed"], "a milder routine wish undid the urgent free"
    finally:
        acting.stop()
        reconciler.close()
        stop_process(worker)
