"""The guard's HTTP routes by resource: leases, headroom and the page, health, maintenance, alerts, events; thin over
the facade (guard/core/facade.py): they read the published view and send commands, never touching the Manager.

No `from __future__ import annotations` here: the lease body's model is built per app (its limits are settings), and
FastAPI resolves a route's annotations from the module's globals unless they are evaluated where the route is defined.

Handlers are async and call the facade directly: the manager's lock is only held for in-memory work and SQLite
(sub-millisecond), never across HTTP, and a thread pool here made the GIL hand-offs the dominant latency at 50 clients.
"""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from guard.core.facade import GuardFacade
from guard.common.types import AdmissionOutcome, LeaseStatus
from guard.core.leases import UnknownGpu, match_gpus, queue_order
from guard.http.schemas import AlertmanagerWebhook, HeartbeatRequest, MaintenanceRequest, lease_request_model
from guard.core.history import history_view
from guard.http.views import fast_path_stuck, headroom_view, lease_view, static_file, status_page

NOT_FOUND = {404: {"description": "no such lease"}}
LONG_POLL_MAX = 25.0  # seconds one request may hold open (below common proxy timeouts)
LeaseId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]


def field_error(field: str, message: str, status: int = 422) -> HTTPException:
    return HTTPException(status, detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}])


def front_of(request: Request) -> GuardFacade:
    return request.app.state.front


Front = Annotated[GuardFacade, Depends(front_of)]


async def wait_while_queued(front: GuardFacade, lease_id: str, seconds: float, request: Request | None = None):
    """Long-poll (at most LONG_POLL_MAX): the lease once it leaves 'waiting', woken by the guard's publications."""
    disconnected = request.is_disconnected if request is not None else None
    return await front.wait_while_queued(lease_id, min(seconds, LONG_POLL_MAX), disconnected)


def queue_position(front: GuardFacade, lease) -> int:
    """1 for the next request to be served; a poll shows the same position the first answer did."""
    order = [queued.id for queued in queue_order(front.guard_view().leases)]
    return order.index(lease.id) + 1 if lease.id in order else 1


def poll_back_seconds(settings) -> int:
    """How soon a waiting client should poll again: within half the grace after which its request is withdrawn."""
    return max(1, min(settings.retry_after_seconds, int(settings.queue_poll_grace_seconds / 2)))


def lease_response(front: GuardFacade, lease, position: int = 0, created: bool = False) -> JSONResponse:
    now = front.clock()
    body = {"status": lease.status, "lease": lease_view(lease, now)}
    if lease.status == LeaseStatus.WAITING:
        retry = poll_back_seconds(front.settings)
        body.update(position=position or queue_position(front, lease), reason=lease.reason, retry_after_seconds=retry)
        return JSONResponse(body, status_code=202, headers={"Retry-After": str(retry)})
    return JSONResponse(body, status_code=201 if created and lease.status == LeaseStatus.GRANTED else 200)


def dry_run_response(settings, admission) -> JSONResponse:
    """`dry_run`: 200 would_grant (with the GPU it would pick), else 409 refused / 503 stale, as a real request."""
    if admission.outcome == AdmissionOutcome.GRANTED:
        return JSONResponse({"status": "would_grant", "gpu": admission.gpu, "reason": admission.reason})
    retry = settings.retry_after_seconds
    status = "refused" if admission.outcome == AdmissionOutcome.REFUSED else "would_wait"
    content = {"status": status, "reason": admission.reason, "shortfall": admission.shortfall,
               "retry_after_seconds": retry, "needs_free": admission.needs_free}
    return JSONResponse(content, status_code=503 if admission.stale else 409, headers={"Retry-After": str(retry)})


def page_routes() -> APIRouter:
    """The status page, its files, and what it and `headroom status --watch` read besides leases and events."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(front: Front) -> str:
        return status_page(front.guard_view())

    @router.get("/static/{name}", include_in_schema=False)
    async def static(name: Annotated[str, Path(max_length=64)]) -> Response:
        found = static_file(name)
        if found is None:
            raise HTTPException(404, detail=f"no static file {name}")
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "max-age=60"})

    @router.get("/v1/headroom", tags=["headroom"])
    async def headroom(front: Front) -> dict:
        return headroom_view(front.view(), front.settings)

    @router.get("/v1/history", tags=["headroom"])
    async def history(front: Front) -> dict:
        """The last 15 minutes of RAM and GPU memory (one sample per 2 s) and the moments the guard acted."""
        return history_view(front.history(), front.events, front.clock())

    @router.get("/v1/top", tags=["headroom"])
    async def top(front: Front, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict:
        """Top memory users: processes by RSS and GPU processes, each with its cgroup and systemd unit."""
        return await asyncio.to_thread(front.top, limit)

    return router


def health_routes() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @router.get("/readyz", responses={503: {"description": "not ready: signals stale or ticks stopped"}})
    async def readyz(front: Front):
        read, settings = front.view(), front.settings
        store, view = read.store, read.guard
        if (stuck := fast_path_stuck(read, settings)) is not None:  # the watchdog withholds its ping for this too
            return JSONResponse({"ready": False, "reason": stuck, "store": store}, status_code=503)
        if view.decision.stale:
            return JSONResponse(
                {"ready": False, "reason": "; ".join(view.decision.reasons), "store": store}, status_code=503
            )
        age = read.now - view.snapshot.taken_at
        if age > settings.stale_after_seconds:  # ticks stopped: say so even though no tick could notice
            return JSONResponse(
                {"ready": False, "reason": f"last observation {age:.1f} s old", "store": store}, status_code=503
            )
        if not store["writable"]:  # still protecting, but nothing it does is recorded and new leases are refused
            return JSONResponse({"ready": False, "reason": read.store_reason, "store": store}, status_code=503)
        if (
            store["recovered"] or store["corrupt_files"] or store["unrecorded"]
        ):  # ready, with what the operator must know
            return {"ready": True, "store": store}
        return {"ready": True}

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def lease_routes(auth, settings) -> APIRouter:
    """Request (or dry-run), list, read (long-poll while queued), heartbeat and release leases."""
    router = APIRouter(tags=["leases"])
    Auth = [Depends(auth)]
    LeaseRequest = lease_request_model(settings.max_ttl_seconds, settings.max_wait_seconds)

    @router.post(
        "/v1/leases",
        dependencies=Auth,
        status_code=201,
        responses={
            200: {"description": "dry_run: it would be granted"},
            202: {"description": "queued"},
            409: {"description": "refused: reason, shortfall"},
            503: {"description": "signals stale"},
        },
    )
    async def create_lease(body: LeaseRequest, front: Front, request: Request):
        snapshot = front.guard_view().snapshot
        if body.gpu_bytes and snapshot.ok:
            try:
                match_gpus(snapshot, body.gpu)
            except UnknownGpu as err:
                raise field_error("gpu", str(err)) from None
            if not snapshot.gpus:
                raise field_error("gpu_bytes", "this host reports no GPU")
        fields = body.model_dump(exclude={"wait_seconds", "dry_run", "poll_seconds"})
        if body.dry_run:
            return dry_run_response(front.settings, front.check(fields))
        lease, admission, position = front.request(fields, body.wait_seconds)
        if lease is None:
            retry = front.settings.retry_after_seconds
            content = {
                "status": "refused",
                "reason": admission.reason,
                "shortfall": admission.shortfall,
                "retry_after_seconds": retry,
            }
            return JSONResponse(
                content, status_code=503 if admission.stale else 409, headers={"Retry-After": str(retry)}
            )
        if lease.status == LeaseStatus.WAITING and body.wait_seconds > 0:
            poll = body.wait_seconds if body.poll_seconds is None else min(body.poll_seconds, body.wait_seconds)
            lease = await wait_while_queued(front, lease.id, poll, request)
        return lease_response(front, lease, position, created=True)

    @router.get("/v1/leases")
    async def list_leases(front: Front) -> dict:
        now = front.clock()
        return {"leases": [lease_view(lease, now) for lease in front.guard_view().leases]}

    @router.get("/v1/leases/{lease_id}", responses={202: {"description": "still queued"}, **NOT_FOUND})
    async def get_lease(
        lease_id: LeaseId,
        front: Front,
        request: Request,
        wait: Annotated[float, Query(ge=0, le=LONG_POLL_MAX, description="long-poll while queued")] = 0,
    ):
        lease = await wait_while_queued(front, lease_id, wait, request)
        if lease is None:
            raise HTTPException(404, detail=f"no lease {lease_id}")
        return lease_response(front, lease)

    @router.post(
        "/v1/leases/{lease_id}/heartbeat",
        dependencies=Auth,
        responses={202: {"description": "still queued"}, 410: {"description": "the lease has ended"}, **NOT_FOUND},
    )
    async def heartbeat(lease_id: LeaseId, front: Front, body: HeartbeatRequest | None = None):
        lease = front.heartbeat(lease_id, body.pid if body else None)
        if lease is None:
            raise HTTPException(404, detail=f"no lease {lease_id}")
        if not lease.active:
            raise HTTPException(410, detail=f"lease {lease_id} is {lease.status}: {lease.reason}")
        return lease_response(front, lease)

    @router.delete("/v1/leases/{lease_id}", dependencies=Auth, responses=NOT_FOUND)
    async def release(lease_id: LeaseId, front: Front):
        lease = front.release(lease_id)
        if lease is None:
            raise HTTPException(404, detail=f"no lease {lease_id}")
        return {"status": lease.status, "lease": lease_view(lease, front.clock())}

    return router


def operator_routes(auth, settings) -> APIRouter:
    """Maintenance mode, Alertmanager's webhook and the event journal."""
    router = APIRouter()
    Auth = [Depends(auth)]

    @router.get("/v1/maintenance", tags=["maintenance"])
    async def get_maintenance(front: Front) -> dict:
        return front.guard_view().maintenance.as_dict()

    @router.put("/v1/maintenance", tags=["maintenance"], dependencies=Auth)
    async def put_maintenance(body: MaintenanceRequest, front: Front) -> dict:
        return front.maintenance(True, body.reason, body.retry_after_seconds).as_dict()

    @router.delete("/v1/maintenance", tags=["maintenance"], dependencies=Auth)
    async def delete_maintenance(front: Front) -> dict:
        return front.maintenance(False).as_dict()

    @router.post("/v1/alerts", tags=["alerts"], dependencies=Auth)
    async def alerts(body: AlertmanagerWebhook, front: Front) -> dict:
        count = await asyncio.to_thread(front.alert, [a.model_dump() for a in body.alerts])  # a tick does HTTP
        return {"received": count}

    @router.get("/v1/events", tags=["events"], dependencies=Auth if settings.events_need_token else [])
    async def events(
        front: Front,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        kind: Annotated[str | None, Query(max_length=50)] = None,
    ) -> dict:
        return {"events": front.events(limit, after, kind)}

    return router


def build_router(auth, settings) -> APIRouter:
    """Every route; `auth` guards the mutating ones and, unless guard.events_need_token is off, the event journal."""
    router = APIRouter()
    for part in (page_routes(), health_routes(), lease_routes(auth, settings), operator_routes(auth, settings)):
        router.include_router(part)
    return router
