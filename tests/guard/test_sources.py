"""Observing: the exporter /metrics parser, the memory domain, the Prometheus query source and its presets."""

from __future__ import annotations

import httpx
import pytest

from guard.sources.metrics_source import ExporterSource, parse_exporter_text
from guard.sources.observer import Observer, with_pid_usage
from guard.sources.promsource import PRESETS, PrometheusSource, build_queries
from tests.guard.support import FIXTURES, gpu, snap

GPU_TEXT = (FIXTURES / "exporter_gpu.txt").read_text()


def test_host_domain_reads_meminfo_signals():
    s = parse_exporter_text(GPU_TEXT, "host", 5.0)
    assert s.ok and s.taken_at == 5.0
    assert (s.ram_total_bytes, s.ram_available_bytes) == (3.2e10, 1.6e10)
    assert s.swap_in_bytes_total == 4.096e6
    assert (s.psi_full_ratio, s.psi_some_ratio) == (0.07, 0.12)
    assert s.oom_kills_total == 3


def test_cgroup_domain_is_limit_minus_usage_plus_reclaimable():
    s = parse_exporter_text(GPU_TEXT, "/headroom.slice", 0)
    assert s.ok and s.ram_total_bytes == 8e9
    assert s.ram_available_bytes == 8e9 - 6e9 + 5e8


def test_unlimited_cgroup_falls_back_to_the_host_bound():
    s = parse_exporter_text(GPU_TEXT, "/unlimited.slice", 0)
    assert s.ok and s.ram_available_bytes == 1.6e10 and s.ram_total_bytes == 3.2e10


def test_cgroup_available_never_exceeds_host_available():
    text = GPU_TEXT.replace("headroom_memory_available_bytes 1.6e+10", "headroom_memory_available_bytes 1.0e+09")
    assert parse_exporter_text(text, "/headroom.slice", 0).ram_available_bytes == 1e9


@pytest.mark.parametrize("domain, needle", [("/missing.slice", "/missing.slice"), ("host", "memory_available_bytes")])
def test_missing_domain_is_a_not_ok_snapshot_naming_it(domain, needle):
    text = "" if domain == "host" else GPU_TEXT
    s = parse_exporter_text(text, domain, 0)
    assert not s.ok and needle in s.error


def test_gpus_with_uuid_and_processes():
    s = parse_exporter_text(GPU_TEXT, "host", 0)
    assert [(g.gpu, g.uuid, g.total_bytes, g.free_bytes) for g in s.gpus] == [
        ("0", "GPU-aaaa", 1.6e10, 4e9), ("1", "GPU-bbbb", 1.6e10, 1.5e10)]
    assert s.gpus[0].processes == {4242: 1.1e10}


def test_no_gpu_series_means_no_gpus():
    s = parse_exporter_text((FIXTURES / "exporter_nogpu.txt").read_text(), "host", 0)
    assert s.ok and s.gpus == () and s.psi_full_ratio is None and s.swap_in_bytes_total is None


def test_exporter_source_failure_is_a_state_not_an_exception():
    def handler(request):
        return httpx.Response(500, text="boom")

    s = ExporterSource("http://exporter/metrics", "host", 1.0, httpx.MockTransport(handler)).fetch()
    assert not s.ok and "500" in s.error


def test_exporter_source_fetches_and_parses():
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=GPU_TEXT))
    s = ExporterSource("http://exporter/metrics", "/headroom.slice", 1.0, transport).fetch()
    assert s.ok and s.ram_available_bytes == 2.5e9


def _prom_handler(values: dict[str, list]):
    def handler(request: httpx.Request):
        query = request.url.params["query"]
        for needle, result in values.items():
            if needle in query:
                return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": result}})
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": []}})
    return handler


def _vec(value, **labels):
    return {"metric": labels, "value": [0, str(value)]}


def test_prometheus_node_exporter_dcgm_preset():
    queries = build_queries("node_exporter_dcgm", {}, "gpu-host-1:9100", "host")
    assert "cgroup_memory_usage_bytes" not in queries
    assert 'instance=~"gpu-host-1:9100"' in queries["memory_available_bytes"]
    handler = _prom_handler({
        "DCGM_FI_DEV_FB_USED": [_vec(16e9, gpu="0", UUID="GPU-x")],
        "DCGM_FI_DEV_FB_FREE": [_vec(4e9, gpu="0", UUID="GPU-x")],
        "MemAvailable": [_vec(8e9)], "MemTotal": [_vec(30e9)],
        "node_pressure": [_vec(0.25)], "pswpin": [_vec(1e6)],
    })
    s = PrometheusSource("http://prom:9090", queries, "host", 1.0, httpx.MockTransport(handler)).fetch()
    assert s.ok and s.ram_available_bytes == 8e9 and s.psi_full_ratio == 0.25 and s.swap_in_bytes_total == 1e6
    assert [(g.gpu, g.uuid, g.total_bytes, g.free_bytes) for g in s.gpus] == [("0", "GPU-x", 16e9, 4e9)]


def test_prometheus_cgroup_domain_and_override():
    queries = build_queries("headroom", {"memory_total_bytes": "my_total"}, "", "/headroom.slice")
    assert queries["memory_total_bytes"] == "my_total"
    assert 'cgroup="/headroom.slice"' in queries["cgroup_memory_limit_bytes"]
    handler = _prom_handler({"limit": [_vec(4e9)], "usage": [_vec(3e9)], "reclaimable": [_vec(1e9)],
                             "available": [_vec(20e9)]})
    s = PrometheusSource("http://prom", queries, "/headroom.slice", 1.0, httpx.MockTransport(handler)).fetch()
    assert s.ok and s.ram_available_bytes == 2e9 and s.ram_total_bytes == 4e9


def test_prometheus_error_is_not_ok():
    handler = lambda request: httpx.Response(200, json={"status": "error", "error": "bad query"})  # noqa: E731
    s = PrometheusSource("http://prom", PRESETS["headroom"], "host", 1.0, httpx.MockTransport(handler)).fetch()
    assert not s.ok and "bad query" in s.error


def test_pid_usage_counts_the_process_tree(tmp_path):
    import os
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 << 20); time.sleep(30)"])
    try:
        import time

        time.sleep(0.5)
        base = snap(0, gpus=(gpu("0", procs={child.pid: 3e9, 99999: 1e9}),))
        s = with_pid_usage(base, [os.getpid()])
        assert s.pid_ram_bytes[os.getpid()] > 64 << 20  # this process + the child holding 64 MiB
        assert s.pid_gpu_bytes[os.getpid()] == {"0": 3e9}
        assert with_pid_usage(base, [2**22 + 5]).pid_ram_bytes == {}
    finally:
        child.kill()
        child.wait()


def test_observer_skips_pid_accounting_when_the_source_failed():
    class Down:
        def fetch(self):
            from guard.common.types import Snapshot
            return Snapshot(taken_at=1, ok=False, error="down")

        def close(self):
            pass

    assert Observer(Down()).observe([1]).pid_ram_bytes == {}
