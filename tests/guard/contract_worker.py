"""A small worker that implements the control contract faithfully and records every call (test double, real HTTP).

Run: python contract_worker.py --port N --token T [--hold-bytes B] [--transition-seconds S] [--free-latency S] [--no-level1]
                                [--touch]
While not freed it holds B bytes of RAM (so freeing it really frees memory in its cgroup); with --free-latency the
memory is given back only S seconds after the free was accepted (a real engine finishes its step, then shuts down).
With --touch it re-reads every page of it in a loop while running or throttled (a busy engine: thrashes under swap).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATES = {"running", "throttled", "paused", "freed"}


class ContractWorker:
    """The contract's state machine; `handle()` is shared by the HTTP server and httpx.MockTransport tests."""

    def __init__(self, token: str, hold_bytes: int = 0, transition_seconds: float = 0.0, level1: bool = True, clock=time.time,
                 free_latency: float = 0.0, report_pids: bool = True):
        self.report_pids = report_pids  # the contract's self-report (GET /control/state "pids")
        self.grown: list[bytearray] = []  # what PUT /_test/grow made it take
        self.token, self.hold_bytes, self.transition_seconds, self.level1, self.clock = token, hold_bytes, transition_seconds, level1, clock
        self.free_latency = free_latency
        self.lock = threading.Lock()
        self.desired = {"state": "running"}
        self.state, self.since, self.transition_until = "running", clock(), 0.0
        self.maintenance = {"on": False, "reason": None}
        self.calls: list[dict] = []
        self.memory = bytearray(hold_bytes) if hold_bytes else None
        if self.memory:
            self.memory[::4096] = b"x" * len(self.memory[::4096])  # touch every page so it is resident

    def current(self) -> dict:
        if self.state in ("freeing", "waking") and self.clock() >= self.transition_until:
            self.state = "freed" if self.state == "freeing" else self.desired["state"]
            self.since = self.clock()
        return {"state": self.state, "desired": dict(self.desired), "concurrency": self.desired.get("concurrency"),
                "free_level": self.desired.get("level"), "maintenance": dict(self.maintenance),
                "engine": {"kind": "contract-double", "loaded": self.memory is not None or not self.hold_bytes},
                "queue": {"production": 0, "test": 0, "bulk": 0}, "since": self.since,
                "pids": [os.getpid()] if self.report_pids else None}

    def _set_memory(self, freed: bool) -> None:
        if freed:
            self.memory = None
        elif self.memory is None and self.hold_bytes:
            self.memory = bytearray(self.hold_bytes)
            self.memory[::4096] = b"x" * len(self.memory[::4096])

    def put_state(self, body: dict) -> tuple[int, dict]:
        state = body.get("state")
        if state not in STATES:
            return 422, {"detail": f"state: expected one of {sorted(STATES)}, got {state!r}"}
        if state == "throttled" and not (isinstance(body.get("concurrency"), int) and body["concurrency"] >= 1):
            return 422, {"detail": "concurrency: expected an integer >= 1 for throttled"}
        if state == "freed" and body.get("level") not in (1, 2):
            return 422, {"detail": "level: expected 1 or 2 for freed"}
        if state == "freed" and body["level"] == 1 and not self.level1:
            return 409, {"detail": "this engine cannot sleep at level 1"}
        desired = {k: body[k] for k in ("state", "concurrency", "level") if body.get(k) is not None}
        if desired == self.desired:
            return 200, self.current()  # idempotent
        was_freed = self.state in ("freed", "freeing")
        self.desired = desired
        if self.free_latency and state == "freed" and not was_freed:
            self.state, self.transition_until = "freeing", self.clock() + self.free_latency
            threading.Timer(self.free_latency, self._release_if_still_freed).start()
            return 202, self.current()
        self._set_memory(state == "freed")
        if self.transition_seconds and (state == "freed") != was_freed:
            self.state = "freeing" if state == "freed" else "waking"
            self.transition_until = self.clock() + self.transition_seconds
            return 202, self.current()
        self.state, self.since = state, self.clock()
        return 200, self.current()

    def _release_if_still_freed(self) -> None:
        with self.lock:
            if self.desired.get("state") == "freed":
                self._set_memory(True)
                self.state, self.since = "freed", self.clock()

    def handle(self, method: str, path: str, headers: dict, raw: bytes) -> tuple[int, dict]:
        with self.lock:
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                return 422, {"detail": "body: malformed JSON"}
            self.calls.append({"method": method, "path": path, "body": body, "at": self.clock()})
            if method == "GET" and path == "/control/state":
                return 200, self.current()
            if method == "GET" and path == "/_test/calls":
                return 200, {"calls": self.calls[:-1]}
            if method != "PUT":
                return 404, {"detail": "not found"}
            if headers.get("authorization") != f"Bearer {self.token}":
                return 401, {"detail": "missing or wrong bearer token"}
            if path == "/control/state":
                return self.put_state(body if isinstance(body, dict) else {})
            if path == "/_test/grow" and isinstance(body, dict) and isinstance(body.get("mib"), int):
                grown = bytearray(body["mib"] << 20)  # the worker itself grows (an engine waking, a KV cache)
                grown[::4096] = b"x" * len(grown[::4096])
                self.grown.append(grown)
                return 200, self.current()
            if path == "/control/maintenance" and isinstance(body, dict) and isinstance(body.get("on"), bool):
                self.maintenance = {"on": body["on"], "reason": body.get("reason") if body["on"] else None}
                return 200, self.current()
            return 422 if path == "/control/maintenance" else 404, {"detail": "bad request"}


def touch_loop(worker: ContractWorker) -> None:
    """Read one byte per page of the held memory, over and over, while the worker is running or throttled."""
    while True:
        memory = worker.memory
        if memory is None or worker.state not in ("running", "throttled"):
            time.sleep(0.05)
            continue
        for start in range(0, len(memory), 64 * 4096):
            memory[start:start + 64 * 4096:4096]  # noqa: B018 a read that faults the pages back in
            if worker.state not in ("running", "throttled"):
                break


def mock_transport(worker: ContractWorker):
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        status, body = worker.handle(request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()},
                                     request.content)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def serve(worker: ContractWorker, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, body = worker.handle(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = _reply

        def log_message(self, *args) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--hold-bytes", type=int, default=0)
    parser.add_argument("--transition-seconds", type=float, default=0.0)
    parser.add_argument("--no-level1", action="store_true")
    parser.add_argument("--free-latency", type=float, default=0.0)
    parser.add_argument("--no-self-report", action="store_true", help="answer without its pids (an older worker)")
    parser.add_argument("--touch", action="store_true")
    args = parser.parse_args()
    double = ContractWorker(args.token, args.hold_bytes, args.transition_seconds, not args.no_level1,
                            free_latency=args.free_latency, report_pids=not args.no_self_report)
    if args.touch:
        threading.Thread(target=touch_loop, args=(double,), daemon=True).start()
    serve(double, args.port)
