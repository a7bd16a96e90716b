"""The control contract's inputs and rules: what a PUT may ask for, and which requests are impossible (409)."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field, model_validator

from headroom.bodies import Body
from worker.types import Desired


class StateRequest(Body):
    """Body of PUT /control/state."""

    state: Literal["running", "throttled", "paused", "freed"]
    concurrency: int | None = Field(default=None, ge=1, le=4096)  # required for throttled
    level: Literal[1, 2] | None = None  # required for freed
    reason: str | None = Field(default=None, max_length=1000)
    requested_by: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _fields_fit_state(self) -> "StateRequest":
        if self.state == "throttled" and self.concurrency is None:
            raise ValueError("throttled needs concurrency (an integer >= 1)")
        if self.state != "throttled" and self.concurrency is not None:
            raise ValueError(f"concurrency only goes with throttled, not {self.state}")
        if self.state == "freed" and self.level is None:
            raise ValueError("freed needs level (1 or 2)")
        if self.state != "freed" and self.level is not None:
            raise ValueError(f"level only goes with freed, not {self.state}")
        return self

    def to_desired(self) -> Desired:
        return Desired(self.state, self.concurrency, self.level, self.reason, self.requested_by, time.time())


class MaintenanceRequest(Body):
    """Body of PUT /control/maintenance."""

    on: bool
    reason: str | None = Field(default=None, max_length=1000)
    retry_after_seconds: int | None = Field(default=None, ge=0, le=86400 * 7)


class Conflict(Exception):
    """The transition is impossible (answered 409 with this reason)."""


def check_possible(desired: Desired, free_levels: dict[int, str] | None, engine_kind: str) -> None:
    """Raise Conflict when `desired` cannot be reached with this engine."""
    if desired.state != "freed":
        return
    if free_levels is None:
        if desired.level == 2:
            return  # level 2 is always possible: at worst the engine is shut down
        raise Conflict("the engine is still starting, so whether it can sleep (level 1) is not known yet; "
                       "ask for level 2 (full shutdown) or retry when the state is not 'starting'")
    if desired.level not in free_levels:
        if not free_levels:
            raise Conflict(f"the {engine_kind} engine cannot be freed: the remote server has no dev-mode "
                           "/sleep endpoint (start it with VLLM_SERVER_DEV_MODE=1)")
        how = ", ".join(f"level {lvl} by {method}" for lvl, method in sorted(free_levels.items()))
        raise Conflict(f"level {desired.level} is impossible: the {engine_kind} engine cannot sleep here "
                       f"(vLLM has no sleep mode on CPU), so it can only be freed at {how}")


def reached(desired: Desired, state: str, concurrency: int | None, free_level: int | None, maintenance_on: bool) -> bool:
    """Whether the worker's current state satisfies `desired` (used to answer 200 rather than 202)."""
    if desired.state == "freed":
        return state == "freed" and free_level == desired.level
    if maintenance_on or desired.state == "paused":
        return state == "paused"
    if desired.state == "throttled":
        return state == "throttled" and concurrency == desired.concurrency
    return state == "running"
