"""The worker's FastAPI application factory: store, engine, runner and routes wired together (nothing at import)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from headroom.auth import bearer_dependency, load_or_create_token
from headroom.dbfile import describe_error
from headroom.paths import ensure_private_dir
from worker.engines import Engine, make_engine
from worker.metrics import build_registry
from worker.routes_control import control_router
from worker.routes_jobs import jobs_router
from worker.runner import Runner
from worker.store import DB_FILE, Store, StoreUnavailable

log = logging.getLogger("headroom.worker")
PROBE_SECONDS = 2.0


def create_app(settings, engine: Engine | None = None, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """The worker app; the runner thread starts and stops with the app's lifespan."""
    ensure_private_dir(settings.state_dir)
    token = load_or_create_token(settings.state_dir, settings.worker.token or None)
    store = Store(settings.state_dir / DB_FILE, settings.worker.store_on_corrupt)
    runner = Runner(store, engine or make_engine(settings), settings.worker.concurrency, on_fatal)
    runner.default_retry_after = settings.worker.retry_after_seconds

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runner.start()
        prober = asyncio.create_task(_probe_while_failing(store))
        try:
            yield
        finally:
            prober.cancel()
            runner.stop()
            store.close()

    app = FastAPI(title="headroom worker", lifespan=lifespan,
                  description="vLLM batch runner: job API (OpenAI batch JSONL), control endpoint, /metrics.")
    app.state.settings, app.state.runner, app.state.registry = settings, runner, build_registry(runner)
    auth = bearer_dependency(token)
    app.include_router(control_router(auth))
    app.include_router(jobs_router(auth))
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(sqlite3.Error, _store_error)
    return app


async def _probe_while_failing(store: Store) -> None:
    """While writes fail, try a tiny write every few seconds, so /readyz turns 200 again once there is room."""
    while True:
        await asyncio.sleep(PROBE_SECONDS)
        if not store.health.writable:
            await asyncio.to_thread(store.probe)


async def _store_unavailable(request: Request, err: StoreUnavailable) -> JSONResponse:
    """A write failed: 507 when the disk is full, else 503, with the reason; never a bare 500."""
    retry = request.app.state.settings.worker.retry_after_seconds
    return JSONResponse({"detail": f"{err}; nothing was changed, retry once there is room",
                         "reason": "disk full" if err.full else "store unavailable"},
                        status_code=507 if err.full else 503, headers={"Retry-After": str(retry)})


async def _store_error(request: Request, err: sqlite3.Error) -> JSONResponse:
    """A read of the job database failed (damaged after start): 503 with SQLite's words."""
    log.error("job database error on %s %s: %s", request.method, request.url.path, describe_error(err))
    return JSONResponse({"detail": f"the worker's job database failed: {describe_error(err)}", "reason": "store error"},
                        status_code=503)
