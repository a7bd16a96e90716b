"""The guard's decision as a pure function: evaluate(snapshot, previous_state, leases, now, config) -> (state,
decision)."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from guard.common.settings import GuardSettings
from guard.common.signals import RAM_LIKE, SIGNALS, Threshold, Trends, describe, subjects
from guard.common.swaproom import room_bytes
from guard.common.types import Decision, Desired, GuardState, Lease, Level, ResourceState, Snapshot
from headroom.contract import Maintenance, WorkerState


def _worse(value: float, limit: float, higher_is_worse: bool) -> bool:
    return value >= limit if higher_is_worse else value <= limit


def entered_level(value: float | None, th: Threshold) -> Level:
    """The highest level whose enter threshold the value has reached (OK when there is no value)."""
    if value is None:
        return Level.OK
    return max((lvl for lvl, limit in th.enter.items() if _worse(value, limit, th.higher_is_worse)), default=Level.OK)


def held_level(value: float | None, th: Threshold, current: Level) -> Level:
    """The highest level up to `current` that the value has not yet left by the band (the value band)."""
    if value is None:
        return Level.OK
    held = [
        lvl
        for lvl, limit in th.enter.items()
        if lvl <= current and (value > limit - th.band if th.higher_is_worse else value < limit + th.band)
    ]
    return max(held, default=Level.OK)


def target_level(value: float | None, th: Threshold, current: Level) -> Level:
    """Where the value asks the level to be, the band already applied."""
    return max(entered_level(value, th), held_level(value, th, current))


def apply_hysteresis(
    rs: ResourceState,
    target: Level,
    now: float,
    th: Threshold,
    urgent: bool = False,
    recovery_hold: float | None = None,
) -> ResourceState:
    """Grace before entering a higher level (none when `urgent`), hold before leaving for a lower one (the shorter
    `recovery_hold` once the value is clear of every threshold by the band, i.e. the target is OK)."""
    if target > rs.level:
        since = rs.rising_since if rs.rising_since is not None else now
        if urgent or now - since >= th.grace_seconds:
            return ResourceState(level=target)
        return ResourceState(level=rs.level, rising_since=since)
    if target < rs.level:
        since = rs.falling_since if rs.falling_since is not None else now
        hold = th.hold_seconds if recovery_hold is None or target > Level.OK else min(th.hold_seconds, recovery_hold)
        if now - since >= hold:
            return ResourceState(level=target)
        return ResourceState(level=rs.level, falling_since=since)
    return ResourceState(level=rs.level)


def update_samples(samples: list, now: float, available: float | None, window: float) -> list:
    """Recent (t, available) points inside the prediction window."""
    kept = [(t, v) for t, v in samples if now - t <= window and t < now]
    if available is not None:
        kept.append((now, available))
    return kept


STOPPED_SECONDS, STOPPED_NOISE_BYTES = (
    1.0,
    16 * 2**20,
)  # no fall over the last second (within noise): the growth stopped


def since_growth_stopped(samples: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The samples of the last second alone once the value has not fallen from one look to the next over it: a burst
    that ended is not a trend, so its drop no longer steers the slope (and a pause it caused ends a second after it, not
    a window later)."""
    if not samples:
        return samples
    recent = [(t, v) for t, v in samples if t >= samples[-1][0] - STOPPED_SECONDS]
    spans = len(recent) >= 2 and recent[-1][0] - recent[0][0] >= 0.75 * STOPPED_SECONDS
    if spans and all(b[1] >= a[1] - STOPPED_NOISE_BYTES for a, b in zip(recent, recent[1:])):
        return recent
    return samples


def seconds_to_exhaustion(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of available bytes; seconds until zero when falling, None when flat/rising/too few points."""
    if len(samples) < 3 or samples[-1][0] - samples[0][0] < 0.5:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in samples) / var
    if slope >= 0:
        return None
    return max(0.0, samples[-1][1] / -slope)


def swap_in_rate(last: tuple[float, float] | None, now: float, total: float | None) -> float | None:
    """Swap-in bytes per second since the previous observation (None without two points or after a reset)."""
    if last is None or total is None or now <= last[0] or total < last[1]:
        return None
    return (total - last[1]) / (now - last[0])


WORKER_GROWING = (
    WorkerState.STARTING,
    WorkerState.WAKING,
)  # the worker's own load: growth the guard caused, not a trend to act on


def measure(
    snapshot: Snapshot, state: GuardState, now: float, config: GuardSettings
) -> tuple[dict[str, tuple[float | None, Threshold]], GuardState]:
    """Each resource's value this tick with its threshold in numbers (one row of the signal table each), and the state
    carrying this tick's slope samples and swap counter; `state` itself is left as it was."""
    room = room_bytes(snapshot.ram_available_bytes, snapshot.swap_free_bytes, config.swap_reserve)
    if snapshot.worker_state in WORKER_GROWING or snapshot.worker_settling:  # the slope restarts once it has loaded
        samples = []
    else:
        samples = since_growth_stopped(update_samples(state.samples, now, room, config.predict_window_seconds))
    trends = Trends(
        swap_in_rate(state.last_swap, now, snapshot.swap_in_bytes_total), seconds_to_exhaustion(samples), room
    )
    last_swap = (now, snapshot.swap_in_bytes_total) if snapshot.swap_in_bytes_total is not None else state.last_swap
    values: dict[str, tuple[float | None, Threshold]] = {}
    for resource, signal in SIGNALS.items():
        rule = config.rules[resource]
        values.update(
            {
                name: (signal.reads(subject, trends), rule.at(signal.total(subject)))
                for name, subject in subjects(signal, snapshot)
            }
        )
    return values, replace(state, samples=samples, last_swap=last_swap)


def is_urgent(values: dict, free_seconds: float) -> bool:
    """Exhaustion is nearer than a free takes: waiting out a grace would guarantee the kill."""
    exhaustion = values.get("predict", (None, None))[0]
    return exhaustion is not None and exhaustion < free_seconds


def step_resources(
    values: dict,
    previous: dict[str, ResourceState],
    now: float,
    urgent: bool = False,
    recovery_hold: float | None = None,
) -> dict[str, ResourceState]:
    """New level per resource: band, then grace/hold timers; a value that has disappeared holds no level."""
    result = {}
    for name, (value, th) in values.items():
        rs = previous.get(name, ResourceState())
        if value is None:
            result[name] = ResourceState(level=Level.OK, why=describe(name, None, Level.OK))
            continue
        new = apply_hysteresis(
            rs, target_level(value, th, rs.level), now, th, urgent and name in RAM_LIKE, recovery_hold
        )
        result[name] = replace(new, value=value, why=describe(name, value, new.level))
    return result


def free_level_for(resources: dict[str, ResourceState], config: GuardSettings) -> int:
    """Level 2 under any RAM pressure: level 1 would move the weights into RAM."""
    ram_pressure = max((resources[n].level for n in RAM_LIKE if n in resources), default=Level.OK)
    return 1 if config.worker.free_level == 1 and ram_pressure == Level.OK else 2


def desired_from_level(level: Level, resources: dict[str, ResourceState], config: GuardSettings) -> Desired:
    reason = "; ".join(rs.why for rs in resources.values() if rs.level == level and level > Level.OK) or "all clear"
    if level >= Level.FREE:
        return Desired(WorkerState.FREED, level=free_level_for(resources, config), reason=reason)
    if level == Level.PAUSE:
        return Desired(WorkerState.PAUSED, reason=reason)
    if level == Level.THROTTLE:
        return Desired(WorkerState.THROTTLED, concurrency=config.worker.throttle_concurrency, reason=reason)
    return Desired(WorkerState.RUNNING, reason=reason)


def desired_worker(
    level: Level, resources: dict, leases: Iterable[Lease], maintenance: Maintenance | None, config: GuardSettings
) -> Desired:
    """The most severe of: what the level asks, maintenance (paused), leases that free the worker (freed)."""
    candidates = [desired_from_level(level, resources, config)]
    if maintenance is not None and maintenance.on:
        candidates.append(Desired(WorkerState.PAUSED, reason=f"maintenance: {maintenance.reason or 'operator'}"))
    holders = [f"{lease.holder} ({lease.id})" for lease in leases if lease.active and lease.frees_worker]
    if holders:
        candidates.append(
            Desired(
                WorkerState.FREED,
                level=free_level_for(resources, config),
                reason="freed for lease " + ", ".join(holders),
            )
        )
    return max(candidates, key=lambda d: d.severity)


def is_stale(snapshot: Snapshot, now: float, config: GuardSettings) -> bool:
    return not snapshot.ok or now - snapshot.taken_at > config.stale_after_seconds


def assess(snapshot: Snapshot, previous: GuardState, now: float, config: GuardSettings) -> tuple[GuardState, Decision]:
    """Freshness and per-resource levels with hysteresis: a new state and a decision whose desired state is still the
    previous one (compose() fills it in once the queue is served). `previous` is left as it was."""
    if is_stale(snapshot, now, config):
        stale_since = previous.stale_since or previous.last_ok_at or now
        why = f"signals stale since {stale_since:.3f}" + (f" ({snapshot.error})" if snapshot.error else "")
        state = replace(previous, stale_since=stale_since)
        return state, Decision(state.level, previous.desired, (why,), stale=True, admissions_open=False)
    values, state = measure(snapshot, previous, now, config)
    free_seconds = state.free_seconds if state.free_seconds is not None else config.free_seconds_estimate
    resources = step_resources(
        values, previous.resources, now, is_urgent(values, free_seconds), config.recovery_hold_seconds
    )
    level = max((rs.level for rs in resources.values()), default=Level.OK)
    state = replace(state, stale_since=None, last_ok_at=now, resources=resources, level=level)
    reasons = tuple(rs.why for rs in resources.values() if rs.level > Level.OK)
    admit_below = Level.named(config.leases.admit_below_level)
    return state, Decision(level, previous.desired, reasons, stale=False, admissions_open=level < admit_below)


def compose(
    state: GuardState,
    decision: Decision,
    leases: Iterable[Lease],
    config: GuardSettings,
    maintenance: Maintenance | None = None,
) -> tuple[GuardState, Decision]:
    """The desired worker state from the assessed levels, the leases (served already) and maintenance. On stale signals
    the worker is not flapped: the last desired state stays, except what maintenance and leases ask."""
    leases = list(leases)
    if decision.stale:
        desired = max(
            [state.desired, desired_worker(Level.OK, {}, leases, maintenance, config)], key=lambda d: d.severity
        )
    else:
        desired = desired_worker(state.level, state.resources, leases, maintenance, config)
    return replace(state, desired=desired), replace(decision, desired=desired)


def evaluate(
    snapshot: Snapshot,
    previous: GuardState,
    leases: Iterable[Lease],
    now: float,
    config: GuardSettings,
    maintenance: Maintenance | None = None,
) -> tuple[GuardState, Decision]:
    """One tick of policy without a queue to serve: assess, then compose. Returns a new state."""
    state, decision = assess(snapshot, previous, now, config)
    return compose(state, decision, leases, config, maintenance)
