"""Lease accounting as pure functions: what each lease reserves, the room left, and whether a request fits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from guard.common.settings import GuardSettings
from guard.common.types import AdmissionOutcome, Decision, GpuObs, Lease, LeaseStatus, Snapshot
from headroom.contract import WorkerState
from headroom.sizes import format_size


class UnknownGpu(ValueError):
    """The request names a GPU the source does not report."""


@dataclass(frozen=True)
class Admission:
    """Admission's answer: granted (with the GPU), wait (worker being freed / queued) or refused (reason, shortfall)."""

    outcome: AdmissionOutcome
    reason: str = ""
    gpu: str | None = None
    shortfall: dict[str, int] = field(default_factory=dict)  # resource -> bytes missing
    needs_free: bool = False
    stale: bool = False


def reserved_ram(lease: Lease, snapshot: Snapshot) -> float:
    """A granted lease reserves its RAM, less what its registered process tree already uses (counted in available)."""
    if lease.status != LeaseStatus.GRANTED:
        return 0.0
    used = snapshot.pid_ram_bytes.get(lease.pid, 0.0) if lease.pid else 0.0
    return max(0.0, lease.ram_bytes - used)


def reserved_gpu(lease: Lease, snapshot: Snapshot, gpu: str) -> float:
    """The same for GPU bytes on `gpu`."""
    if lease.status != LeaseStatus.GRANTED or lease.gpu_chosen != gpu or not lease.gpu_bytes:
        return 0.0
    used = snapshot.pid_gpu_bytes.get(lease.pid, {}).get(gpu, 0.0) if lease.pid else 0.0
    return max(0.0, lease.gpu_bytes - used)


def ram_room(snapshot: Snapshot, leases: Iterable[Lease], config: GuardSettings) -> dict[str, float]:
    """Observed available RAM minus outstanding reservations minus the margin."""
    available = snapshot.ram_available_bytes or 0.0
    reserved = sum(reserved_ram(lease, snapshot) for lease in leases)
    margin = float(config.ram_margin)
    return {"available_bytes": available, "reserved_bytes": reserved, "margin_bytes": margin,
            "admissible_bytes": max(0.0, available - reserved - margin)}


def gpu_room(snapshot: Snapshot, gpu: GpuObs, leases: Iterable[Lease], config: GuardSettings) -> dict[str, float]:
    """Observed free bytes on one GPU minus reservations on it minus the margin."""
    reserved = sum(reserved_gpu(lease, snapshot, gpu.gpu) for lease in leases)
    margin = float(config.gpu_margin)
    return {"total_bytes": gpu.total_bytes, "available_bytes": gpu.free_bytes, "reserved_bytes": reserved,
            "margin_bytes": margin, "admissible_bytes": max(0.0, gpu.free_bytes - reserved - margin)}


def match_gpus(snapshot: Snapshot, requested: str) -> list[GpuObs]:
    """The GPUs a request may use: all for "any", else the one with that index or uuid."""
    if requested in ("any", ""):
        return list(snapshot.gpus)
    found = [g for g in snapshot.gpus if requested in (g.gpu, g.uuid)]
    if not found:
        known = ", ".join(g.gpu for g in snapshot.gpus) or "none reported"
        raise UnknownGpu(f"unknown GPU {requested!r}; known: {known}")
    return found


def pick_gpu(lease: Lease, snapshot: Snapshot, others: list[Lease], config: GuardSettings) -> tuple[str | None, int]:
    """The candidate GPU with the most room, and how many bytes it is short (0 when it fits)."""
    if not lease.gpu_bytes:
        return None, 0
    candidates = match_gpus(snapshot, lease.gpu)
    if not candidates:
        return None, lease.gpu_bytes
    rooms = [(gpu_room(snapshot, g, others, config)["admissible_bytes"], g.gpu) for g in candidates]
    room, gpu = max(rooms)
    return gpu, int(max(0.0, lease.gpu_bytes - room))


def admit(lease: Lease, snapshot: Snapshot, decision: Decision, leases: Iterable[Lease],
          config: GuardSettings, worker_driven: bool) -> Admission:
    """Whether `lease` fits now, given the last decision and the other leases; never measures."""
    others = [other for other in leases if other.id != lease.id]
    if decision.stale:
        return Admission(AdmissionOutcome.REFUSED, "; ".join(decision.reasons) or "signals stale", stale=True)
    if not decision.admissions_open:
        return Admission(
            AdmissionOutcome.REFUSED, f"memory pressure ({decision.level.label}): " + "; ".join(decision.reasons)
        )
    ram_short = int(max(0.0, lease.ram_bytes - ram_room(snapshot, others, config)["admissible_bytes"]))
    gpu, gpu_short = pick_gpu(lease, snapshot, others, config)
    shortfall = {k: v for k, v in (("ram_bytes", ram_short), ("gpu_bytes", gpu_short)) if v > 0}
    worker_freed = snapshot.worker_state == WorkerState.FREED
    if lease.frees_worker and not worker_freed:
        return Admission(AdmissionOutcome.WAIT, "waiting for the worker to be freed", gpu, shortfall, needs_free=True)
    if not shortfall:
        return Admission(AdmissionOutcome.GRANTED, "fits", gpu)
    if lease.free_worker and worker_driven and not worker_freed:
        return Admission(AdmissionOutcome.WAIT, "freeing the worker to make room", gpu, shortfall, needs_free=True)
    parts = [f"{name.removesuffix('_bytes')} short by {format_size(n)}" for name, n in shortfall.items()]
    return Admission(AdmissionOutcome.REFUSED, "not enough memory: " + ", ".join(parts), gpu, shortfall)


def queue_order(leases: Iterable[Lease]) -> list[Lease]:
    """Waiting leases in service order: higher priority first, FIFO within a priority."""
    return sorted(
        (lease for lease in leases if lease.status == LeaseStatus.WAITING), key=lambda l: (-l.priority, l.created_at)
    )
