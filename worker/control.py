"""The control contract's rules on the worker's side: which requests are impossible (409), and when one is reached.

The request bodies themselves are the contract's (headroom/contract.py).
"""

from __future__ import annotations

from headroom.contract import Desired, StateRequest, WorkerState


def to_desired(request: StateRequest, now: float) -> Desired:
    """The accepted desired state for a validated PUT /control/state body, stamped with `now` (unix seconds)."""
    return Desired(request.worker_state, request.concurrency, request.level, request.reason, request.requested_by, now)


class Conflict(Exception):
    """The transition is impossible (answered 409 with this reason)."""


def check_possible(desired: Desired, free_levels: dict[int, str] | None, engine_kind: str) -> None:
    """Raise Conflict when `desired` cannot be reached with this engine."""
    if desired.state != WorkerState.FREED:
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


def reached(
    desired: Desired, state: WorkerState, concurrency: int | None, free_level: int | None, maintenance_on: bool
) -> bool:
    """Whether the worker's current state satisfies `desired` (used to answer 200 rather than 202)."""
    if desired.state == WorkerState.FREED:
        return state == WorkerState.FREED and free_level == desired.level
    if maintenance_on or desired.state == WorkerState.PAUSED:
        return state == WorkerState.PAUSED
    if desired.state == WorkerState.THROTTLED:
        return state == WorkerState.THROTTLED and concurrency == desired.concurrency
    return state == WorkerState.RUNNING
