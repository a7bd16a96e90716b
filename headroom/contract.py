"""The worker control contract both sides speak: worker states, the desired state, maintenance, the worker's status.

The worker serves these (PUT /control/state takes a StateRequest, GET /control/state answers a WorkerStatus); the guard
sends and parses the same types, so a field renamed on one side is renamed on the other (DESIGN.md, "The worker
control contract"). A floor module: it imports nothing above headroom/.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from headroom.bodies import Body


class WorkerState(StrEnum):
    """What the worker is doing. A StrEnum: it compares equal to, and serialises as, its plain name."""

    STARTING = "starting"
    RUNNING = "running"
    THROTTLED = "throttled"
    PAUSED = "paused"
    FREEING = "freeing"
    FREED = "freed"
    WAKING = "waking"


# States a PUT /control/state may ask for, from the mildest to the most severe.
DESIRABLE = (WorkerState.RUNNING, WorkerState.THROTTLED, WorkerState.PAUSED, WorkerState.FREED)
SEVERITY = {state: rank for rank, state in enumerate(DESIRABLE)}
FREE_LEVELS = (1, 2)  # 1: the engine sleeps (weights offloaded); 2: the engine is shut down


def target(state: WorkerState | None, concurrency: int | None, level: int | None) -> tuple:
    """(state, concurrency when throttled, level when freed): what makes two desired states the same target."""
    return (state, concurrency if state == WorkerState.THROTTLED else None,
            level if state == WorkerState.FREED else None)


@dataclass(frozen=True)
class Desired:
    """The worker state wanted (the guard's decision) or accepted (the worker's last PUT /control/state): running,
    throttled(concurrency), paused or freed(level)."""

    state: WorkerState = WorkerState.RUNNING  # one of DESIRABLE
    concurrency: int | None = None  # throttled(n)
    level: int | None = None  # freed(level)
    reason: str | None = ""
    requested_by: str | None = None  # who asked (the worker's copy)
    at: float = 0.0  # unix seconds when it was accepted (the worker's copy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", WorkerState(self.state))  # a stored decision comes back with the plain name
        if self.state not in SEVERITY:
            raise ValueError(f"a worker cannot be asked to be {self.state}")

    @property
    def severity(self) -> int:
        return SEVERITY[self.state]

    def key(self) -> tuple:
        return target(self.state, self.concurrency, self.level)

    def describe(self) -> str:
        if self.state == WorkerState.THROTTLED:
            return f"throttled({self.concurrency})"
        if self.state == WorkerState.FREED:
            return f"freed(level {self.level})"
        return self.state.value

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StateRequest(Body):
    """Body of PUT /control/state: the state the worker should reach."""

    state: Literal["running", "throttled", "paused", "freed"] = Field(description="the state to reach")
    concurrency: int | None = Field(default=None, ge=1, le=4096, description="requests at once; required for throttled")
    level: Literal[1, 2] | None = Field(
        default=None, description="1: sleep, 2: shut the engine down; required for freed"
    )
    reason: str | None = Field(default=None, max_length=1000, description="why (shown in the worker's state and log)")
    requested_by: str | None = Field(default=None, max_length=200, description="who asks (e.g. headroom-guard)")

    @model_validator(mode="after")
    def _fields_fit_state(self) -> "StateRequest":
        if self.state == WorkerState.THROTTLED and self.concurrency is None:
            raise ValueError("throttled needs concurrency (an integer >= 1)")
        if self.state != WorkerState.THROTTLED and self.concurrency is not None:
            raise ValueError(f"concurrency only goes with throttled, not {self.state}")
        if self.state == WorkerState.FREED and self.level is None:
            raise ValueError("freed needs level (1 or 2)")
        if self.state != WorkerState.FREED and self.level is not None:
            raise ValueError(f"level only goes with freed, not {self.state}")
        return self

    @property
    def worker_state(self) -> WorkerState:
        return WorkerState(self.state)


class MaintenanceRequest(Body):
    """Body of PUT /control/maintenance: the operator switch."""

    on: bool = Field(description="true: new submissions get 503 and nothing starts")
    reason: str | None = Field(default=None, max_length=1000, description="shown to clients in the 503")
    retry_after_seconds: int | None = Field(default=None, ge=0, le=86400 * 7, description="the 503's Retry-After")


@dataclass(frozen=True)
class Maintenance:
    """Maintenance as the guard and the worker hold it: on/off, why, the Retry-After clients get, since when."""

    on: bool = False
    reason: str | None = None
    retry_after_seconds: int | None = None
    since: float = 0.0  # unix seconds when it was last switched

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Maintenance":
        """From a stored or received mapping; missing keys take their defaults, unknown keys are dropped."""
        data = data or {}
        return cls(
            bool(data.get("on")), data.get("reason"), data.get("retry_after_seconds"), float(data.get("since") or 0.0)
        )


class _Open(BaseModel):
    """A part of the status: fields a newer worker adds are ignored, not refused."""

    model_config = ConfigDict(extra="ignore")


class DesiredStatus(_Open):
    """The desired state the worker last accepted (empty before any PUT on targets that do not hold one)."""

    state: WorkerState | None = None
    concurrency: int | None = None
    level: int | None = None
    reason: str | None = None
    requested_by: str | None = None
    at: float | None = None  # unix seconds when it was accepted

    def key(self) -> tuple:
        return target(self.state, self.concurrency, self.level)


class EngineStatus(_Open):
    """The model engine behind the worker."""

    kind: str | None = None  # vllm, remote, echo, cgroup
    model: str | None = None
    loaded: bool | None = None
    free_method: str | None = None  # how the last free was done
    free_levels: dict[int, str] | None = None  # level -> method; None while starting (not known yet)
    error: str | None = None


class WorkerStatus(_Open):
    """GET /control/state (and the body of a 200/202 PUT): the worker's state, what it was asked, what it holds."""

    state: WorkerState
    desired: DesiredStatus = Field(default_factory=DesiredStatus)
    maintenance: Maintenance = Field(default_factory=Maintenance)
    concurrency: int | None = None  # the concurrency in force (throttled or the default)
    free_level: int | None = None  # the level it is freed at
    engine: EngineStatus | None = None
    queue: dict[str, int] | None = None  # requests waiting, by priority
    in_flight: int | None = None
    in_flight_peak: int | None = None
    pause_mode: str | None = None
    since: float | None = None  # unix seconds when the state was entered
    last_control_to_idle_seconds: float | None = None
    last_free_seconds: float | None = None
    last_wake_seconds: float | None = None
    note: str | None = None  # a line for people (cgroup workers: why it is freed)
    cgroup: dict[str, Any] | None = None  # cgroup workers: the cgroup's path, processes, memory
    # The worker's self-report, so a guard never freezes it (a socket-to-pid scan fails under the guard's unit):
    pids: list[int] | None = None  # its own processes: itself and its engine's (a guard adds their descendants)
    own_cgroup: str | None = None  # its cgroup (cgroup2, else name=systemd path); protected when a unit of its own
