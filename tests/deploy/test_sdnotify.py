"""Processes started by systemd (Type=notify) send READY=1 once serving and WATCHDOG=1 pings while healthy."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import httpx
import pytest

from tests.helpers import REPO, free_port, headroom_cmd, stop_process


def test_exporter_sends_ready_then_watchdog_pings(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        port = free_port()
        env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000", "HEADROOM_EXPORTER__COLLECTORS": '["memory"]'}
        proc = subprocess.Popen(headroom_cmd("exporter", "--listen", f"127.0.0.1:{port}"), cwd=REPO, env=env, stderr=subprocess.DEVNULL)
        try:
            first = sock.recv(4096).decode()
            assert first.startswith("READY=1")
            # READY means serving: the very first scrape after it must answer.
            assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 200
            start = time.monotonic()
            pings = [sock.recv(4096).decode() for _ in range(3)]
            assert pings == ["WATCHDOG=1"] * 3
            assert time.monotonic() - start < 2.0, "pings come every half WatchdogSec (0.2 s here)"
            proc.terminate()
            messages = []
            while "STOPPING=1" not in messages and len(messages) < 20:
                messages.append(sock.recv(4096).decode())
            assert messages[-1] == "STOPPING=1"
        finally:
            stop_process(proc)


@pytest.mark.parametrize("part, extra", [("guard", {}), ("worker", {"HEADROOM_WORKER__ENGINE": "echo"})])
def test_guard_and_worker_send_ready_once_serving_then_watchdog(tmp_path, part, extra):
    path = str(tmp_path / "notify.sock")
    port = free_port()
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000", "HEADROOM_STATE_DIR": str(tmp_path / "state"), **extra}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)
        proc = subprocess.Popen(headroom_cmd(part, "--listen", f"127.0.0.1:{port}"), cwd=REPO, env=env, stderr=subprocess.DEVNULL)
        try:
            assert sock.recv(4096).decode().startswith("READY=1")
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, "READY=1 means it is serving"
            assert [sock.recv(4096).decode() for _ in range(2)] == ["WATCHDOG=1", "WATCHDOG=1"]
        finally:
            stop_process(proc)
