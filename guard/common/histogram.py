"""The one histogram: cumulative bucket counts for /metrics (tick, gap, reaction and downtime seconds)."""

from __future__ import annotations


class Histogram:
    """Cumulative bucket counts for /metrics, plus the recent values for benchmarks."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets, self.counts, self.count, self.total = buckets, [0] * len(buckets), 0, 0.0
        self.recent: list[float] = []

    def observe(self, value: float) -> None:
        self.count, self.total = self.count + 1, self.total + value
        self.recent = (self.recent + [value])[-1000:]
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)  # seconds a guard tick took


class TickHistogram(Histogram):
    """Cumulative tick durations (a Prometheus histogram must only grow, so rate() and quantiles work)."""

    def __init__(self) -> None:
        super().__init__(TICK_BUCKETS)
