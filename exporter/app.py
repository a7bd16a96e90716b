"""The exporter's `serve(settings)`: build the collectors, serve /metrics and /events until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading

from exporter import registry, server
from headroom import sdnotify
from headroom.errors import EXIT_SOURCE, HeadroomError

log = logging.getLogger("headroom.exporter")


def serve(settings) -> int:
    """Serve `settings.exporter` (the wiring in headroom.cli loads the settings and sets up logging)."""
    conf = settings.exporter
    reg, follower = registry.build(conf)
    if follower is not None:
        follower.start()
        error = follower.snapshot().error
        if error and conf.require_kmsg:
            raise HeadroomError(f"{error} (require_kmsg is set)", EXIT_SOURCE)
    limits = server.Limits(conf.max_connections, conf.idle_timeout_seconds, conf.header_timeout_seconds)
    httpd, _thread = server.serve(conf.listen, server.make_handler(reg, follower), limits)
    reg.register(server.HttpStatsCollector(httpd.stats))
    host, port = httpd.server_address[:2]
    log.info("headroom exporter listening on http://%s:%d/metrics", host if ":" not in host else f"[{host}]", port)
    sdnotify.ready(f"serving on {conf.listen}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    log.info("stopping")
    sdnotify.notify("STOPPING=1")
    httpd.shutdown()
    if follower is not None:
        follower.stop()
    return 0
