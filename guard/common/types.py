"""The guard's vocabulary: levels, the observed Snapshot, per-resource state, leases, decisions.

Desired, the worker state wanted, is the control contract's (headroom/contract.py), shared with the worker."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from headroom.contract import Desired, WorkerState


class Level(enum.IntEnum):
    """How hard the guard leans on the worker; ordered so max() picks the most severe."""

    OK = 0
    WARN = 1
    THROTTLE = 2
    PAUSE = 3
    FREE = 4
    FREEZE = 5  # the fast path freezes the process the kernel would kill, and frees the worker

    @classmethod
    def named(cls, name: str) -> "Level":
        return cls[name.upper()]

    @property
    def label(self) -> str:
        return self.name.lower()


class LeaseStatus(enum.StrEnum):
    """Where a lease is; waiting and granted are active. A StrEnum: its plain name in JSON and the state database."""

    WAITING = "waiting"
    GRANTED = "granted"
    RELEASED = "released"
    EXPIRED = "expired"
    REFUSED = "refused"


ACTIVE = (LeaseStatus.WAITING, LeaseStatus.GRANTED)


class AdmissionOutcome(enum.StrEnum):
    """Admission's answer to one request."""

    GRANTED = "granted"
    WAIT = "wait"  # the worker is being freed for it, or it is queued
    REFUSED = "refused"


@dataclass(frozen=True)
class GpuObs:
    """One GPU as the source reports it."""

    gpu: str  # the source's index label, e.g. "0"
    uuid: str | None
    total_bytes: float
    free_bytes: float
    processes: dict[int, float] = field(default_factory=dict)  # pid -> GPU bytes it holds
    temperature_celsius: float | None = None  # core temperature; None when the source does not report it


@dataclass(frozen=True)
class Snapshot:
    """Everything one observation saw; None means the source did not report it."""

    taken_at: float  # unix seconds when observed
    ok: bool  # the source answered and the memory domain was found
    error: str | None = None  # why not ok
    domain: str = "host"  # "host" or a cgroup path
    ram_total_bytes: float | None = None  # the domain's size (limit for a cgroup)
    ram_available_bytes: float | None = None  # what can still be allocated without reclaiming anon memory
    swap_in_bytes_total: float | None = None  # counter
    swap_free_bytes: float | None = None  # swap the domain may still use (allowance and host free), before the reserve
    psi_full_ratio: float | None = None  # PSI memory full avg10, 0..1
    psi_some_ratio: float | None = None  # PSI memory some avg10, 0..1
    oom_kills_total: float | None = None  # counter
    gpus: tuple[GpuObs, ...] = ()
    pid_ram_bytes: dict[int, float] = field(default_factory=dict)  # lease pid -> RSS of its process tree
    pid_gpu_bytes: dict[int, dict[str, float]] = field(default_factory=dict)  # lease pid -> gpu -> bytes of its tree
    worker_state: WorkerState | None = None  # the worker's reported state (None: no worker or unreachable)
    worker_settling: bool = False


@dataclass(frozen=True)
class ResourceState:
    """One resource's level and the timers hysteresis needs."""

    level: Level = Level.OK
    value: float | None = None  # last measured value, in the rule's unit
    rising_since: float | None = None  # when the value first asked for a higher level (grace timer)
    falling_since: float | None = None  # when the value first allowed a lower level (hold timer)
    why: str = ""


@dataclass(frozen=True)
class GuardState:
    """What evaluate() carries from one tick to the next (pure data; persisted on change)."""

    resources: dict[str, ResourceState] = field(default_factory=dict)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t, available bytes) for the slope
    last_swap: tuple[float, float] | None = None  # (t, swap_in_bytes_total)
    last_ok_at: float | None = None  # when signals were last fresh
    stale_since: float | None = None
    level: Level = Level.OK
    desired: Desired = field(default_factory=Desired)
    free_seconds: float | None = None  # how long the last free of the worker took (measured), for the urgency check


@dataclass
class Lease:
    """A reservation of RAM and/or GPU bytes for a test launch."""

    id: str
    holder: str
    ram_bytes: int
    gpu_bytes: int
    gpu: str  # requested: "any" or an index or a uuid
    ttl_seconds: int
    created_at: float
    expires_at: float
    status: LeaseStatus = LeaseStatus.WAITING
    priority: int = 0
    pid: int | None = None
    free_worker: bool = False  # the client allows the worker to be freed to make room
    frees_worker: bool = False  # this lease holds the worker freed (set when admission needed it)
    gpu_chosen: str | None = None
    granted_at: float | None = None
    ended_at: float | None = None
    reason: str = ""
    wait_until: float | None = None  # a queued lease gives up at this time

    def __post_init__(self) -> None:
        self.status = LeaseStatus(self.status)  # a stored lease comes back with the plain name

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


@dataclass(frozen=True)
class ActionEvent:
    """One call the guard made to the worker (or would make, in a dry run) and how it ended."""

    action: str  # set_<state>, maintenance_on, maintenance_off, worker_stop, worker_start, recover_thaw
    result: str  # ok | accepted | refused | error | dry_run
    message: str = ""

    def data(self) -> dict:
        """The event's stored payload."""
        return {"kind": "action", "action": self.action, "result": self.result, "message": self.message}


@dataclass(frozen=True)
class Decision:
    """One tick's outcome: the level, the desired worker state and the reasons, plus whether admission is open."""

    level: Level
    desired: Desired
    reasons: tuple[str, ...]
    stale: bool
    admissions_open: bool
