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


def test_a_flood_of_half_open_connections_cannot_lock_out_a_scraper(tmp_path):
    """At the cap, a new connection replaces the one that has waited longest without a request."""
    with exporter_process(tmp_path, config(max_connections=CAP, idle_timeout_seconds=60)) as (base, proc):
        time.sleep(0.5)  # the start-up probe's connection thread ends
        idle = threads(proc.pid)
        flood = [socket.create_connection(("127.0.0.1", port_of(base))) for _ in range(4 * CAP)]
        try:
            for sock in flood[:3 * CAP]:  # the oldest were closed by the server to make room for the newest
                assert closed_by_server(sock, within=5) is not None
            for _ in range(3):
                assert httpx.get(base + "/metrics", timeout=5).status_code == 200
            assert threads(proc.pid) <= idle + 2 * CAP, "threads stay bounded by the cap"
        finally:
            for sock in flood:
                sock.close()
        assert counter(base, "headroom_exporter_http_connections_evicted_total") >= 3 * CAP


def busy_connection(port: int) -> socket.socket:
    """A client that pipelines requests and never reads: its handler blocks writing replies (busy, not waiting)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 3000)
    return sock


def test_when_every_connection_is_busy_a_new_one_gets_503_without_a_thread(tmp_path):
    with exporter_process(tmp_path, config(max_connections=2, header_timeout_seconds=20)) as (base, proc):
        time.sleep(0.5)
        idle = threads(proc.pid)
        busy = [busy_connection(port_of(base)) for _ in range(2)]
        try:
            wait_for(lambda: threads(proc.pid) >= idle + 2, 10, what="both busy connections to be served")
            time.sleep(1)  # their handlers fill the socket buffers and block
            replies = []
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", port_of(base))) as sock:
                    sock.settimeout(5)
                    replies.append(sock.recv(4096))
            assert all(r.startswith(b"HTTP/1.1 503") for r in replies), replies[:2]
            assert threads(proc.pid) <= idle + 2
        finally:
            for sock in busy:
                sock.close()
        wait_for(lambda: httpx.get(base + "/metrics", timeout=5).status_code == 200, 15, what="/metrics once they are gone")
        assert counter(base, "headroom_exporter_http_connections_rejected_total") >= 5
