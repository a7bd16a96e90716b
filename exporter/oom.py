"""The `oom` collector: the kernel's OOM-kill counter (vmstat, or counted from kmsg before 4.13) plus the kmsg
victims."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from exporter.follower import KmsgFollower, KmsgState
from exporter.meminfo import read_vmstat


class OomCollector:
    name = "oom"

    def __init__(self, procfs: Path, follower: KmsgFollower | None):
        self.procfs = procfs
        self.follower = follower
        self.problem: str | None = None  # set when part of the data is missing: collector_success goes to 0
        self._overruns_seen = 0

    def collect(self):
        vm = read_vmstat(self.procfs)
        state = self.follower.snapshot() if self.follower is not None else None
        yield from _kill_counter(vm.oom_kills, state)
        if state is None:
            self.problem = None
            return
        self.problem = state.error
        if state.overruns > self._overruns_seen:  # records were lost since the last scrape: say so once
            self.problem = (
                self.problem
                or f"kernel log overran {state.overruns - self._overruns_seen} time(s): some OOM records were lost"
            )
            self._overruns_seen = state.overruns
        victims = CounterMetricFamily(
            "headroom_oom_kill_victims",
            "OOM-killed processes seen in the kernel log, by command, cgroup and systemd unit.",
            labels=["comm", "cgroup", "unit"],
        )
        for (comm, cgroup, unit), count in sorted(state.victim_counts.items()):
            victims.add_metric([comm, cgroup, unit], count)
        yield victims
        latest = GaugeMetricFamily(
            "headroom_oom_kill_victim_last_timestamp_seconds",
            "Unix time of the latest OOM kill of this command, cgroup and unit in the kernel log (alerts fire only for "
            "recent ones, so kills from before a first start do not page).",
            labels=["comm", "cgroup", "unit"],
        )
        for (comm, cgroup, unit), at in sorted(state.victim_last.items()):
            latest.add_metric([comm, cgroup, unit], at)
        yield latest
        if state.last_kill_time is not None:
            yield GaugeMetricFamily(
                "headroom_oom_kill_last_timestamp_seconds",
                "Unix time of the last OOM kill in the kernel log.",
                value=state.last_kill_time,
            )
        yield CounterMetricFamily(
            "headroom_kmsg_overruns",
            "Times the kernel log overwrote records before the exporter read them.",
            value=state.overruns,
        )
        yield GaugeMetricFamily(
            "headroom_kmsg_up", "1 when the kernel log is being followed.", value=0 if state.error else 1
        )


def _kill_counter(vmstat_kills: int | None, state: KmsgState | None):
    """headroom_oom_kills_total from /proc/vmstat's oom_kill (4.13+), else counted from the kernel log; and its
    source."""
    if vmstat_kills is not None:
        source, value = "vmstat", vmstat_kills
    elif state is not None and state.error is None:
        source, value = "kmsg", sum(state.victim_counts.values())
    else:
        return  # no source: no series, never a fake 0
    yield CounterMetricFamily(
        "headroom_oom_kills",
        "Processes the kernel OOM killer killed since boot "
        "(/proc/vmstat oom_kill; before kernel 4.13 counted in the kernel log).",
        value=value,
    )
    info = GaugeMetricFamily(
        "headroom_oom_kills_source_info",
        "Where headroom_oom_kills_total comes from: vmstat (kernel 4.13+) or kmsg (kills seen in the kernel log).",
        labels=["source"],
    )
    info.add_metric([source], 1)
    yield info
