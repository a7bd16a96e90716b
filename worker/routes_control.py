"""Routes of the control contract: GET/PUT /control/state, PUT /control/maintenance, health and /metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from headroom.contract import Maintenance, MaintenanceRequest, StateRequest, WorkerState, WorkerStatus
from headroom.dbfile import READY_MIN_FREE_BYTES, disk_room
from worker.control import Conflict, to_desired
from worker.controller import Controller


def get_controller(request: Request) -> Controller:
    return request.app.state.controller


ControllerDep = Annotated[Controller, Depends(get_controller)]


UNDER_WAY = {202: {"description": "accepted; the transition is still under way", "model": WorkerStatus}}
EXCLUDE = {"note", "cgroup"}  # the guard's cgroup worker fills these; this worker never does


def control_router(auth) -> APIRouter:
    router = APIRouter()
    guarded = [Depends(auth)]

    @router.get("/control/state", response_model=WorkerStatus, response_model_exclude=EXCLUDE)
    def read_state(controller: ControllerDep) -> dict:
        return controller.snapshot()

    @router.put("/control/state", dependencies=guarded, response_model=WorkerStatus, response_model_exclude=EXCLUDE,
                responses={**UNDER_WAY, 409: {"description": "impossible with this engine"}})
    def put_state(body: StateRequest, controller: ControllerDep, request: Request) -> JSONResponse:
        try:
            generation = controller.set_desired(to_desired(body, controller.clock()))
        except Conflict as err:
            return JSONResponse({"detail": str(err), "state": controller.snapshot()}, status_code=409)
        # Answer once the transition has begun (a pause: in-flight requests already aborted), not when a free ends.
        done = controller.wait_begun(generation, request.app.state.settings.worker.control_wait_seconds)
        return JSONResponse(controller.snapshot(), status_code=200 if done else 202)

    @router.get("/control/maintenance", response_model=Maintenance)
    def read_maintenance(controller: ControllerDep) -> dict:
        return controller.snapshot()["maintenance"]

    @router.put(
        "/control/maintenance",
        dependencies=guarded,
        response_model=WorkerStatus,
        response_model_exclude=EXCLUDE,
        responses=UNDER_WAY,
    )
    def put_maintenance(body: MaintenanceRequest, controller: ControllerDep, request: Request) -> JSONResponse:
        wait = request.app.state.settings.worker.control_wait_seconds
        generation = controller.set_maintenance(body.on, body.reason, body.retry_after_seconds)
        done = controller.wait_reached(wait) if generation is None else controller.wait_begun(generation, wait)
        return JSONResponse(controller.snapshot(), status_code=200 if done else 202)

    @router.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @router.get("/readyz", responses={503: {"description": "still starting"}})
    def readyz(controller: ControllerDep) -> JSONResponse:
        snap = controller.snapshot()
        store = controller.store.health_view()
        ready = snap["state"] != WorkerState.STARTING  # up and reconciling; a freed worker is ready (it wakes)
        body = {"ready": ready, "state": snap["state"], "error": snap["engine"]["error"], "store": store}
        room = disk_room(controller.store.path)
        if not store["writable"]:  # nothing can be accepted or finished until the job store can be written
            body.update(ready=False, error=controller.store.health.reason())
        elif room is not None and room < READY_MIN_FREE_BYTES:  # a small write may still succeed: not ready either
            body.update(ready=False, error=f"the worker state database's disk is full ({room} bytes left)")
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @router.get("/metrics", response_class=PlainTextResponse)
    def metrics(request: Request) -> Response:
        return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)

    return router
