"""The worker's vocabulary: priorities, requests handed to engines and what they hand back, counters.

The states, the desired state and maintenance are the control contract's (headroom/contract.py), shared with the guard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# Priorities in the order they run: production before test before bulk.
PRIORITIES = ("production", "test", "bulk")
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}

# The two URLs a batch line may name.
COMPLETIONS_URL = "/v1/completions"
CHAT_URL = "/v1/chat/completions"


@dataclass(frozen=True)
class EngineRequest:
    """One request as an engine sees it: the endpoint and the validated OpenAI body."""

    key: int  # the store's row id; engines hand it back unchanged
    url: str  # COMPLETIONS_URL or CHAT_URL
    body: dict[str, Any]  # the OpenAI request body (prompt or messages plus sampling fields)
    custom_id: str = ""  # the batch line's custom_id (for the output file; engines ignore it)


@dataclass
class EngineResult:
    """What became of one request: an OpenAI response body (status 200) or an error."""

    key: int
    status_code: int = 200
    body: dict[str, Any] | None = None  # the OpenAI response object when status_code is 200
    error: dict[str, str] | None = None  # {"code": ..., "message": ...} when the request failed
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Counters:
    """What this process did since it started (Prometheus counters)."""

    requests: dict[str, int] = field(default_factory=lambda: {"completed": 0, "failed": 0, "cancelled": 0})
    prompt_tokens: int = 0
    generated_tokens: int = 0
    steps: int = 0  # engine iterations
    iteration_seconds: float = 0.0  # time spent in engine iterations
    requeued: int = 0  # requests aborted in flight (pause, throttle, free) and queued again
    frees: dict[str, int] = field(default_factory=dict)  # by method
    free_seconds: float = 0.0
    wakes: int = 0
    wake_seconds: float = 0.0
    last_free_seconds: float | None = None
    last_wake_seconds: float | None = None
