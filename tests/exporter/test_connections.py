"""Half-open and slow connections against a real exporter: idle and header timeouts, and the connection cap."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.exporter.conftest import exporter_process, golden_exporter_config
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)
CAP = 8


def config(**limits) -> dict:
    base = golden_exporter_config("2")
    base["collectors"] = ["memory", "oom"]
    return {**base, **limits}


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def closed_by_server(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closed `sock` (EOF or reset), or None if it was still open after `within`."""
    start = time.monotonic()
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - start
    except ConnectionResetError:
        return time.monotonic() - start
    except TimeoutError:
        return None


def threads(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Threads:"))
    return int(line.split()[1])


def counter(base: str, name: str) -> float:
    for line in httpx.get(base + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_silent_connections_are_closed_after_the_idle_timeout(tmp_path):
    with exporter_process(tmp_path, config(idle_timeout_seconds=1, header_timeout_seconds=1)) as (base, _):
        socks = [socket.create_connection(("127.0.0.1", port_of(base))) for _ in range(CAP - 2)]
        try:
            waits = [closed_by_server(sock, within=10) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        assert all(w is not None for w in waits), f"some silent connections stayed open: {waits}"
        assert max(waits) < 5
        assert counter(base, "headroom_exporter_http_timeouts_total") >= CAP - 2


def test_a_trickled_request_is_cut_at_the_header_deadline(tmp_path):
    """One byte every 0.3 s never trips a per-read timeout of 1 s; the deadline over the whole header does."""
    with exporter_process(tmp_path, config(idle_timeout_seconds=30, header_timeout_seconds=1)) as (base, _):
        sock = socket.create_connection(("127.0.0.1", port_of(base)))
        start = time.monotonic()
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            closed = False
            for byte in b"X-Slow: " + b"a" * 30:
                time.sleep(0.3)
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
            closed = closed or closed_by_server(sock, within=5) is not None
        finally:
            sock.close()
        assert closed and time.monotonic() - start < 8, "the trickled request should be closed soon after 1 s"


def test_keep_alive_and_a_slow_but_timely_request_still_work(tmp_path):
    with exporter_process(tmp_path, config(idle_timeout_seconds=2, header_timeout_seconds=2)) as (base, _):
        with httpx.Client(base_url=base) as client:
            assert [client.get("/metrics").status_code for _ in range(3)] == [200, 200, 200]
            time.sleep(0.5)  # idle, but within the idle timeout: the same connection serves the next scrape
            assert client.get("/events").status_code == 200
        sock = socket.create_connection(("127.0.0.1", port_of(base)))
        try:
            for piece in (b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n\r\n"):
                sock.sendall(piece)
                time.sleep(0.4)
            reply = sock.recv(4096)
        finally:
            sock.close()
        assert reply.startswith(b"HTTP/1.1 200")


def test_connections_over_the_cap_are_refused_without_a_thread(tmp_path):
    with exporter_process(tmp_path, config(max_connections=CAP, idle_timeout_seconds=30)) as (base, proc):
        time.sleep(0.5)  # the start-up probe's connection thread ends
        idle = threads(proc.pid)
        held = [socket.create_connection(("127.0.0.1", port_of(base))) for _ in range(CAP)]
        try:
            wait_for(lambda: threads(proc.pid) >= idle + CAP, 10, what=f"the exporter to take all held connections ({idle} threads idle)")
            extra = [socket.create_connection(("127.0.0.1", port_of(base))) for _ in range(3 * CAP)]
            replies = []
            for sock in extra:
                sock.settimeout(5)
                replies.append(sock.recv(4096))
                sock.close()
            assert all(r.startswith(b"HTTP/1.1 503") for r in replies), replies[:3]
            assert threads(proc.pid) <= idle + CAP, "no thread is started for a refused connection"
        finally:
            for sock in held:
                sock.close()
        # Once the held ones go, the exporter serves again, and says how many it refused.
        wait_for(lambda: httpx.get(base + "/metrics", timeout=5).status_code == 200, 10, what="/metrics after the flood")
        assert counter(base, "headroom_exporter_http_connections_rejected_total") >= 3 * CAP
