"""The exporter's HTTP server: /metrics (Prometheus text format, gzip), /events (recent OOM kills, JSON).

HTTP/1.1 with keep-alive, as Prometheus scrapes; one thread per connection, at most `max_connections` of them.
A connection that sends nothing for `idle_timeout_seconds`, or does not finish its request line and headers
within `header_timeout_seconds` of their first byte (a slow trickle included), is closed. At the cap, a new
connection takes the place of the one that has waited longest without a complete request (a flood of half-open
connections cannot lock a scraper out); when every connection is busy answering, the new one gets 503 at once.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from exporter.encode import CONTENT_TYPE, encode
from exporter.follower import KmsgFollower
from headroom.serving import bind

log = logging.getLogger("headroom.exporter")
INDEX = b"headroom exporter\n/metrics  Prometheus metrics\n/events   recent OOM kills (JSON)\n"
REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    max_connections: int = 64  # connections served at once; more are refused with 503
    idle_timeout_seconds: float = 90.0  # wait for the first byte of a request (keep-alive between scrapes)
    header_timeout_seconds: float = 10.0  # from that byte to the end of the headers; also bounds each reply's writes


@dataclass
class HttpStats:
    open: int = 0  # connections being served now
    rejected: int = 0  # refused at the cap
    evicted: int = 0  # closed at the cap to make room: they had waited longest without a complete request
    timed_out: int = 0  # closed for the idle or header timeout


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each bounded by what is left of the handler's deadline (a trickle cannot stretch it)."""

    def __init__(self, sock: socket.socket, handler):
        self.sock, self.handler = sock, handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self.handler.deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError("deadline passed")
            self.sock.settimeout(remaining)
            return self.sock.recv_into(buffer)
        except TimeoutError:
            self.handler.server.count_timeout()
            raise


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a burst of scrapers must not wait on SYN retries (the default is 5)

    def __init__(self, sock: socket.socket, handler, limits: Limits):
        """Serve on `sock`, already bound and listening (headroom.serving.bind)."""
        self.limits = limits
        self.stats = HttpStats()
        self._lock = threading.Lock()
        self._warned_at = float("-inf")
        self._waiting: dict = {}  # handler -> monotonic time it began waiting for a request
        super().__init__(sock.getsockname(), handler, bind_and_activate=False)
        self.socket.close()
        self.socket, self.server_address = sock, sock.getsockname()

    def process_request(self, request, client_address):
        with self._lock:
            admitted = self.stats.open < self.limits.max_connections or self._evict_longest_waiting()
            if admitted:
                self.stats.open += 1
            else:
                self.stats.rejected += 1
        if not admitted:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread could be started: give the slot back
            self._release()
            self.shutdown_request(request)
            raise

    def _evict_longest_waiting(self) -> bool:
        """Under the lock: close the connection that has waited longest for a complete request; False if none."""
        if not self._waiting or self.stats.open >= 2 * self.limits.max_connections:  # evicted ones still winding down
            return False
        handler = min(self._waiting, key=self._waiting.get)
        del self._waiting[handler]
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)  # its blocked read returns at once and the thread ends
        self.stats.evicted += 1
        return True

    def waiting(self, handler, since: float | None) -> None:
        """A handler waits for a request from `since` (monotonic), or (None) has one and is busy answering it."""
        with self._lock:
            if since is None:
                self._waiting.pop(handler, None)
            else:
                self._waiting[handler] = since

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self.stats.open -= 1

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.setblocking(False)
            request.send(REFUSAL)
        except OSError:
            pass
        self.shutdown_request(request)
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.warning("refusing connections: %d already open and busy (max_connections); %d refused so far",
                        self.limits.max_connections, self.stats.rejected)

    def handle_error(self, request, client_address):
        """A connection that broke (reset, evicted, timed out mid-reply) is routine; anything else is logged in full."""
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("connection from %s ended: %s", client_address[0], sys.exc_info()[1])
        else:
            log.exception("error answering %s", client_address[0])

    def count_timeout(self) -> None:
        with self._lock:
            self.stats.timed_out += 1


def events_payload(follower: KmsgFollower | None) -> dict:
    if follower is None:
        return {"events": [], "kmsg": {"followed": False, "error": "the oom collector is disabled", "overruns": 0}}
    state = follower.snapshot()
    events = [victim.as_event() for victim in reversed(state.victims)]  # newest first
    return {
        "events": events,
        "kmsg": {"followed": state.error is None, "error": state.error, "overruns": state.overruns},
    }


def make_handler(registry: CollectorRegistry, follower: KmsgFollower | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "headroom-exporter"
        disable_nagle_algorithm = True  # headers and body go out as separate writes
        deadline = 0.0  # monotonic time by which the current read must complete

        def setup(self):
            super().setup()
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

        def handle_one_request(self):
            limits = self.server.limits
            now = time.monotonic()
            self.deadline = now + limits.idle_timeout_seconds
            self.server.waiting(self, now)
            try:
                if not self.rfile.peek(1):  # the client closed the connection (or it was evicted at the cap)
                    self.close_connection = True
                    return
            except OSError:  # idle too long (TimeoutError), or reset
                self.close_connection = True
                return
            self.deadline = time.monotonic() + limits.header_timeout_seconds
            super().handle_one_request()  # a TimeoutError while reading the headers closes the connection

        def parse_request(self) -> bool:
            complete = super().parse_request()  # reads the headers (under the deadline)
            self.server.waiting(self, None)  # the request is in: busy until the reply is out
            return complete

        def finish(self):
            self.server.waiting(self, None)
            super().finish()

        def do_GET(self):  # noqa: N802 (http.server's naming)
            path = urlsplit(self.path).path
            if path == "/metrics":
                self._reply(200, CONTENT_TYPE, encode(registry))
            elif path == "/events":
                self._reply(200, "application/json", json.dumps(events_payload(follower)).encode())
            elif path == "/":
                self._reply(200, "text/plain; charset=utf-8", INDEX)
            else:
                self._reply(404, "text/plain", b"not found: try /metrics or /events\n")

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.connection.settimeout(self.server.limits.header_timeout_seconds)  # a client that does not read
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if len(body) > 1024 and "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body, compresslevel=1)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
            log.debug("%s - %s", self.address_string(), format % args)

    return Handler


class HttpStatsCollector:
    """The server's own connection counters on /metrics."""

    def __init__(self, stats: HttpStats):
        self.stats = stats

    def describe(self):
        return []

    def collect(self):
        yield GaugeMetricFamily(
            "headroom_exporter_http_connections", "Connections the exporter is serving now.", value=self.stats.open
        )
        yield CounterMetricFamily(
            "headroom_exporter_http_connections_rejected",
            "Connections refused with 503: max_connections were open, all busy answering.",
            value=self.stats.rejected,
        )
        yield CounterMetricFamily(
            "headroom_exporter_http_connections_evicted",
            "Connections closed at max_connections to make room: they had waited longest for a request.",
            value=self.stats.evicted,
        )
        yield CounterMetricFamily(
            "headroom_exporter_http_timeouts",
            "Connections closed for sending no request (idle) or too slow headers.",
            value=self.stats.timed_out,
        )


def serve(
    listen: str, handler: type[BaseHTTPRequestHandler], limits: Limits | None = None
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Bind `listen` and serve in a thread; HeadroomError(EXIT_BIND) when the address is taken or not allowed."""
    server = _Server(bind(listen, "exporter"), handler, limits or Limits())
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return server, thread
