"""Test doubles for the guard: a fake clock, a scriptable source, snapshot and settings builders."""

from __future__ import annotations

from pathlib import Path

from guard.common.settings import GuardSettings
from guard.common.types import GpuObs, Snapshot

FIXTURES = Path(__file__).parent / "fixtures"
GiB = 2**30
MiB = 2**20


class FakeClock:
    """Unix seconds that only move when a test says so."""

    def __init__(self, start: float = 1_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeSource:
    """A source whose next Snapshot the test sets; stamps it with the fake clock's time."""

    def __init__(self, clock: FakeClock, **fields):
        self.clock, self.fields, self.fetches = clock, fields, 0

    def set(self, **fields) -> None:
        self.fields.update(fields)

    def fetch(self) -> Snapshot:
        self.fetches += 1
        fields = {"ok": True, "ram_total_bytes": 32 * GiB, "ram_available_bytes": 20 * GiB, **self.fields}
        return Snapshot(taken_at=self.clock(), **fields)

    def close(self) -> None:
        pass


def snap(now: float, available: float = 20 * GiB, total: float = 32 * GiB, **fields) -> Snapshot:
    return Snapshot(taken_at=now, ok=True, ram_total_bytes=total, ram_available_bytes=available, **fields)


def gpu(index: str = "0", free: float = 10 * GiB, total: float = 16 * GiB, uuid: str | None = None, procs=None) -> GpuObs:
    return GpuObs(index, uuid or f"GPU-{index}", total, free, procs or {})


def settings(**overrides) -> GuardSettings:
    return GuardSettings(**overrides)


