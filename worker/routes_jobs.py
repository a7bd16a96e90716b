"""Routes of the job API: submit a batch (JSONL), read its status, requests and output, cancel it."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from worker.batchfile import BatchInvalid, parse_batch
from worker.openai_format import cancelled_line
from worker.routes_control import ControllerDep
from worker.store import BatchNotFound


class TooLarge(Exception):
    pass


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, or TooLarge as soon as it passes `limit` bytes (Content-Length is checked first)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _maintenance_answer(controller) -> JSONResponse | None:
    maintenance = controller.maintenance
    if not maintenance.on:
        return None
    retry = maintenance.retry_after_seconds
    if retry is None:
        retry = controller.default_retry_after
    reason = maintenance.reason or "maintenance"
    return JSONResponse({"detail": f"the worker is in maintenance: {reason}; queued work is kept",
                         "reason": maintenance.reason, "retry_after_seconds": retry},
                        status_code=503, headers={"Retry-After": str(retry)})


def _batch_or_404(fn, batch_id: str):
    try:
        return fn(batch_id)
    except BatchNotFound:
        raise HTTPException(404, f"no batch {batch_id!r}") from None


NO_BATCH = {404: {"description": "no such batch"}}


def jobs_router(auth, results_need_token: bool = True) -> APIRouter:
    """The job routes; `auth` guards changes and, unless worker.results_need_token is off, the generated text."""
    router = APIRouter(prefix="/v1/batches")
    guarded = [Depends(auth)]
    results = guarded if results_need_token else []

    @router.post(
        "",
        dependencies=guarded,
        status_code=201,
        responses={503: {"description": "maintenance: retry after Retry-After"}, 422: {"description": "invalid lines"}},
    )
    async def submit(
        request: Request,
        controller: ControllerDep,
        priority: Literal["production", "test", "bulk"] = "bulk",
        name: Annotated[str | None, Query(max_length=200)] = None,
    ):
        busy = _maintenance_answer(controller)
        if busy is not None:
            return busy
        ws = request.app.state.settings.worker
        try:
            data = await _read_limited(request, ws.max_upload_bytes)
        except TooLarge:
            return JSONResponse(
                {"detail": f"the upload is larger than max_upload_bytes ({ws.max_upload_bytes} bytes)"}, status_code=413
            )
        try:
            lines = parse_batch(data, ws.max_requests_per_batch)
        except BatchInvalid as err:
            return JSONResponse({"detail": str(err), "errors": err.errors, "error_count": err.total}, status_code=422)
        batch_id = controller.store.add_batch(priority, lines, name)
        controller.poke()
        return JSONResponse(controller.store.batch(batch_id), status_code=201)

    @router.get("")
    def list_batches(controller: ControllerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
        return {"object": "list", "data": controller.store.list_batches(limit)}

    @router.get("/{batch_id}", responses=NO_BATCH)
    def status(batch_id: str, controller: ControllerDep) -> dict:
        return _batch_or_404(controller.store.batch, batch_id)

    @router.get("/{batch_id}/requests", dependencies=results, responses=NO_BATCH)
    def requests(batch_id: str, controller: ControllerDep) -> dict:
        return {"object": "list", "data": _batch_or_404(controller.store.requests, batch_id)}

    @router.get(
        "/{batch_id}/output",
        dependencies=results,
        response_class=Response,
        responses={200: {"content": {"application/jsonl": {}}, "description": "one JSON line per request"}, **NO_BATCH},
    )
    def output(batch_id: str, controller: ControllerDep) -> Response:
        rows = _batch_or_404(controller.store.finished_requests, batch_id)
        lines = [
            row["result"] if row["result"] else json.dumps(cancelled_line(row["id"], row["custom_id"])) for row in rows
        ]
        return Response("".join(line + "\n" for line in lines), media_type="application/jsonl")

    @router.post("/{batch_id}/cancel", dependencies=guarded, responses=NO_BATCH)
    def cancel(batch_id: str, controller: ControllerDep) -> dict:
        return _batch_or_404(controller.cancel, batch_id)

    return router
