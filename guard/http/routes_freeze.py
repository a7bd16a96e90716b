"""The freezer's HTTP routes: what is frozen now, and thawing one process by hand (token required)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path

from guard.http.api import Front
from guard.http.views import frozen_view

Pid = Annotated[int, Path(ge=1, le=4194304, description="a process id (Linux pid_max is at most 4194304)")]


def build_freeze_router(auth) -> APIRouter:
    router = APIRouter(tags=["freezer"])

    @router.get("/v1/frozen")
    async def frozen(front: Front) -> dict:
        """Processes the guard froze (pid, method, cgroup, reason, how long), and how past freezes ended."""
        return frozen_view(front.view(), front.settings)

    @router.post("/v1/frozen/{pid}/thaw", dependencies=[Depends(auth)],
                 responses={404: {"description": "not frozen by the guard"},
                            503: {"description": "the kernel refused the thaw (it is retried every second)"}})
    async def thaw(pid: Pid, front: Front) -> dict:
        """Thaw a process the guard froze; it is then never frozen again (a person decided). 404 when it is not
        frozen."""
        thawed, error = front.thaw(pid)
        if not thawed:
            if error is not None:
                raise HTTPException(
                    503,
                    detail=f"pid {pid} is still frozen: the kernel refused the thaw ({error}); "
                    "the guard retries it every second",
                )
            raise HTTPException(
                404,
                detail=[
                    {"loc": ["path", "pid"], "msg": f"pid {pid} is not frozen by the guard", "type": "value_error"}
                ],
            )
        return {"thawed": pid, "frozen": frozen_view(front.view(), front.settings)}

    return router
