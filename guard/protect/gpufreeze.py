"""The freezer on GPUs: poll NVML per-process memory adaptively, freeze the fastest-growing unprotected user when free
runs low."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from guard.protect.freezer import Freezer, FrozenProcess
from guard.protect.growth import GpuGrowth
from guard.common.signals import Amount, Amounts, Resource, to_amount
from guard.common.types import Level

log = logging.getLogger("headroom.guard.gpufreeze")
CALM_RATIO = 0.25  # with this much of a GPU free above the freeze threshold, poll at the slowest interval


def threshold_bytes(amount: str | int | Amount, total: int) -> int:
    """Bytes of a GPU threshold ("5%" of `total`, or a size) for one GPU."""
    return int((amount if isinstance(amount, Amount) else to_amount(amount, Amounts.SHARE)).of(total))


def poll_interval(free: int, freeze_at: int, total: int, fastest: float, slowest: float) -> float:
    """Like earlyoom: the closer free memory is to the freeze threshold, the shorter the wait (linear in between)."""
    if total <= 0:
        return slowest
    room = max(0, free - freeze_at) / total
    return fastest + (slowest - fastest) * min(1.0, room / CALM_RATIO)


@dataclass(frozen=True)
class GpuEvent:
    """What one step did on one GPU, for the caller (sleep or free the worker on "froze", wake it on "thawed")."""

    gpu: int
    action: str  # "froze" | "thawed"
    process: FrozenProcess
    free_bytes: int


class GpuFreezeWatch:
    """One step reads every GPU once; run() repeats it on its own thread at the adaptive interval."""

    def __init__(self, nvml, freezer: Freezer, freeze_below: str | int | Amount, thaw_above: str | int | Amount, *,
                 fastest: float = 0.01, slowest: float = 0.5, clock: Callable[[], float] = time.time,
                 on_event: Callable[[GpuEvent], None] = lambda event: None):
        freeze_below, thaw_above = (
            a if isinstance(a, Amount) else to_amount(a, Amounts.SHARE) for a in (freeze_below, thaw_above)
        )
        self.nvml, self.freezer, self.freeze_below, self.thaw_above = (
            nvml,
            freezer,
            freeze_below,
            thaw_above,
        )  # parsed once
        self.fastest, self.slowest, self.clock, self.on_event = fastest, slowest, clock, on_event
        self.frozen_by_gpu: dict[int, int] = {}  # GPU index -> the pid frozen for it
        self.gpu_growth = GpuGrowth()
        self.last_interval = slowest
        self.polls = 0

    @classmethod
    def from_settings(cls, settings, nvml, freezer: Freezer, **kwargs) -> "GpuFreezeWatch | None":
        """From the gpu rule's `freeze` threshold (thaw once free is back above `pause`, else freeze + band); None
        when the rule has no freeze level."""
        rule = settings.rules[Resource.GPU]
        if Level.FREEZE not in rule.enter or not settings.freeze_enabled:
            return None
        freeze = rule.enter[Level.FREEZE]
        thaw = rule.enter.get(Level.PAUSE) or _plus(freeze, rule.band)
        return cls(
            nvml,
            freezer,
            freeze,
            thaw,
            fastest=settings.freeze_gpu_poll_min_seconds,
            slowest=settings.freeze_gpu_poll_max_seconds,
            **kwargs,
        )

    def step(self) -> tuple[list[GpuEvent], float]:
        """Read, freeze or thaw per GPU; the events and how long to wait before the next step."""
        now = self.clock()
        events: list[GpuEvent] = []
        interval = self.slowest
        self.polls += 1
        for gpu in self.nvml.read_memory():
            if gpu.total_bytes is None or gpu.free_bytes is None:
                continue
            freeze_at = threshold_bytes(self.freeze_below, gpu.total_bytes)
            thaw_at = threshold_bytes(self.thaw_above, gpu.total_bytes)
            event = self._one(gpu, freeze_at, thaw_at, now)
            if event is not None:
                events.append(event)
                self.on_event(event)
            interval = min(
                interval, poll_interval(gpu.free_bytes, freeze_at, gpu.total_bytes, self.fastest, self.slowest)
            )
        self.freezer.resolve_no_room(now)
        self.last_interval = interval
        return events, interval

    def _one(self, gpu, freeze_at: int, thaw_at: int, now: float) -> GpuEvent | None:
        frozen_pid = self.frozen_by_gpu.get(gpu.index)
        if frozen_pid is not None and not any(fp.pid == frozen_pid for fp in self.freezer.frozen()):
            del self.frozen_by_gpu[gpu.index]  # thawed elsewhere (by hand, on_no_room, shutdown)
            frozen_pid = None
        usage = dict(gpu.processes)
        growth = self.gpu_growth.growth(gpu.index, usage, now)
        if frozen_pid is None and gpu.free_bytes < freeze_at:
            reason = (
                f"GPU {gpu.index}: free {gpu.free_bytes >> 20} MiB below the freeze threshold {freeze_at >> 20} MiB"
            )
            fp = self.freezer.freeze(list(usage), reason, now, growth=growth)
            if fp is not None:
                self.frozen_by_gpu[gpu.index] = fp.pid
                return GpuEvent(gpu.index, "froze", fp, gpu.free_bytes)
        elif frozen_pid is not None and gpu.free_bytes >= thaw_at:
            fp = next(fp for fp in self.freezer.frozen() if fp.pid == frozen_pid)
            reason = f"GPU {gpu.index}: free {gpu.free_bytes >> 20} MiB back above {thaw_at >> 20} MiB"
            if self.freezer.thaw(frozen_pid, reason, "thawed"):
                del self.frozen_by_gpu[gpu.index]
                return GpuEvent(gpu.index, "thawed", fp, gpu.free_bytes)
        return None

    def run(self, stop: threading.Event) -> None:
        """Step until `stop` is set; one failed step is logged and retried at the slowest interval."""
        while not stop.is_set():
            try:
                _, interval = self.step()
            except Exception:  # NVML lost the GPU, a bug: keep watching
                log.exception("GPU freeze watch step failed")
                interval = self.slowest
            stop.wait(interval)

    def start(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name="headroom-gpu-freeze", daemon=True)
        thread.start()
        return thread, stop


def _plus(amount: Amount, band: Amount) -> Amount:
    """The freeze threshold plus the band, when both are of the same kind (else the threshold alone)."""
    return Amount(amount.value + band.value, amount.share) if amount.share == band.share else amount
