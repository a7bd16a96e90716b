"""The fast path's /metrics: observation age, poll interval and gaps, reaction time, the worker's downtime per event."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from guard.core.published import HistogramCopy, Published

P = "headroom_guard_"


def histogram_family(name: str, doc: str, hist: HistogramCopy) -> HistogramMetricFamily:
    buckets = [(str(b), n) for b, n in zip(hist.buckets, hist.counts)] + [("+Inf", hist.count)]
    return HistogramMetricFamily(P + name, doc, buckets=buckets, sum_value=hist.total)


def fast_path_families(read: Published, settings):
    """Collect-on-scrape over the published fast-path summary and the downtime meter."""
    now = read.now
    age = GaugeMetricFamily(P + "observation_age_seconds", "Age of the newest observation, per loop.", labels=["path"])
    if read.guard.snapshot.taken_at:
        age.add_metric(["tick"], now - read.guard.snapshot.taken_at)
    fast = read.fast
    if fast is not None and fast.last_taken_at is not None:
        age.add_metric(["fast"], now - fast.last_taken_at)
    yield age
    yield histogram_family("worker_downtime_seconds", "The worker's downtime per protection event (down on the guard's "
                           "wish until running again).", read.downtime)
    yield GaugeMetricFamily(P + "protecting", "1 while a fast-path protection episode lasts (the worker held freed).",
                            value=1.0 if read.protection.override is not None else 0.0)
    if fast is None:
        return
    yield GaugeMetricFamily(P + "fast_interval_seconds", "The fast path's current poll interval.", value=fast.interval)
    yield histogram_family("fast_gap_seconds", "Time between consecutive fast-path observations.", fast.gaps)
    yield GaugeMetricFamily(P + "fast_gap_ratio_max", "The worst gap between two fast-path observations relative to "
                            "the interval planned for it (acting never blinds observing: stays below 2).",
                            value=fast.max_gap_ratio)
    yield histogram_family("fast_step_seconds", "How long one fast-path look took, with what it did (a freeze, a "
                           "thaw).", fast.steps)
    yield histogram_family("reaction_seconds", "From the domain crossing the freeze threshold (interpolated) to the "
                           "freeze and the free request.", fast.reactions)
    yield CounterMetricFamily(P + "fast_wakeups", "Fast-path wake-ups by a kernel notification.", value=fast.wakeups)
