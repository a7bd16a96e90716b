"""Real kernel: a real OOM kill inside a memory cgroup, seen through a real exporter's /metrics and /events."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.exporter.conftest import exporter_process
from tests.helpers import need_root_memory_cgroup, wait_for
from tests.kernel import ALLOCATOR, memory_cgroup, spawn_in_cgroup

pytestmark = pytest.mark.kernel
LIMIT = 200 * 2**20


def scrape(base: str) -> dict[tuple, float]:
    samples = {}
    for family in text_string_to_metric_families(httpx.get(base + "/metrics", timeout=5).text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_oom_kill_in_cgroup_is_counted_and_attributed(tmp_path):
    need_root_memory_cgroup()
    with memory_cgroup(LIMIT) as cg:
        with exporter_process(tmp_path, {"cgroups": [cg.path], "collectors": ["memory", "oom", "cgroup"]}) as (base, _):
            before = scrape(base)
            assert value(before, "headroom_cgroup_memory_limit_bytes", cgroup=cg.path) == LIMIT
            child = spawn_in_cgroup(cg, ALLOCATOR.format(comm="hr-oom-victim", hold_mb=60, grow_mb=400), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert child.stdout.readline().strip() == "ready"
                held = scrape(base)
                assert value(held, "headroom_cgroup_memory_usage_bytes", cgroup=cg.path) >= 60 * 2**20
                go_at = time.time()
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.wait(timeout=30) == -9, "the allocation past memory.max should be OOM-killed (SIGKILL)"
                reaped_at = time.time()
            finally:
                if child.poll() is None:
                    child.kill()
            victim = dict(comm="hr-oom-victim", cgroup=cg.path, unit="")

            def victim_counted():
                samples = scrape(base)
                return samples if value(samples, "headroom_oom_kill_victims_total", **victim) >= 1 else None

            after = wait_for(victim_counted, timeout=10, what="the victim counter")
            events = httpx.get(base + "/events").json()["events"]
    assert value(after, "headroom_oom_kill_victims_total", **victim) - value(before, "headroom_oom_kill_victims_total", **victim) == 1
    assert value(after, "headroom_cgroup_oom_kills_total", cgroup=cg.path) - value(before, "headroom_cgroup_oom_kills_total", cgroup=cg.path) == 1
    # The host-wide counter: at least this kill (another process on the machine may be killed meanwhile).
    assert value(after, "headroom_oom_kills_total") - value(before, "headroom_oom_kills_total") >= 1
    assert value(after, "headroom_oom_kill_last_timestamp_seconds") > 0
    newest = [e for e in events if e["pid"] == child.pid]
    assert newest and newest[0]["comm"] == "hr-oom-victim" and newest[0]["cgroup"] == cg.path
    assert newest[0]["rss_bytes"] > 100 * 2**20
    # The kill time is precise (boot time to the microsecond): between "go" and the parent seeing the child die.
    assert go_at - 0.005 <= newest[0]["time_seconds"] <= reaped_at + 0.005, (go_at, newest[0]["time_seconds"], reaped_at)
