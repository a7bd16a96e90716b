"""Request bodies of the guard's HTTP API (pydantic): strict, bounded, sizes as bytes or human strings."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model

from headroom.bodies import Body, Bytes


def _gpu(value: Any) -> Any:
    """A GPU index may come as a number: 0 and 0.0 mean "0"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


GPU_SCHEMA = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 100}, {"type": "integer"}],
              "default": "any", "description": "'any', a GPU index or a GPU uuid"}


class LeaseRequest(Body):
    """Ask for RAM and/or GPU bytes for a test launch."""

    holder: str = Field(min_length=1, max_length=200, description="who holds the lease, e.g. 'olmo-7b-eval'")
    ram_bytes: Bytes = 0
    gpu_bytes: Bytes = 0
    gpu: Annotated[str, BeforeValidator(_gpu), WithJsonSchema(GPU_SCHEMA)] = Field("any", min_length=1, max_length=100)
    ttl_seconds: int = Field(300, ge=1, le=86400, description="lease lifetime; heartbeats renew it")
    pid: int | None = Field(
        None, ge=1, le=2**22, description="the test's pid: its process tree's use is not counted twice"
    )
    free_worker: bool = Field(False, description="the guard may free the worker to make room")
    wait_seconds: int = Field(0, ge=0, le=600, description="queue and wait up to this long instead of being refused")
    priority: int = Field(0, ge=-100, le=100, description="higher is served first; FIFO within a priority")
    dry_run: bool = Field(False, description="only answer whether it would be granted now; nothing is reserved")
    poll_seconds: float | None = Field(
        None,
        ge=0,
        le=60,
        description="long-poll at most this long before answering "
        "202 (default: wait_seconds, at most 25 s); clients showing progress use a few seconds",
    )


class HeartbeatRequest(Body):
    """Optional heartbeat body: register the pid that uses the lease (its process tree is then not counted twice)."""

    pid: int | None = Field(None, ge=1, le=2**22, description="the process using the lease")


class MaintenanceRequest(Body):
    """Turn maintenance on: the worker is paused and its job API answers 503 with Retry-After."""

    reason: str = Field(min_length=1, max_length=500)
    retry_after_seconds: int = Field(600, ge=1, le=7 * 86400)


class Alert(Body):
    """One alert of an Alertmanager webhook payload (other fields are kept)."""

    model_config = ConfigDict(extra="allow")

    status: str = Field("firing", max_length=50)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class AlertmanagerWebhook(Body):
    """Alertmanager's webhook body (version 4)."""

    model_config = ConfigDict(extra="allow")

    status: str = Field("firing", max_length=50)
    alerts: list[Alert] = Field(max_length=1000)


def lease_request_model(max_ttl_seconds: int, max_wait_seconds: int) -> type[LeaseRequest]:
    """LeaseRequest with this guard's own limits, so the published schema states what the server enforces."""
    ttl = LeaseRequest.model_fields["ttl_seconds"]
    wait = LeaseRequest.model_fields["wait_seconds"]
    return create_model(
        "LeaseRequest",
        __base__=LeaseRequest,
        __doc__=LeaseRequest.__doc__,
        ttl_seconds=(
            int,
            Field(
                min(300, max_ttl_seconds),
                ge=1,
                le=max_ttl_seconds,
                description=f"{ttl.description} (at most guard.max_ttl_seconds)",
            ),
        ),
        wait_seconds=(
            int,
            Field(0, ge=0, le=max_wait_seconds, description=f"{wait.description} (at most guard.max_wait_seconds)"),
        ),
    )
