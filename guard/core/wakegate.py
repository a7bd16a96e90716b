"""The freed worker's return, whatever its kind: it wakes only when its footprint plus the band fits in RAM and swap-in
has quietened, and each repeated free/wake cycle within a window waits twice as long (no restart storms)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from guard.common.signals import Resource
from guard.common.types import Decision, Desired, GuardState, Level, Snapshot
from headroom.contract import WorkerState, WorkerStatus
from headroom.sizes import format_size

UP = (WorkerState.RUNNING, WorkerState.THROTTLED, WorkerState.PAUSED)
DOWN = (WorkerState.FREED, WorkerState.FREEING)


@dataclass(frozen=True)
class WakeState:
    """What the gate carries from tick to tick (owned by the manager, replaced whole under its lock)."""

    footprint_bytes: float = 0.0  # the most the worker was seen holding while up (what it takes back on waking)
    frees: tuple[float, ...] = ()  # when the guard asked for each recent free (within the backoff window)
    fits_since: float | None = None  # since when the worker's wake has been allowed by room and swap-in (backoff clock)
    held: str | None = None  # why the wake is held back now; None when it is not
    seen: WorkerState | None = None  # the worker's state at the previous tick (a free is counted when it goes down)
    ram_at_down: float | None = None  # RAM available when it went down; what its free gave back is measured against it
    measured: bool = False  # its own bytes were seen while up: then what RAM got back across its free is not used


def worker_bytes(observed: WorkerStatus | None, rss_bytes: float) -> float:
    """What the worker holds now: its cgroup's anonymous and shared memory (cgroup kind; page cache is left out, it is
    reclaimed first), else its processes' RSS."""
    cgroup = observed.cgroup if observed is not None else None
    if isinstance(cgroup, dict) and isinstance(cgroup.get("anon_bytes"), (int, float)):
        return float(cgroup["anon_bytes"]) + float(cgroup.get("shmem_bytes") or 0)
    return rss_bytes


def track(ws: WakeState, worker_state: WorkerState | None, held_now: float, ram_now: float | None, before: Desired,
          now: float, window: float) -> WakeState:
    """Learn the footprint: what the worker holds while up (and not being freed), and what its free gave back to RAM
    (only for a worker whose own bytes are never seen: RAM also rises when another process exits during the free);
    count each free as the worker goes down (whoever asked)."""
    footprint, at_down, measured = ws.footprint_bytes, ws.ram_at_down, ws.measured
    if worker_state in UP and before.state != WorkerState.FREED:
        footprint, measured = max(footprint, held_now), measured or held_now > 0
    frees = tuple(t for t in ws.frees if now - t <= window)
    if worker_state in DOWN and ws.seen not in DOWN and ws.seen is not None:
        frees, at_down = frees + (now,), ram_now
    if (
        worker_state == WorkerState.FREED
        and ws.seen != WorkerState.FREED
        and at_down is not None
        and ram_now is not None
        and not measured
    ):
        footprint = max(footprint, ram_now - at_down)  # what the free gave back, seen as the worker reports freed
    return replace(ws, footprint_bytes=footprint, frees=frees, seen=worker_state or ws.seen, ram_at_down=at_down,
                   measured=measured)


def backoff_seconds(cycles: int, base: float, cap: float) -> float:
    """The extra wait before the wake of the n-th free within the window: none for the first, then base * 2^(n-1)."""
    return 0.0 if cycles <= 1 else min(cap, base * 2 ** (cycles - 1))


def why_held(ws: WakeState, snapshot: Snapshot, state: GuardState, config, now: float) -> tuple[str | None, WakeState]:
    """None when the worker may wake now; else the reason, in words a person can act on."""
    footprint = float(config.worker_footprint) or ws.footprint_bytes
    ram = config.rules[Resource.RAM].at(snapshot.ram_total_bytes)
    floor = ram.enter.get(Level.PAUSE, ram.enter.get(Level.FREE, 0.0)) + ram.band
    needs, available = footprint + floor, snapshot.ram_available_bytes
    if available is not None and available < needs:
        return (
            f"needs {format_size(needs)} (its {format_size(footprint)} + the pause threshold and band), "
            f"{format_size(available)} RAM available"
        ), replace(ws, fits_since=None)
    swap = state.resources.get(Resource.SWAP.value)
    levels = (
        config.rules[Resource.SWAP].at().enter
    )  # a thrash is what the throttle level answers; light swap-in is not one
    quiet = levels.get(Level.THROTTLE, min(levels.values(), default=None))
    if swap is not None and swap.value is not None and quiet is not None and swap.value >= quiet:
        return (
            f"swap-in {format_size(swap.value)}/s: it wakes once swap-in is below {format_size(quiet)}/s, "
            f"not into a thrash"
        ), replace(ws, fits_since=None)
    since = ws.fits_since if ws.fits_since is not None else now
    wait = backoff_seconds(len(ws.frees), config.recovery_hold_seconds, config.wake_backoff_max_seconds)
    if now - since < wait:
        return (
            f"free/wake cycle {len(ws.frees)} within {config.wake_backoff_window_seconds:.0f} s: it waits {wait:.0f} s "
            f"with room ({now - since:.1f} s so far)"
        ), replace(ws, fits_since=since)
    return None, replace(ws, fits_since=since)


def gate(
    ws: WakeState,
    snapshot: Snapshot,
    before: Desired,
    state: GuardState,
    decision: Decision,
    config,
    now: float,
    held_now: float,
) -> tuple[GuardState, Decision, WakeState]:
    """Keep a freed worker freed while its wake is held back (new values; the inputs are left alone)."""
    ws = track(
        ws,
        snapshot.worker_state,
        held_now,
        snapshot.ram_available_bytes,
        before,
        now,
        config.wake_backoff_window_seconds,
    )
    waking = (
        before.state == WorkerState.FREED
        and decision.desired.state != WorkerState.FREED
        and snapshot.worker_state in DOWN
        and not decision.stale
    )
    if not waking:
        return state, decision, replace(ws, held=None, fits_since=None)
    reason, ws = why_held(ws, snapshot, state, config, now)
    ws = replace(ws, held=reason)
    if reason is None:
        return state, decision, replace(ws, fits_since=None)
    held = Desired(WorkerState.FREED, level=before.level or 2, reason=f"held back: {reason}")
    return (
        replace(state, desired=held),
        replace(decision, desired=held, reasons=(*decision.reasons, f"worker held back: {reason}")),
        ws,
    )


def held_event(old: WakeState, new: WakeState) -> str | None:
    """An event's message when the reason the wake is held back changes kind (not on every new number)."""
    kind = lambda ws: ws.held.split(" ", 1)[0] if ws.held else None
    if kind(old) == kind(new):
        return None
    return f"the worker stays freed: {new.held}" if new.held else "the worker may wake: its wake is no longer held back"
