"""The gate on real guard and worker processes: a 300 MiB body without the token is answered 401 unread; bodies are capped."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from dataclasses import dataclass

import httpx
import psutil
import pytest

from tests.helpers import REPO, free_port, headroom_cmd, stop_process, wait_for

TOKEN = "gate-test-token-0123456789"
MiB = 2**20


@dataclass
class Server:
    proc: subprocess.Popen
    port: int

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss


@pytest.fixture(params=["guard", "worker"])
def server(request, tmp_path):
    part, port = request.param, free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HEADROOM_STATE_DIR": str(tmp_path / "state"),
           f"HEADROOM_{part.upper()}__TOKEN": TOKEN, f"HEADROOM_{part.upper()}__LISTEN": f"127.0.0.1:{port}",
           "HEADROOM_GUARD__EXPORTER_URL": f"http://127.0.0.1:{free_port()}/metrics", "HEADROOM_WORKER__ENGINE": "echo"}
    proc = subprocess.Popen(headroom_cmd(part), env=env, cwd=REPO, stdout=open(tmp_path / "log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200, 60, 0.1, f"the {part}")
        yield part, Server(proc, port)
    finally:
        stop_process(proc)


PUT_PATH = {"guard": "/v1/maintenance", "worker": "/control/state"}


def push(server: Server, head: str, total: int, chunked: bool = False, seconds: float = 60) -> tuple[str, int, int]:
    """Send `head` then up to `total` body bytes until the server answers; (status line, bytes sent, peak RSS)."""
    block = b"x" * MiB
    sent, peak, answer = 0, server.rss(), b""
    deadline = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        while time.monotonic() < deadline and b"\r\n" not in answer:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 0.05)
            peak = max(peak, server.rss())
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            elif writable:
                piece = block if not chunked else f"{len(block):x}\r\n".encode() + block + b"\r\n"
                try:
                    sent += max(0, sock.send(piece) - (len(piece) - len(block)))
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    time.sleep(0.01)
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), sent, peak


@pytest.mark.timeout(180)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_300_mib_body_without_the_token_gets_401_unread(server, chunked):
    part, srv = server
    before = srv.rss()
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {300 * MiB}"
    head = f"PUT {PUT_PATH[part]} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    status, sent, peak = push(srv, head, 300 * MiB, chunked)
    print(f"\n{part} ({'chunked' if chunked else 'content-length'}): 401 after {sent / MiB:.0f} MiB sent; "
          f"RSS {before / MiB:.0f} -> peak {peak / MiB:.0f} MiB")
    assert status.startswith("HTTP/1.1 401"), status
    assert sent < 100 * MiB, "the server kept reading the body"
    assert peak - before < 64 * MiB, f"RSS grew {(peak - before) / MiB:.0f} MiB for an unauthenticated body"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_past_the_cap_gets_413_even_with_the_token(server, chunked):
    part, srv = server
    before = srv.rss()
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {300 * MiB}"
    head = (f"PUT {PUT_PATH[part]} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\n{framing}\r\n\r\n")
    status, sent, peak = push(srv, head, 300 * MiB, chunked)
    assert status.startswith("HTTP/1.1 413"), status
    assert peak - before < 64 * MiB, f"RSS grew {(peak - before) / MiB:.0f} MiB"
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:  # and the server is still fine
        assert client.get("/healthz").status_code == 200
