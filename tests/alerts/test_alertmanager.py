"""The shipped Alertmanager configuration: amtool checks, the route tree, and inhibitions in a real Alertmanager."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from tests.alerts.stack import ALERTMANAGER, alertmanager_config, start_alertmanager
from tests.helpers import need_binary, wait_for

pytestmark = pytest.mark.prometheus


def test_amtool_check_config():
    result = subprocess.run([need_binary("amtool"), "check-config", str(ALERTMANAGER)], capture_output=True, text=True)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("labels, receivers", [
    ({"alertname": "HeadroomOOMKill", "severity": "critical", "instance": "gpu-box:9840"}, "guard,oncall-critical"),
    ({"alertname": "HeadroomRAMLow", "severity": "warning", "instance": "gpu-box:9840"}, "guard,oncall-warning"),
    ({"alertname": "HeadroomExporterDown", "severity": "critical"}, "guard,oncall-critical"),
    # Not a headroom alert: people only, by severity; no severity at all: the default receiver.
    ({"alertname": "NodeDiskFull", "severity": "critical"}, "oncall-critical"),
    ({"alertname": "Watchdog"}, "oncall-warning"),
])
def test_routes(labels, receivers):
    argv = [need_binary("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}", f"--verify.receivers={receivers}",
            *(f"{k}={v}" for k, v in labels.items())]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def post_alerts(url: str, alerts: list[dict]) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = [{"labels": labels, "annotations": {"summary": "test"}, "startsAt": now} for labels in alerts]
    assert httpx.post(url + "/api/v2/alerts", json=body, timeout=5).status_code == 200


def inhibited(url: str) -> dict[tuple[str, str], bool]:
    alerts = httpx.get(url + "/api/v2/alerts", timeout=5).json()
    return {(a["labels"]["alertname"], a["labels"].get("instance", "")): bool(a["status"]["inhibitedBy"]) for a in alerts}


def test_oom_kill_inhibits_headroom_warnings_on_the_same_instance_only(tmp_path):
    binary = need_binary("prometheus-alertmanager")
    token = tmp_path / "token"
    token.write_text("t\n")
    server = start_alertmanager(binary, tmp_path, alertmanager_config("http://127.0.0.1:9/v1/alerts", token))
    try:
        post_alerts(server.url, [
            {"alertname": "HeadroomOOMKill", "severity": "critical", "instance": "a:9840", "comm": "python3", "cgroup": "/x", "unit": ""},
            {"alertname": "HeadroomRAMLow", "severity": "warning", "instance": "a:9840"},
            {"alertname": "HeadroomMemoryPressure", "severity": "warning", "instance": "a:9840", "kind": "full", "window": "60s"},
            {"alertname": "HeadroomRAMLow", "severity": "warning", "instance": "b:9840"},
            {"alertname": "HeadroomCollectorFailing", "severity": "warning", "instance": "a:9840", "collector": "gpu"},
        ])
        state = wait_for(lambda: (s := inhibited(server.url)) and s.get(("HeadroomRAMLow", "a:9840")) and s, 10,
                         what="HeadroomRAMLow on a:9840 to be inhibited")
    finally:
        server.stop()
    assert state[("HeadroomMemoryPressure", "a:9840")] is True
    assert state[("HeadroomRAMLow", "b:9840")] is False, "another host's warning stays"
    assert state[("HeadroomCollectorFailing", "a:9840")] is False, "not a headroom-low warning"
    assert state[("HeadroomOOMKill", "a:9840")] is False
