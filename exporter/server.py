"""The exporter's HTTP server: /metrics (Prometheus text, gzip), /events (recent OOM kills as JSON)."""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter.follower import KmsgFollower
from headroom.errors import EXIT_BIND, HeadroomError
from headroom.settings_base import parse_listen

log = logging.getLogger("headroom.exporter")
INDEX = b"headroom exporter\n/metrics  Prometheus metrics\n/events   recent OOM kills (JSON)\n"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (wsgiref's signature)
        log.debug("%s - %s", self.address_string(), format % args)


def events_payload(follower: KmsgFollower | None) -> dict:
    if follower is None:
        return {"events": [], "kmsg": {"followed": False}}
    state = follower.snapshot()
    events = [victim.as_event() for victim in reversed(state.victims)]  # newest first
    return {"events": events, "kmsg": {"followed": state.error is None, "error": state.error, "overruns": state.overruns}}


def make_app(registry: CollectorRegistry, follower: KmsgFollower | None):
    metrics_app = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/events":
            body = json.dumps(events_payload(follower)).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [INDEX]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /events\n"]

    return app


def serve(listen: str, app) -> tuple[WSGIServer, threading.Thread]:
    """Bind `listen` and serve `app` in a thread; HeadroomError(EXIT_BIND) when the address is taken."""
    host, port = parse_listen(listen)
    server_class = _Server6 if ":" in host else _Server
    try:
        server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as err:
        reason = "address already in use" if err.errno == errno.EADDRINUSE else err.strerror
        raise HeadroomError(f"cannot listen on {listen}: {reason}", EXIT_BIND) from None
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return server, thread
