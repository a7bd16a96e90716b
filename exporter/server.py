"""The exporter's HTTP server: /metrics (Prometheus text format, gzip), /events (recent OOM kills, JSON).

HTTP/1.1 with keep-alive, as Prometheus scrapes; one thread per connection.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from exporter.encode import CONTENT_TYPE, encode
from exporter.follower import KmsgFollower
from headroom.errors import EXIT_BIND, HeadroomError
from headroom.settings_base import parse_listen

log = logging.getLogger("headroom.exporter")
INDEX = b"headroom exporter\n/metrics  Prometheus metrics\n/events   recent OOM kills (JSON)\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def events_payload(follower: KmsgFollower | None) -> dict:
    if follower is None:
        return {"events": [], "kmsg": {"followed": False, "error": "the oom collector is disabled", "overruns": 0}}
    state = follower.snapshot()
    events = [victim.as_event() for victim in reversed(state.victims)]  # newest first
    return {"events": events, "kmsg": {"followed": state.error is None, "error": state.error, "overruns": state.overruns}}


def make_handler(registry: CollectorRegistry, follower: KmsgFollower | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "headroom-exporter"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

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


def serve(listen: str, handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Bind `listen` and serve in a thread; HeadroomError(EXIT_BIND) when the address is taken or not allowed."""
    host, port = parse_listen(listen)
    server_class = _Server6 if ":" in host else _Server
    try:
        server = server_class((host, port), handler)
    except OSError as err:
        reason = "address already in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
        raise HeadroomError(f"cannot listen on {listen}: {reason}", EXIT_BIND) from None
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return server, thread
