"""Pure parts behind the status views: the bounded history, the OOM feed's de-duplication, ranking, the terminal bar."""

from __future__ import annotations

import httpx

from guard.core.history import History
from guard.sources.observer import OomFeed, OomKill, oom_feed_of
from guard.sources.metrics_source import ExporterSource
from guard.protect.top import rank_processes
from guard.common.types import GpuObs, Snapshot
from guard.http.watch import bar, sparkline

GiB = 2**30


def snap(t: float, available: float, ok: bool = True) -> Snapshot:
    return Snapshot(taken_at=t, ok=ok, ram_total_bytes=4 * GiB, ram_available_bytes=available,
                    gpus=(GpuObs("0", None, 16 * GiB, 5 * GiB),))


def test_history_keeps_one_sample_per_step_within_the_window():
    history = History(window_seconds=60, step_seconds=2)
    added = [history.add(snap(1000 + i * 0.5, GiB), [], "ok") for i in range(400)]  # 200 s of 250 ms... ticks
    assert sum(added) == 100 and len(history.since(1200)) <= 31
    assert not history.add(snap(1300, GiB, ok=False), [], "ok")  # a failed observation is not a point
    sample = history.since(1200)[-1]
    assert sample.ram_used_bytes == 3 * GiB and sample.gpus["0"] == (16 * GiB, 11 * GiB, 0)


def test_oom_feed_reports_each_kill_once_and_skips_old_ones():
    now = 1_000_000.0
    kills = [{"kind": "oom_kill", "pid": 7, "comm": "old", "time_seconds": now - 3600},
             {"kind": "oom_kill", "pid": 8, "comm": "hog", "cgroup": "/a.slice/t.service", "unit": "t.service",
              "time_seconds": now - 5, "rss_bytes": GiB}]
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"events": kills}))
    feed = OomFeed("http://exporter/events", httpx.Client(transport=transport), every_seconds=0, clock=lambda: now)
    assert [k.pid for k in feed.poll()] == [8]
    assert feed.poll() == []
    kills.append({"kind": "oom_kill", "pid": 9, "comm": "next", "time_seconds": now - 5})  # same second, new pid
    assert [k.pid for k in feed.poll()] == [9]
    assert OomKill.of(kills[1]).describe() == "OOM kill: hog (pid 8) in /a.slice/t.service (t.service), cgroup limit, 1.0 GiB RSS"


def test_oom_feed_follows_the_exporter_source_only():
    source = ExporterSource("http://127.0.0.1:9840/metrics", "host", 1.0)
    try:
        assert oom_feed_of(source).url == "http://127.0.0.1:9840/events"
    finally:
        source.close()
    assert oom_feed_of(object()) is None


def test_rank_processes_and_terminal_bar():
    assert rank_processes([(1, "a", 5.0), (2, "b", 9.0), (3, "c", 9.0)], 2) == [(2, "b", 9.0), (3, "c", 9.0)]
    text = bar(100.0, 40.0, 10.0, {"warn": 25.0}, 20).plain
    assert text == "█" * 12 + "▒" * 2 + "░" + "┃" + "░" * 4
    assert sparkline([0, 50, 100], 100, 3) == "▁▅█"
