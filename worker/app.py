"""The worker's FastAPI application factory: store, engine, runner and routes wired together (nothing at import)."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI

from headroom.auth import bearer_dependency, load_or_create_token
from headroom.paths import ensure_private_dir
from worker.engines import Engine, make_engine
from worker.metrics import build_registry
from worker.routes_control import control_router
from worker.routes_jobs import jobs_router
from worker.runner import Runner
from worker.store import DB_FILE, Store


def create_app(settings, engine: Engine | None = None, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """The worker app; the runner thread starts and stops with the app's lifespan."""
    ensure_private_dir(settings.state_dir)
    token = load_or_create_token(settings.state_dir, settings.worker.token or None)
    store = Store(settings.state_dir / DB_FILE)
    kill_at = os.environ.get("HEADROOM_WORKER_TEST_KILL_AT") or None  # tests only: see Runner._kill_point
    runner = Runner(store, engine or make_engine(settings), settings.worker.concurrency, on_fatal,
                    settings.worker.pause_mode, kill_at)
    runner.default_retry_after = settings.worker.retry_after_seconds

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runner.start()
        try:
            yield
        finally:
            runner.stop()
            store.close()

    app = FastAPI(title="headroom worker", lifespan=lifespan,
                  description="vLLM batch runner: job API (OpenAI batch JSONL), control endpoint, /metrics.")
    app.state.settings, app.state.runner, app.state.registry = settings, runner, build_registry(runner)
    auth = bearer_dependency(token)
    app.include_router(control_router(auth))
    app.include_router(jobs_router(auth))
    return app
