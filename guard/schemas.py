"""Request bodies of the guard's HTTP API (pydantic): strict, bounded, sizes as bytes or human strings."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from headroom.sizes import parse_size

MAX_BYTES = 2**50  # 1 PiB: anything larger is a typo, not a request


def _bytes(value: Any) -> Any:
    if isinstance(value, str):
        return parse_size(value)
    return value


def _gpu(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Bytes = Annotated[int, BeforeValidator(_bytes), Field(ge=0, le=MAX_BYTES, description="bytes, or a size such as 14GiB")]


class LeaseRequest(BaseModel):
    """Ask for RAM and/or GPU bytes for a test launch."""

    model_config = ConfigDict(extra="forbid")

    holder: str = Field(min_length=1, max_length=200, description="who holds the lease, e.g. 'olmo-7b-eval'")
    ram_bytes: Bytes = 0
    gpu_bytes: Bytes = 0
    gpu: Annotated[str, BeforeValidator(_gpu)] = Field("any", min_length=1, max_length=100,
                                                       description="'any', a GPU index or a GPU uuid")
    ttl_seconds: int = Field(300, ge=1, le=7 * 86400, description="lease lifetime; heartbeats renew it")
    pid: int | None = Field(None, ge=1, le=2**22, description="the test's pid: its process tree's use is not counted twice")
    free_worker: bool = Field(False, description="the guard may free the worker to make room")
    wait_seconds: int = Field(0, ge=0, le=86400, description="queue and wait up to this long instead of being refused")
    priority: int = Field(0, ge=-100, le=100, description="higher is served first; FIFO within a priority")
    dry_run: bool = Field(False, description="only answer whether it would be granted now; nothing is reserved")
    poll_seconds: float | None = Field(None, ge=0, le=60, description="long-poll at most this long before answering "
                                       "202 (default: wait_seconds, at most 25 s); clients showing progress use a few seconds")


class HeartbeatRequest(BaseModel):
    """Optional heartbeat body: register the pid that uses the lease (its process tree is then not counted twice)."""

    model_config = ConfigDict(extra="forbid")

    pid: int | None = Field(None, ge=1, le=2**22, description="the process using the lease")


class MaintenanceRequest(BaseModel):
    """Turn maintenance on: the worker is paused and its job API answers 503 with Retry-After."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)
    retry_after_seconds: int = Field(600, ge=1, le=7 * 86400)


class Alert(BaseModel):
    """One alert of an Alertmanager webhook payload (other fields are kept)."""

    model_config = ConfigDict(extra="allow")

    status: str = Field("firing", max_length=50)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook body (version 4)."""

    model_config = ConfigDict(extra="allow")

    status: str = Field("firing", max_length=50)
    alerts: list[Alert] = Field(max_length=1000)
