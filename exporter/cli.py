"""`headroom exporter`: serve the metrics until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

log = logging.getLogger("headroom.exporter")


def register(subparsers: argparse._SubParsersAction) -> None:
    from headroom.cli import add_config_argument

    parser = subparsers.add_parser("exporter", help="serve GPU/RAM/swap/pressure/OOM metrics on /metrics")
    add_config_argument(parser)
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:9840)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from exporter import registry, server
    from headroom.cli import setup_logging
    from headroom.config import load_settings
    from headroom import sdnotify
    from headroom.errors import EXIT_SOURCE, HeadroomError

    overrides = {"exporter": {"listen": args.listen}} if args.listen else {}
    settings = load_settings(args.config, **overrides)
    setup_logging(settings.log_level)
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
