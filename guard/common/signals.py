"""The signal table: one row per signal the guard judges (its unit, direction, reading and wording), and its rule
resolved to numbers once, at load."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

from guard.common.types import Level, Snapshot
from headroom.sizes import format_size, parse_size


class Resource(enum.StrEnum):
    """A signal's name; a StrEnum, so it is its plain name in JSON, events and the state database."""

    RAM = "ram"
    GPU = "gpu"
    PSI = "psi"
    SWAP = "swap"
    PREDICT = "predict"
    GPU_TEMPERATURE = "gpu_temperature"


class Amounts(enum.Enum):
    """How a rule's values are written for a signal."""

    SHARE = "a percentage of the total ('15%') or a size ('2GiB')"
    SIZE = "a size ('1MiB') or a number of bytes"
    NUMBER = "a non-negative number"


@dataclass(frozen=True)
class Signal:
    """One row: its [guard] settings key and wording, the value's unit, whether higher is worse, how its rule is
    written, how it is read from an observation and how a value reads to people. A per-GPU signal is read from each
    GpuObs of the snapshot and judged per GPU ("<resource>:<gpu>"); the others from the snapshot and its trends."""

    resource: Resource
    setting: str  # the [guard] key holding its rule (a Rule field of GuardSettings)
    label: str  # what people call it ("PSI", "GPU temperature")
    unit: str
    higher_is_worse: bool
    amounts: Amounts
    shows: Callable[[float], str]
    ram_like: bool  # pressure on this signal is pressure on RAM (a free must not offload the weights into RAM)
    reads: Callable[[Any, "Trends"], float | None]  # this tick's value from the Snapshot (or one GpuObs: per_gpu)
    total: Callable[[Any], float | None] = lambda subject: None  # what a percentage is of
    per_gpu: bool = False
    listed: bool = True  # among the views' "signals" (RAM and GPU memory have their own bars instead)
    most: Level = Level.FREEZE  # the most severe level its rule may enter


@dataclass(frozen=True)
class Trends:
    """The values the policy derives from more than one observation (or from one and the configuration)."""

    swap_in_rate: float | None = None
    seconds_to_exhaustion: float | None = None
    room_bytes: float | None = None  # RAM available + the swap room (free swap - swap_reserve): left before a kill


SIGNALS: dict[Resource, Signal] = {signal.resource: signal for signal in (
    Signal(Resource.RAM, "ram", "RAM", "bytes available (RAM + usable swap)", False, Amounts.SHARE,
           lambda v: f"{format_size(v)} available", True, lambda s, t: t.room_bytes, lambda s: s.ram_total_bytes,
           listed=False),
    Signal(Resource.GPU, "gpu", "GPU", "bytes free", False, Amounts.SHARE, lambda v: f"{format_size(v)} available",
           False, lambda g, t: g.free_bytes, lambda g: g.total_bytes, per_gpu=True, listed=False),
    Signal(Resource.PSI, "psi", "PSI", "ratio of time stalled", True, Amounts.NUMBER,
           lambda v: f"{v:.1%} of time stalled (full, 10 s)", True, lambda s, t: s.psi_full_ratio),
    Signal(Resource.SWAP, "swap", "swap", "bytes swapped in per second", True, Amounts.SIZE,
           lambda v: f"swap-in {format_size(v)}/s", True, lambda s, t: t.swap_in_rate),
    Signal(Resource.PREDICT, "predict", "prediction", "seconds to exhaustion", False, Amounts.NUMBER,
           lambda v: f"exhausted in {v:.0f} s at the current slope", True, lambda s, t: t.seconds_to_exhaustion),
    Signal(Resource.GPU_TEMPERATURE, "gpu_temperature", "GPU temperature", "degrees Celsius", True, Amounts.NUMBER,
           lambda v: f"{v:.0f} °C", False, lambda g, t: g.temperature_celsius, per_gpu=True, most=Level.THROTTLE),
)}
RAM_LIKE = tuple(r for r, signal in SIGNALS.items() if signal.ram_like)


def describe(name: str, value: float | None, level: Level) -> str:
    """A person-readable reason for one resource's level ("gpu:0" reads as a GPU)."""
    if value is None:
        return f"{name}: no signal"
    return f"{name} {level.label}: {signal_of(name).shows(value)}"


def subjects(signal: Signal, snapshot: Snapshot) -> list[tuple[str, Any]]:
    """(level key, what the row reads) per judged thing: ("psi", snapshot), or ("gpu:0", its GpuObs) per GPU."""
    if signal.per_gpu:
        return [(f"{signal.resource}:{gpu.gpu}", gpu) for gpu in snapshot.gpus]
    return [(signal.resource.value, snapshot)]


def label_of(name: str) -> str:
    """How people call a level key: "PSI", "GPU temperature 0" (an unknown name, e.g. from a newer guard, as it is)."""
    resource, _, gpu = name.partition(":")
    signal = SIGNALS.get(Resource(resource)) if resource in Resource.__members__.values() else None
    return (signal.label if signal else resource) + (f" {gpu}" if gpu else "")


def signal_of(name: str) -> Signal:
    """The row for a resource name as levels are keyed: "ram", "psi", ... or "gpu:0"."""
    return SIGNALS[Resource(name.partition(":")[0])]


def parse_amount(value: str | int | float) -> tuple[str, float]:
    """'15%' -> ('ratio', 0.15); '2GiB' / 1024 -> ('bytes', n); ValueError naming what was expected."""
    if isinstance(value, str) and value.strip().endswith("%"):
        ratio = float(value.strip()[:-1]) / 100
        if not 0 <= ratio <= 1:
            raise ValueError(f"a percentage must be 0-100%, got {value!r}")
        return "ratio", ratio
    if isinstance(value, float):
        raise ValueError(f"expected a percentage such as '10%' or a size such as '2GiB', got {value!r}")
    return "bytes", float(parse_size(value))


@dataclass(frozen=True)
class Amount:
    """A threshold as a number: absolute, or a share of the domain's total (resolved per tick by a multiply)."""

    value: float
    share: bool = False

    def of(self, total: float | None) -> float:
        return self.value * (total or 0) if self.share else self.value


def to_amount(value: str | int | float, amounts: Amounts) -> Amount:
    if amounts is Amounts.SHARE:
        unit, number = parse_amount(value)
        return Amount(number, unit == "ratio")
    if amounts is Amounts.SIZE:
        return Amount(float(parse_size(value)))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"expected non-negative numbers, got {value!r}")
    return Amount(float(value))


@dataclass(frozen=True)
class Threshold:
    """A rule in numbers for one total: enter value per level, the band, and which direction is worse."""

    enter: dict[Level, float]
    band: float
    higher_is_worse: bool
    grace_seconds: float
    hold_seconds: float


@dataclass(frozen=True)
class ResolvedRule:
    """A rule parsed once at load: amounts per level and band; `at(total)` gives the numbers for one domain."""

    signal: Signal
    enter: dict[Level, Amount]
    band: Amount
    grace_seconds: float
    hold_seconds: float

    def at(self, total: float | None = None) -> Threshold:
        return Threshold({level: amount.of(total) for level, amount in self.enter.items()}, self.band.of(total),
                         self.signal.higher_is_worse, self.grace_seconds, self.hold_seconds)


def resolve(rule, resource: Resource) -> ResolvedRule:
    """Parse one [guard.<setting>] rule; ValueError names the key (enter.<level> or band)."""
    signal = SIGNALS[resource]
    enter: dict[Level, Amount] = {}
    for key, value in [*((f"enter.{level}", v) for level, v in rule.enter.items()), ("band", rule.band)]:
        try:
            amount = to_amount(value, signal.amounts)
        except ValueError as err:
            raise ValueError(f"guard.{signal.setting}.{key}: {err}") from None
        if key != "band":
            level = Level.named(key.removeprefix("enter."))
            if level > signal.most:
                raise ValueError(f"guard.{signal.setting}.{key} = {value!r}: {signal.label} may enter levels up to "
                                 f"{signal.most.label} only")
            enter[level] = amount
    return ResolvedRule(signal, enter, to_amount(rule.band, signal.amounts), rule.grace_seconds, rule.hold_seconds)


def resolve_rule(rule, kind: str, total: float | None = None) -> Threshold:
    """The numbers of `rule` for `kind` at `total` in one call (tests and one-off views)."""
    return resolve(rule, Resource(kind)).at(total)
