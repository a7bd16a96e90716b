"""`headroom up`: starts every part with embedded defaults (addresses from the config) and Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import time
import subprocess

import httpx
import psutil

from tests.helpers import REPO, free_port, headroom_cmd, wait_for, write_toml


def test_up_serves_metrics_and_stops_cleanly_on_ctrl_c(tmp_path):
    ports = {part: free_port() for part in ("exporter", "guard", "worker")}
    conf = write_toml(tmp_path / "up.toml", {"state_dir": str(tmp_path / "state"), **{part: {"listen": f"127.0.0.1:{port}"} for part, port in ports.items()}})
    proc = subprocess.Popen(headroom_cmd("up", "--config", str(conf)), cwd=REPO, env={**os.environ, "HEADROOM_EXPORTER__COLLECTORS": '["memory"]'}, stderr=subprocess.PIPE, text=True)
    try:
        metrics = wait_for(lambda: httpx.get(f"http://127.0.0.1:{ports['exporter']}/metrics", timeout=2).text, timeout=30, what="the exporter under `headroom up`")
        assert "headroom_memory_available_bytes " in metrics
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "up runs each part as a child process"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], "every part stopped"


def test_guard_log_is_quiet_at_info(tmp_path):
    """Four ticks a second must not write four log lines a second (journald would fill up)."""
    port = free_port()
    log = tmp_path / "guard.log"
    env = {**os.environ, "HEADROOM_STATE_DIR": str(tmp_path / "state"), "HEADROOM_LOG_LEVEL": "info"}
    proc = subprocess.Popen(headroom_cmd("guard", "--listen", f"127.0.0.1:{port}"), cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200, 20, what="the guard")
        time.sleep(2.0)  # eight ticks
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    lines = log.read_text().splitlines()
    assert len(lines) < 12, "\n".join(lines[:20])
