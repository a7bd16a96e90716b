"""The lease queue's plan as pure functions: what can never fit, when a blocked request can start, and whether a later
request may be granted first (backfill) without delaying it.

Expected start ("shadow time", as in EASY backfilling): granted leases are assumed to end when their TTL runs out
(`expires_at`; a heartbeat moves it, so it is the earliest they can end, not a promise). A blocked request's shadow is
the first such end after which the room left, plus what the ended leases give back, covers it. A later request may be
granted now only if it fits now and in what is spare at every protected request's shadow. A blocked request whose
shortfall no lease end can cover (the memory is held outside the lease book, or by the worker) has no shadow: later
requests are backfilled past it, but only for `backfill_max_pass_seconds`; after that nothing is granted past it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from guard.core.leases import Admission, gpu_room, match_gpus, ram_room
from guard.common.settings import GuardSettings
from guard.common.types import AdmissionOutcome, Lease, LeaseStatus, Snapshot
from headroom.sizes import format_size

Room = dict[str, float]  # "ram" and "gpu:<index>" -> admissible bytes


@dataclass
class Blocked:
    """A waiting request later ones must not delay: its shadow time and what is spare for others at that time."""

    lease: Lease
    shadow_at: float  # math.inf: no lease end makes room for it
    spare: Room = field(default_factory=dict)  # room at shadow_at less its own need (only when shadow_at is finite)
    hard: bool = False  # passed over too long: nothing more is granted past it


def room_now(snapshot: Snapshot, leases: Iterable[Lease], config: GuardSettings) -> Room:
    """Admissible bytes per resource, after every granted lease and the margins."""
    leases = list(leases)
    room = {"ram": ram_room(snapshot, leases, config)["admissible_bytes"]}
    for gpu in snapshot.gpus:
        room["gpu:" + gpu.gpu] = gpu_room(snapshot, gpu, leases, config)["admissible_bytes"]
    return room


def gives_back(lease: Lease, snapshot: Snapshot) -> Room:
    """What a granted lease returns when it ends: its request, or more if its process tree uses more."""
    used_ram = snapshot.pid_ram_bytes.get(lease.pid, 0.0) if lease.pid else 0.0
    back = {"ram": max(float(lease.ram_bytes), used_ram)}
    if lease.gpu_chosen is not None and lease.gpu_bytes:
        used = snapshot.pid_gpu_bytes.get(lease.pid, {}).get(lease.gpu_chosen, 0.0) if lease.pid else 0.0
        back["gpu:" + lease.gpu_chosen] = max(float(lease.gpu_bytes), used)
    return back


def fit_gpu(lease: Lease, snapshot: Snapshot, room: Room) -> str | None | bool:
    """The GPU `lease` fits on in `room` (None when it asks for no GPU), or False when it does not fit."""
    if lease.ram_bytes > room.get("ram", 0.0):
        return False
    if not lease.gpu_bytes:
        return None
    fits = [(room.get("gpu:" + g.gpu, 0.0), g.gpu) for g in match_gpus(snapshot, lease.gpu)]
    fits = [(free, gpu) for free, gpu in fits if free >= lease.gpu_bytes]
    return max(fits)[1] if fits else False


def minus(room: Room, lease: Lease, gpu: str | None) -> Room:
    left = dict(room)
    left["ram"] = left.get("ram", 0.0) - lease.ram_bytes
    if gpu is not None:
        left["gpu:" + gpu] = left.get("gpu:" + gpu, 0.0) - lease.gpu_bytes
    return left


def shadow(lease: Lease, snapshot: Snapshot, room: Room, granted: Iterable[Lease]) -> Blocked:
    """When `lease` could start if granted leases end at their TTL, and the room spare for others then."""
    ending = sorted((l for l in granted if l.status == LeaseStatus.GRANTED), key=lambda l: l.expires_at)
    future = dict(room)
    for other in ending:
        for key, value in gives_back(other, snapshot).items():
            future[key] = future.get(key, 0.0) + value
        gpu = fit_gpu(lease, snapshot, future)
        if gpu is not False:
            return Blocked(lease, other.expires_at, minus(future, lease, gpu))
    return Blocked(lease, math.inf)


def may_pass(candidate: Lease, gpu: str | None, blocked: Iterable[Blocked]) -> bool:
    """Granting `candidate` now (on `gpu`) delays none of `blocked`: it fits in each one's spare at its shadow."""
    for b in blocked:
        if b.hard:
            return False
        if math.isfinite(b.shadow_at) and any(v < 0 for v in minus(b.spare, candidate, gpu).values()):
            return False
    return True


def charge(blocked: Iterable[Blocked], lease: Lease, gpu: str | None) -> None:
    """A backfilled grant uses part of every blocked request's spare."""
    for b in blocked:
        if math.isfinite(b.shadow_at):
            b.spare = minus(b.spare, lease, gpu)


def too_big(name: str, asked: float, most: float, margin: float) -> Admission:
    """"More than the domain (or the GPU) holds", with the shortfall against the most it could ever get."""
    return Admission(
        AdmissionOutcome.REFUSED,
        f"can never fit: {name} {format_size(asked)} is more than the {'GPU' if name == 'gpu' else 'domain'} "
        f"holds, {name} short by {format_size(asked - most)} (at most {format_size(max(0.0, most))} after "
        f"the {format_size(margin)} margin)",
        shortfall={f"{name}_bytes": int(asked - most)},
    )


def never_fits(lease: Lease, snapshot: Snapshot, config: GuardSettings, worker_hold: Room | None) -> Admission | None:
    """A refusal when `lease` can never be granted (more than the domain holds; with free_worker, more than freeing the
    worker could make), saying the most it could get and the shortfall against that; else None."""
    most_ram = (snapshot.ram_total_bytes or math.inf) - float(config.ram_margin)
    if lease.ram_bytes > most_ram:
        return too_big("ram", lease.ram_bytes, most_ram, config.ram_margin)
    gpus = match_gpus(snapshot, lease.gpu) if lease.gpu_bytes else []
    most_gpu = max((g.total_bytes for g in gpus), default=math.inf) - float(config.gpu_margin)
    if lease.gpu_bytes > most_gpu:
        return too_big("gpu", lease.gpu_bytes, most_gpu, config.gpu_margin)
    if not lease.free_worker or worker_hold is None:
        return None
    best = room_now(snapshot, (), config)  # every lease ended
    for key, value in worker_hold.items():
        best[key] = best.get(key, 0.0) + value
    if fit_gpu(lease, snapshot, best) is not False:
        return None
    most = max((v for k, v in best.items() if k.startswith("gpu:")), default=0.0)
    shortfall = {"ram_bytes": int(lease.ram_bytes - best["ram"]), "gpu_bytes": int(lease.gpu_bytes - most)}
    return Admission(
        AdmissionOutcome.REFUSED,
        "can never fit: more than freeing the worker could make, even with "
        f"every lease ended (at most {describe(best)})",
        shortfall={k: v for k, v in shortfall.items() if v > 0},
    )


def freeing_helps(lease: Lease, snapshot: Snapshot, room: Room, worker_hold: Room | None) -> bool:
    """Whether freeing the worker would make room for `lease` now (unknown worker use: assume it would)."""
    if worker_hold is None:
        return True
    more = dict(room)
    for key, value in worker_hold.items():
        more[key] = more.get(key, 0.0) + value
    return fit_gpu(lease, snapshot, more) is not False


def describe(room: Room) -> str:
    parts = [f"{key.replace('gpu:', 'GPU ')} {format_size(max(0.0, value))}" for key, value in sorted(room.items())]
    return ", ".join(parts) or "nothing"


def advice(lease: Lease, b: Blocked, room: Room, now: float, worker_hold: Room | None, snapshot: Snapshot) -> str:
    """What would work instead of waiting: a size that fits now, --free-worker, or when it is expected to start."""
    asked = {k: v for k, v in room.items() if (k == "ram" and lease.ram_bytes) or (k != "ram" and lease.gpu_bytes)}
    tips = [f"fits now: at most {describe(asked)}"]
    if not lease.free_worker and worker_hold and freeing_helps(lease, snapshot, room, worker_hold):
        tips.append(f"--free-worker would make room (the worker holds {describe(worker_hold)})")
    if math.isfinite(b.shadow_at):
        tips.append(f"expected start in ~{max(0.0, b.shadow_at - now):.0f} s (when a granted lease's TTL runs out)")
    else:
        tips.append("no lease end makes room: retry when memory is freed outside headroom's leases")
    return "; ".join(tips)
