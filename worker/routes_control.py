"""Routes of the control contract: GET/PUT /control/state, PUT /control/maintenance, health and /metrics."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.control import Conflict, MaintenanceRequest, StateRequest
from worker.runner import Runner
from worker.types import Maintenance


def get_runner(request: Request) -> Runner:
    return request.app.state.runner


RunnerDep = Annotated[Runner, Depends(get_runner)]


def control_router(auth) -> APIRouter:
    router = APIRouter()
    guarded = [Depends(auth)]

    @router.get("/control/state")
    def read_state(runner: RunnerDep) -> dict:
        return runner.snapshot()

    @router.put("/control/state", dependencies=guarded)
    def put_state(body: StateRequest, runner: RunnerDep, request: Request) -> JSONResponse:
        try:
            runner.set_desired(body.to_desired())
        except Conflict as err:
            return JSONResponse({"detail": str(err), "state": runner.snapshot()}, status_code=409)
        done = runner.wait_reached(request.app.state.settings.worker.control_wait_seconds)
        return JSONResponse(runner.snapshot(), status_code=200 if done else 202)

    @router.get("/control/maintenance")
    def read_maintenance(runner: RunnerDep) -> dict:
        return runner.snapshot()["maintenance"]

    @router.put("/control/maintenance", dependencies=guarded)
    def put_maintenance(body: MaintenanceRequest, runner: RunnerDep, request: Request) -> JSONResponse:
        current = runner.maintenance
        if body.on != current.on or body.reason != current.reason or body.retry_after_seconds != current.retry_after_seconds:
            since = current.since if body.on == current.on else time.time()
            runner.set_maintenance(Maintenance(body.on, body.reason, body.retry_after_seconds, since))
        done = runner.wait_reached(request.app.state.settings.worker.control_wait_seconds)
        return JSONResponse(runner.snapshot(), status_code=200 if done else 202)

    @router.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @router.get("/readyz")
    def readyz(runner: RunnerDep) -> JSONResponse:
        snap = runner.snapshot()
        store = runner.store.health_view()
        ready = snap["state"] != "starting"  # up and reconciling; a freed worker is ready (it wakes on request)
        body = {"ready": ready, "state": snap["state"], "error": snap["engine"]["error"], "store": store}
        if not store["writable"]:  # nothing can be accepted or finished until the job store can be written
            body.update(ready=False, error=runner.store.health.reason())
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @router.get("/metrics")
    def metrics(request: Request) -> Response:
        return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)

    return router
