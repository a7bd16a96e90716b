"""Golden file of the whole /metrics output for fixture trees (proc, cgroup v1 and v2, kmsg, two fake GPUs)."""

from __future__ import annotations

import os
import re
import subprocess

import httpx
import pytest

from tests.exporter.conftest import GOLDEN, exporter_process, golden_exporter_config
from tests.helpers import need_binary

# Series whose values change from run to run (timings, the exporter's own process).
VARYING = re.compile(r"^(# (HELP|TYPE) )?(headroom_collector_duration_seconds|headroom_exporter_process_|headroom_exporter_http_connections )")
UPDATE = os.environ.get("HEADROOM_UPDATE_GOLDEN") == "1"


def stable_lines(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not VARYING.match(line))


@pytest.mark.parametrize("version", ["1", "2"])
def test_metrics_match_golden_file(tmp_path, golden_env, version):
    with exporter_process(tmp_path, golden_exporter_config(version), env=golden_env) as (base, _proc):
        text = httpx.get(base + "/metrics").text
    golden = GOLDEN / f"metrics-cgroup-v{version}.prom"
    if UPDATE:
        golden.write_text(stable_lines(text))
    assert stable_lines(text) == golden.read_text(), f"/metrics differs from {golden}; rerun with HEADROOM_UPDATE_GOLDEN=1 if intended"


def el7_exporter_config() -> dict:
    """A CentOS 7 (3.10) box: no oom_kill in /proc/vmstat, no PSI, cgroup v1, the old OOM report shape."""
    root = GOLDEN.parent / "golden-el7"
    return {
        "procfs": str(root / "proc"),
        "cgroupfs": str(root / "cgroup-v1"),
        "kmsg": str(GOLDEN.parent / "kmsg" / "el7-3.10-memcg.kmsg"),
        "cgroups": ["tomcat.service"],
        "collectors": ["memory", "pressure", "oom", "cgroup"],
    }


def test_old_kernel_metrics_match_golden_file(tmp_path):
    with exporter_process(tmp_path, el7_exporter_config()) as (base, _proc):
        text = httpx.get(base + "/metrics").text
        events = httpx.get(base + "/events").json()["events"]
    golden = GOLDEN.parent / "golden-el7" / "metrics.prom"
    if UPDATE:
        golden.write_text(stable_lines(text))
    assert stable_lines(text) == golden.read_text(), f"/metrics differs from {golden}; rerun with HEADROOM_UPDATE_GOLDEN=1 if intended"
    # What a user of a 3.10 box must see: the kill count (from kmsg, and said so), and each victim with its cgroup.
    assert "headroom_oom_kills_total 2.0" in text and 'headroom_oom_kills_source_info{source="kmsg"} 1.0' in text
    assert [(e["pid"], e["comm"], e["cgroup"]) for e in events] == [
        (9950, "my (test) app", "/user.slice/user-1000.slice/session-7.scope/my test"),
        (9940, "java", "/system.slice/tomcat.service"),
    ]
    assert events[1]["time_seconds"] == pytest.approx(1180000000 + 615694.5121, abs=1e-6)


def test_promtool_check_metrics_is_clean(tmp_path, golden_env):
    promtool = need_binary("promtool")
    with exporter_process(tmp_path, golden_exporter_config("2"), env=golden_env) as (base, _proc):
        text = httpx.get(base + "/metrics").text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result.stdout + result.stderr


def test_events_lists_victims_newest_first(tmp_path, golden_env):
    with exporter_process(tmp_path, golden_exporter_config("1"), env=golden_env) as (base, _proc):
        payload = httpx.get(base + "/events").json()
    victims = [(e["pid"], e["comm"], e["cgroup"], e["unit"]) for e in payload["events"]]
    assert victims == [
        (4242, "VLLM::EngineCor", "/system.slice/vllm-worker.service", "vllm-worker.service"),
        (2077, "python3", "", ""),
        (3120, "stress-ng", "/user.slice/user-1000.slice/session-4.scope", "session-4.scope"),
        (2014, "python3", "/headroom.slice/headroom-run-olmo.scope", "headroom-run-olmo.scope"),
    ]
    newest = payload["events"][0]
    assert newest["rss_bytes"] == (1468006 + 81920 + 4096) * 1024
    assert newest["time_seconds"] == pytest.approx(1795000000 + 90062.0002)
    assert payload["events"][2]["global_oom"] is True and payload["kmsg"]["followed"] is True


def test_lean_encoder_writes_what_prometheus_client_writes(monkeypatch):
    from prometheus_client.exposition import generate_latest

    from exporter import registry
    from exporter.encode import encode
    from exporter.settings import ExporterSettings

    monkeypatch.setenv("HEADROOM_FAKE_NVML", str(GOLDEN / "nvml.json"))
    reg, follower = registry.build(ExporterSettings(**golden_exporter_config("2")))
    follower.start()
    try:
        ours, theirs = encode(reg).decode(), generate_latest(reg).decode()
    finally:
        follower.stop()
    assert stable_lines(ours) == stable_lines(theirs)
    assert 'headroom_cgroup_pressure_memory_ratio{cgroup="/headroom.slice",kind="some",window="10s"} 0.3' in ours
