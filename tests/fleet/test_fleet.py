"""Fleet mode: several hosts' exporters scraped by one real Prometheus; each guard reads only its own host from it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.alerts.stack import Server, query, start_prometheus
from tests.exporter.conftest import GOLDEN, exporter_process
from tests.helpers import REPO, free_port, headroom_cmd, need_binary, stop_process, wait_for, write_toml

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]
GiB = 2**30
TOKEN = "fleet-token-0123456789"
# host -> (MemTotal, MemAvailable); all above the guard's warn threshold (25 % available) so only room decides.
HOSTS = {"gpu-a": (32 * GiB, 24 * GiB), "gpu-b": (32 * GiB, 12 * GiB), "gpu-c": (32 * GiB, 9 * GiB)}
NODE_HOST = ("gpu-d", 32 * GiB, 20 * GiB)  # watched through node_exporter and the node_exporter_dcgm preset
ASK = 16 * GiB
MARGIN = 512 * 2**20  # the guard's default ram_margin


def host_tree(tmp: Path, name: str, total: int, available: int) -> Path:
    """A copy of the golden /proc with this host's RAM figures and no memory pressure."""
    proc = tmp / name / "proc"
    shutil.copytree(GOLDEN / "proc", proc)
    lines = [f"MemTotal: {total // 1024} kB", f"MemFree: {available // 2048} kB", f"MemAvailable: {available // 1024} kB",
             "Cached: 1048576 kB", "SwapTotal: 0 kB", "SwapFree: 0 kB"]
    (proc / "meminfo").write_text("\n".join(lines) + "\n")
    (proc / "pressure" / "memory").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    return proc


def start_guard(tmp: Path, name: str, prometheus: Server, preset: str = "headroom") -> tuple[subprocess.Popen, httpx.Client]:
    port = free_port()
    conf = write_toml(tmp / f"guard-{name}.toml", {"state_dir": str(tmp / name / "state"), "guard": {
        "listen": f"127.0.0.1:{port}", "token": TOKEN, "source": "prometheus", "prometheus_url": prometheus.url,
        "prometheus_instance": name, "prometheus_preset": preset, "stale_after_seconds": 15.0}})
    proc = subprocess.Popen(headroom_cmd("guard", "--config", str(conf)), cwd=REPO, stdout=open(tmp / f"guard-{name}.log", "wb"), stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    return proc, client


def test_each_guard_sees_only_its_own_host(tmp_path):
    prometheus_bin = need_binary("prometheus")
    node_bin = need_binary("prometheus-node-exporter")
    with contextlib.ExitStack() as stack:
        targets = []
        for name, (total, available) in HOSTS.items():
            conf = {"procfs": str(host_tree(tmp_path, name, total, available)), "collectors": ["memory", "pressure"]}
            base, _ = stack.enter_context(exporter_process(tmp_path, conf))
            targets.append({"targets": [base.removeprefix("http://")], "labels": {"instance": name}})
        node_port = free_port()
        node_proc = host_tree(tmp_path, NODE_HOST[0], NODE_HOST[1], NODE_HOST[2])
        node = subprocess.Popen([node_bin, f"--web.listen-address=127.0.0.1:{node_port}", f"--path.procfs={node_proc}",
                                 "--collector.disable-defaults", "--collector.meminfo", "--collector.vmstat", "--collector.pressure"],
                                stderr=subprocess.DEVNULL)
        stack.callback(stop_process, node)
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": [
            {"job_name": "headroom-exporter", "static_configs": targets},
            {"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{node_port}"], "labels": {"instance": NODE_HOST[0]}}]}]}
        prometheus = start_prometheus(prometheus_bin, tmp_path, config)
        stack.callback(prometheus.stop)
        wait_for(lambda: len(query(prometheus, "headroom_memory_available_bytes")) == 3 and query(prometheus, "node_memory_MemAvailable_bytes"),
                 30, interval=0.5, what="Prometheus to scrape every host")
        guards = {name: start_guard(tmp_path, name, prometheus) for name in HOSTS}
        guards[NODE_HOST[0]] = start_guard(tmp_path, NODE_HOST[0], prometheus, preset="node_exporter_dcgm")
        for proc, client in guards.values():
            stack.callback(stop_process, proc)
            stack.callback(client.close)
        for name, (_proc, client) in guards.items():
            wait_for(lambda: client.get("/readyz").status_code == 200, 30, what=f"guard {name} ready")
        expected = {**{name: available for name, (_, available) in HOSTS.items()}, NODE_HOST[0]: NODE_HOST[2]}
        for name, (_proc, client) in guards.items():
            ram = client.get("/v1/headroom").json()["ram"]
            assert ram["available_bytes"] == expected[name], f"{name} sees {ram['available_bytes']}, its host has {expected[name]}"
            answer = client.post("/v1/leases", json={"holder": f"test-on-{name}", "ram_bytes": ASK})
            room = expected[name] - MARGIN
            if room >= ASK:
                assert answer.status_code == 201, (name, answer.text)
            else:
                assert answer.status_code == 409, (name, answer.text)
                assert answer.json()["shortfall"]["ram_bytes"] == ASK - room
        granted = {name for name, (_p, c) in guards.items() if c.get("/v1/leases").json()["leases"]}
        assert granted == {"gpu-a", "gpu-d"}, "a lease on one host does not spend another host's headroom"
