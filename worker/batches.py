"""A request's and a batch's statuses (the job store's words, in SQL too) and a batch as the OpenAI batch object."""

from __future__ import annotations

import sqlite3
from enum import StrEnum
from typing import Any


class RequestStatus(StrEnum):
    """Where one request of a batch is; stored by its plain name."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BatchStatus(StrEnum):
    """A batch's status, derived from its requests' (never stored)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


FINISHED = (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED)
UNFINISHED = (RequestStatus.QUEUED, RequestStatus.RUNNING)


def batch_status(cancelled_at: float | None, counts: dict[str, int]) -> BatchStatus:
    """The batch's status from its request counts by status."""
    queued, running = counts.get(RequestStatus.QUEUED, 0), counts.get(RequestStatus.RUNNING, 0)
    if cancelled_at is not None:
        return BatchStatus.CANCELLING if running else BatchStatus.CANCELLED
    if queued + running == 0:
        return BatchStatus.COMPLETED
    if running or any(counts.get(name, 0) for name in FINISHED):
        return BatchStatus.IN_PROGRESS
    return BatchStatus.QUEUED


def describe(row: sqlite3.Row, counts: dict[str, int], finished_at: float | None) -> dict[str, Any]:
    """The OpenAI batch object for a batches row, its request counts by status and its last finish time."""
    status = batch_status(row["cancelled_at"], counts)
    done = {name.value: counts.get(name, 0) for name in FINISHED}
    return {
        "id": row["id"], "object": "batch", "priority": row["priority"], "name": row["name"], "status": status.value,
        "created_at": row["created_at"], "cancelled_at": row["cancelled_at"],
        "completed_at": finished_at if status in (BatchStatus.COMPLETED, BatchStatus.CANCELLED) else None,
        "request_counts": {"total": row["total"], "queued": counts.get(RequestStatus.QUEUED, 0),
                           "running": counts.get(RequestStatus.RUNNING, 0), **done},
    }
