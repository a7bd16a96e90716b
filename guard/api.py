"""The guard's HTTP routes: leases, headroom, maintenance, alerts, events, health; thin over the Manager.

No `from __future__ import annotations` here: the lease body's model is built per app (its limits are settings), and
FastAPI resolves a route's annotations from the module's globals unless they are evaluated where the route is defined.

Handlers are async and call the manager directly: its lock is only held for in-memory work and SQLite (sub-millisecond),
never across HTTP, and a thread pool here made the GIL hand-offs the dominant latency at 50 clients.
"""

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from guard.manager import Manager
from guard.leases import UnknownGpu, match_gpus, queue_order
from guard.schemas import AlertmanagerWebhook, HeartbeatRequest, MaintenanceRequest, lease_request_model
from guard.history import history_view
from guard.views import fast_path_stuck, headroom_view, lease_view, static_file, status_page

NOT_FOUND = {404: {"description": "no such lease"}}
LONG_POLL_MAX = 25.0  # seconds one request may hold open (below common proxy timeouts)
LeaseId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]


def field_error(field: str, message: str, status: int = 422) -> HTTPException:
    return HTTPException(status, detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}])


def engine_of(request: Request) -> Manager:
    return request.app.state.manager


ManagerDep = Annotated[Manager, Depends(engine_of)]


async def wait_while_queued(manager: Manager, lease_id: str, seconds: float, request: Request | None = None):
    """Long-poll: return the lease once it leaves 'waiting' or after `seconds`. While the client holds the poll open it
    counts as polling; once it hangs up (killed), it stops counting and the guard withdraws the request soon after."""
    deadline = time.monotonic() + min(seconds, LONG_POLL_MAX)
    manager.touch(lease_id)
    lease = manager.get_lease(lease_id)
    while lease is not None and lease.status == "waiting" and time.monotonic() < deadline:
        await asyncio.sleep(min(0.1, manager.settings.tick_seconds))
        if request is not None and await request.is_disconnected():
            return lease
        manager.touch(lease_id)
        lease = manager.get_lease(lease_id)
    return lease


def queue_position(manager: Manager, lease) -> int:
    """1 for the next request to be served; a poll shows the same position the first answer did."""
    order = [queued.id for queued in queue_order(manager.view.leases)]
    return order.index(lease.id) + 1 if lease.id in order else 1


def poll_back_seconds(manager: Manager) -> int:
    """How soon a waiting client should poll again: within half the grace after which its request is withdrawn."""
    return max(1, min(manager.settings.retry_after_seconds, int(manager.settings.queue_poll_grace_seconds / 2)))


def lease_response(manager: Manager, lease, position: int = 0, created: bool = False) -> JSONResponse:
    now = manager.clock()
    body = {"status": lease.status, "lease": lease_view(lease, now)}
    if lease.status == "waiting":
        retry = poll_back_seconds(manager)
        body.update(position=position or queue_position(manager, lease), reason=lease.reason, retry_after_seconds=retry)
        return JSONResponse(body, status_code=202, headers={"Retry-After": str(retry)})
    return JSONResponse(body, status_code=201 if created and lease.status == "granted" else 200)


def dry_run_response(manager: Manager, admission) -> JSONResponse:
    """`dry_run`: 200 would_grant (with the GPU it would pick), else 409 refused / 503 stale, as a real request."""
    if admission.outcome == "granted":
        return JSONResponse({"status": "would_grant", "gpu": admission.gpu, "reason": admission.reason})
    retry = manager.settings.retry_after_seconds
    status = "refused" if admission.outcome == "refused" else "would_wait"
    content = {"status": status, "reason": admission.reason, "shortfall": admission.shortfall,
               "retry_after_seconds": retry, "needs_free": admission.needs_free}
    return JSONResponse(content, status_code=503 if admission.stale else 409, headers={"Retry-After": str(retry)})


def add_status_routes(router: APIRouter) -> None:
    """What the status page and `headroom status --watch` read besides headroom, leases and events."""

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: Annotated[str, Path(max_length=64)]) -> Response:
        found = static_file(name)
        if found is None:
            raise HTTPException(404, detail=f"no static file {name}")
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "max-age=60"})

    @router.get("/v1/history", tags=["headroom"])
    async def history(manager: ManagerDep) -> dict:
        """The last 15 minutes of RAM and GPU memory (one sample per 2 s) and the moments the guard acted."""
        return history_view(manager)

    @router.get("/v1/top", tags=["headroom"])
    async def top(manager: ManagerDep, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict:
        """Top memory users: processes by RSS and GPU processes, each with its cgroup and systemd unit."""
        return await asyncio.to_thread(manager.top.view, manager.view.snapshot, limit)


def build_router(auth, settings) -> APIRouter:
    """Every route; `auth` guards the mutating ones and, unless guard.events_need_token is off, the event journal."""
    router = APIRouter()
    Auth = [Depends(auth)]
    LeaseRequest = lease_request_model(settings.max_ttl_seconds, settings.max_wait_seconds)

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(manager: ManagerDep) -> str:
        return status_page(manager)

    add_status_routes(router)

    @router.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        return {"ok": True}

    @router.get("/readyz", tags=["health"], responses={503: {"description": "not ready: signals stale or ticks stopped"}})
    async def readyz(manager: ManagerDep):
        store, view = manager.store.health_view(), manager.view
        if (stuck := fast_path_stuck(manager)) is not None:  # the watchdog withholds its ping for the same reason
            return JSONResponse({"ready": False, "reason": stuck, "store": store}, status_code=503)
        if view.decision.stale:
            return JSONResponse({"ready": False, "reason": "; ".join(view.decision.reasons), "store": store}, status_code=503)
        age = manager.clock() - view.snapshot.taken_at
        if age > manager.settings.stale_after_seconds:  # ticks stopped: say so even though no tick could notice
            return JSONResponse({"ready": False, "reason": f"last observation {age:.1f} s old", "store": store}, status_code=503)
        if not store["writable"]:  # still protecting, but nothing it does is recorded and new leases are refused
            return JSONResponse({"ready": False, "reason": manager.store.health.reason(), "store": store}, status_code=503)
        if store["recovered"] or store["corrupt_files"] or store["unrecorded"]:  # ready, with what the operator must know
            return {"ready": True, "store": store}
        return {"ready": True}

    @router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/v1/headroom", tags=["headroom"])
    async def headroom(manager: ManagerDep) -> dict:
        return headroom_view(manager)

    @router.post("/v1/leases", tags=["leases"], dependencies=Auth, status_code=201,
                 responses={200: {"description": "dry_run: it would be granted"}, 202: {"description": "queued"},
                            409: {"description": "refused: reason, shortfall"},
                            503: {"description": "signals stale"}})
    async def create_lease(body: LeaseRequest, manager: ManagerDep, request: Request):
        snapshot = manager.view.snapshot
        if body.gpu_bytes and snapshot.ok:
            try:
                match_gpus(snapshot, body.gpu)
            except UnknownGpu as err:
                raise field_error("gpu", str(err)) from None
            if not snapshot.gpus:
                raise field_error("gpu_bytes", "this host reports no GPU")
        fields = body.model_dump(exclude={"wait_seconds", "dry_run", "poll_seconds"})
        if body.dry_run:
            return dry_run_response(manager, manager.check(fields))
        lease, admission, position = manager.request(fields, body.wait_seconds)
        if lease is None:
            retry = manager.settings.retry_after_seconds
            content = {"status": "refused", "reason": admission.reason, "shortfall": admission.shortfall,
                       "retry_after_seconds": retry}
            return JSONResponse(content, status_code=503 if admission.stale else 409, headers={"Retry-After": str(retry)})
        if lease.status == "waiting" and body.wait_seconds > 0:
            poll = body.wait_seconds if body.poll_seconds is None else min(body.poll_seconds, body.wait_seconds)
            lease = await wait_while_queued(manager, lease.id, poll, request)
        return lease_response(manager, lease, position, created=True)

    @router.get("/v1/leases", tags=["leases"])
    async def list_leases(manager: ManagerDep) -> dict:
        now = manager.clock()
        return {"leases": [lease_view(lease, now) for lease in manager.view.leases]}

    @router.get("/v1/leases/{lease_id}", tags=["leases"], responses={202: {"description": "still queued"}, **NOT_FOUND})
    async def get_lease(lease_id: LeaseId, manager: ManagerDep, request: Request,
                        wait: Annotated[float, Query(ge=0, le=LONG_POLL_MAX, description="long-poll while queued")] = 0):
        lease = await wait_while_queued(manager, lease_id, wait, request)
        if lease is None:
            raise HTTPException(404, detail=f"no lease {lease_id}")
        return lease_response(manager, lease)

    @router.post("/v1/leases/{lease_id}/heartbeat", tags=["leases"], dependencies=Auth,
                 responses={202: {"description": "still queued"}, 410: {"description": "the lease has ended"}, **NOT_FOUND})
    async def heartbeat(lease_id: LeaseId, manager: ManagerDep, body: HeartbeatRequest | None = None):
        lease = manager.heartbeat(lease_id, body.pid if body else None)
        if lease is None:
            raise HTTPException(404, detail=f"no lease {lease_id}")
        if not lease.active:
            raise HTTPException(410, detail=f"lease {lease_id} is {lease.status}: {lease.reason}")
        return lease_response(manager, lease)

    @router.delete("/v1/leases/{lease_id}", tags=["leases"], dependencies=Auth, responses=NOT_FOUND)
    async def release(lease_id: LeaseId, manager: ManagerDep):
        lease = manager.release(lease_id)
        if lease is None:
            raise HTTPException(404, detail=f"no lease {lease_id}")
        return {"status": lease.status, "lease": lease_view(lease, manager.clock())}

    @router.get("/v1/maintenance", tags=["maintenance"])
    async def get_maintenance(manager: ManagerDep) -> dict:
        return manager.view.maintenance.as_dict()

    @router.put("/v1/maintenance", tags=["maintenance"], dependencies=Auth)
    async def put_maintenance(body: MaintenanceRequest, manager: ManagerDep) -> dict:
        return manager.set_maintenance(True, body.reason, body.retry_after_seconds).as_dict()

    @router.delete("/v1/maintenance", tags=["maintenance"], dependencies=Auth)
    async def delete_maintenance(manager: ManagerDep) -> dict:
        return manager.set_maintenance(False).as_dict()

    @router.post("/v1/alerts", tags=["alerts"], dependencies=Auth)
    async def alerts(body: AlertmanagerWebhook, manager: ManagerDep) -> dict:
        count = await asyncio.to_thread(manager.alert, [a.model_dump() for a in body.alerts])  # a tick does HTTP
        return {"received": count}

    @router.get("/v1/events", tags=["events"], dependencies=Auth if settings.events_need_token else [])
    async def events(manager: ManagerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               after: Annotated[int, Query(ge=0, le=2**62)] = 0,
               kind: Annotated[str | None, Query(max_length=50)] = None) -> dict:
        return {"events": manager.store.events(limit, after, kind)}

    return router

