"""A bounded in-memory history of RAM and GPU memory (the last 15 minutes) for the status page's charts."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from guard.core.leases import reserved_gpu, reserved_ram
from guard.common.types import Lease, Snapshot

WINDOW_SECONDS = 900.0  # what the charts show
STEP_SECONDS = 2.0  # one sample per step: 450 samples per window, a few tens of KiB
MARK_KINDS = ("action", "decision", "oom_kill")  # events drawn on the charts as moments


@dataclass(frozen=True)
class Sample:
    """One point of the charts: the domain's RAM and each GPU's memory at `t`."""

    t: float  # unix seconds
    ram_total_bytes: float | None
    ram_used_bytes: float | None  # total - available
    ram_reserved_bytes: float  # outstanding lease reservations
    gpus: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # gpu -> (total, used, reserved)
    level: str = "ok"  # the guard's overall level then


def sample_of(snapshot: Snapshot, leases: Sequence[Lease], level: str) -> Sample:
    """A chart point from one observation; reservations as admission counts them."""
    used = None
    if snapshot.ram_total_bytes is not None and snapshot.ram_available_bytes is not None:
        used = max(0.0, snapshot.ram_total_bytes - snapshot.ram_available_bytes)
    gpus = {g.gpu: (g.total_bytes, max(0.0, g.total_bytes - g.free_bytes),
                    sum(reserved_gpu(lease, snapshot, g.gpu) for lease in leases)) for g in snapshot.gpus}
    return Sample(snapshot.taken_at, snapshot.ram_total_bytes, used,
                  sum(reserved_ram(lease, snapshot) for lease in leases), gpus, level)


class History:
    """At most one sample per `step_seconds`, none older than `window_seconds`; thread-safe."""

    def __init__(self, window_seconds: float = WINDOW_SECONDS, step_seconds: float = STEP_SECONDS):
        self.window_seconds, self.step_seconds = window_seconds, step_seconds
        self.samples: deque[Sample] = deque(maxlen=int(window_seconds / step_seconds) + 2)
        self.lock = threading.Lock()

    def add(self, snapshot: Snapshot, leases: Sequence[Lease], level: str) -> bool:
        """Record `snapshot` if a step has passed since the last sample and the observation succeeded."""
        if not snapshot.ok:
            return False
        with self.lock:
            if self.samples and snapshot.taken_at - self.samples[-1].t < self.step_seconds:
                return False
            self.samples.append(sample_of(snapshot, leases, level))
            self._trim(snapshot.taken_at)
        return True

    def _trim(self, now: float) -> None:
        while self.samples and now - self.samples[0].t > self.window_seconds:
            self.samples.popleft()

    def since(self, now: float) -> list[Sample]:
        with self.lock:
            return [s for s in self.samples if now - s.t <= self.window_seconds]


def sample_view(sample: Sample) -> dict:
    return {
        "t": sample.t,
        "level": sample.level,
        "ram": {
            "total_bytes": sample.ram_total_bytes,
            "used_bytes": sample.ram_used_bytes,
            "reserved_bytes": sample.ram_reserved_bytes,
        },
        "gpus": {
            gpu: {"total_bytes": t, "used_bytes": u, "reserved_bytes": r} for gpu, (t, u, r) in sample.gpus.items()
        },
    }


def history_view(history: History, events, now: float) -> dict:
    """`GET /v1/history`: the samples of the window plus the moments the guard acted (and OOM kills) in it; `events`
    is the journal's reader (limit, after, kind)."""
    start = now - history.window_seconds
    marks = []
    for kind in MARK_KINDS:
        marks += [
            {"t": e["at"], "kind": e["kind"], "message": e["message"]} for e in events(200, 0, kind) if e["at"] >= start
        ]
    marks.sort(key=lambda m: m["t"])
    return {
        "now": now,
        "window_seconds": history.window_seconds,
        "step_seconds": history.step_seconds,
        "samples": [sample_view(s) for s in history.since(now)],
        "marks": marks,
    }
