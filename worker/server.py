"""Runs the worker app under uvicorn on a socket bound up front (a busy address is a clear error, exit 3)."""

from __future__ import annotations

import logging
import socket

from headroom.errors import EXIT_BIND, EXIT_CONFIG, HeadroomError
from headroom.settings_base import parse_listen

log = logging.getLogger("headroom.worker")


def bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise HeadroomError(f"worker cannot listen on {listen}: {err.strerror}; is another worker running? "
                            "Set worker.listen in the config or pass --listen HOST:PORT", EXIT_BIND) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(settings) -> int:
    import uvicorn

    from worker.app import create_app

    ws = settings.worker
    if ws.engine == "vllm" and not ws.model:
        raise HeadroomError("worker.model is required when worker.engine = 'vllm' (a model directory or "
                            "Hugging Face name)", EXIT_CONFIG)
    sock = bind(ws.listen)
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = uvicorn.Config(app, log_level=settings.log_level, access_log=settings.log_level == "debug",
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    log.info("worker listening on %s (engine %s)", ws.listen, ws.engine)
    server.run(sockets=[sock])
    if fatal:
        raise HeadroomError(fatal[0], EXIT_CONFIG)
    return 0
