"""Serving a part: bind the address up front (a busy port is exit 3; exporter, guard, worker), uvicorn with
sd_notify."""

from __future__ import annotations

import errno
import socket
from typing import Callable

from headroom import sdnotify
from headroom.errors import EXIT_BIND, HeadroomError
from headroom.settings_base import parse_listen


def bind(listen: str, part: str) -> socket.socket:
    """A listening socket on `listen`, or HeadroomError(EXIT_BIND) naming the setting to change."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        reason = "address already in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
        raise HeadroomError(
            f"{part} cannot listen on {listen}: {reason}; is another {part} running? Choose a free "
            f"address with --listen HOST:PORT, [{part}] listen or HEADROOM_{part.upper()}__LISTEN",
            EXIT_BIND,
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def make_server(
    app,
    log_level: str = "warning",
    access_log: bool = False,
    graceful_seconds: float = 10,
    healthy: Callable[[], bool] = lambda: True,
):
    """A uvicorn.Server that tells systemd READY=1 once it accepts connections, and pings the watchdog while
    `healthy()` (a part whose own loop hangs stops the pings, and systemd restarts it)."""
    import uvicorn

    class NotifyingServer(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                sdnotify.ready(healthy=healthy)

        async def shutdown(self, sockets=None) -> None:
            sdnotify.notify("STOPPING=1")
            await super().shutdown(sockets=sockets)

    config = uvicorn.Config(
        app, log_level=log_level, access_log=access_log, lifespan="on", timeout_graceful_shutdown=graceful_seconds
    )
    return NotifyingServer(config)
