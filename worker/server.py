"""Runs the worker app under uvicorn on a socket bound up front (a busy address is a clear error, exit 3)."""

from __future__ import annotations

import logging

from headroom.errors import EXIT_CONFIG, HeadroomError

log = logging.getLogger("headroom.worker")


def serve(settings) -> int:
    """Serve `settings.worker` until SIGTERM (the wiring in headroom.cli loads the settings and sets up logging)."""
    import uvicorn

    from headroom.serving import bind, make_server
    from worker.app import create_app

    ws = settings.worker
    set_oom_score_adj(ws.oom_score_adj)
    if ws.engine == "vllm" and not ws.model:
        raise HeadroomError("worker.model is required when worker.engine = 'vllm' (a model directory or "
                            "Hugging Face name)", EXIT_CONFIG)
    sock = bind(ws.listen, "worker")
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    server = make_server(app, log_level=settings.log_level, access_log=settings.log_level == "debug")
    log.info("worker listening on %s (engine %s)", ws.listen, ws.engine)
    server.run(sockets=[sock])
    if fatal:
        raise HeadroomError(fatal[0], EXIT_CONFIG)
    return 0


def set_oom_score_adj(value: int | None, proc_self: str = "/proc/self") -> bool:
    """Write the worker's oom_score_adj (inherited by the engine processes it starts); refused: a warning, never fatal."""
    if value is None:
        return False
    try:
        with open(f"{proc_self}/oom_score_adj", "w") as handle:
            handle.write(str(value))
        return True
    except OSError as err:
        log.warning("cannot set oom_score_adj to %d: %s (lowering it needs CAP_SYS_RESOURCE; under systemd the unit's "
                    "OOMScoreAdjust= sets it)", value, err.strerror)
        return False
