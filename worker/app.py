"""The worker's FastAPI application factory: store, engine, controller and routes wired together (nothing at import)."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI

from headroom import gate
from headroom.auth import bearer_dependency, load_or_create_token
from headroom.dbfile import install_store_handlers
from headroom.paths import ensure_private_dir
from worker.engines import ModelEngine, make_engine
from worker.controller import Controller
from worker.metrics import build_registry
from worker.routes_control import control_router
from worker.routes_jobs import jobs_router
from worker.store import DB_FILE, Store

log = logging.getLogger("headroom.worker")
PROBE_SECONDS = 2.0


def create_app(settings, engine: ModelEngine | None = None, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """The worker app; the controller thread starts and stops with the app's lifespan."""
    ensure_private_dir(settings.state_dir)
    token = load_or_create_token(settings.state_dir, settings.worker.token or None)
    store = Store(settings.state_dir / DB_FILE, settings.worker.store_on_corrupt)
    kill_at = os.environ.get("HEADROOM_WORKER_TEST_KILL_AT") or None  # tests only: see Controller._kill_point
    controller = Controller(store, engine or make_engine(settings), settings.worker.concurrency, on_fatal,
                            settings.worker.pause_mode, kill_at)
    controller.default_retry_after = settings.worker.retry_after_seconds

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        controller.start()
        prober = asyncio.create_task(_probe_while_failing(store))
        try:
            yield
        finally:
            prober.cancel()
            controller.stop()
            store.close()

    app = FastAPI(title="headroom worker", lifespan=lifespan,
                  description="vLLM batch runner: job API (OpenAI batch JSONL), control endpoint, /metrics.")
    app.state.settings, app.state.controller, app.state.registry = settings, controller, build_registry(controller)
    auth = bearer_dependency(token)
    app.include_router(control_router(auth))
    app.include_router(jobs_router(auth, settings.worker.results_need_token))
    install_store_handlers(app, "the worker's job database", lambda request: settings.worker.retry_after_seconds,
                           "; nothing was changed, retry once there is room")
    gate.install(app, token, auth, {"/v1/batches": settings.worker.max_upload_bytes})
    return app


async def _probe_while_failing(store: Store) -> None:
    """While writes fail, try a tiny write every few seconds, so /readyz turns 200 again once there is room."""
    while True:
        await asyncio.sleep(PROBE_SECONDS)
        if not store.health.writable:
            await asyncio.to_thread(store.probe)
