"""compose.yml and the Prometheus configuration it mounts, validated offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.alerts.stack import PROMETHEUS, RULES
from tests.helpers import REPO, need, need_binary

COMPOSE = REPO / "compose.yml"


def test_compose_file_matches_the_compose_spec():
    checker = Path(sys.executable).parent / "check-jsonschema"
    need(checker.exists(), "check-jsonschema in the venv (tests/requirements.txt)")
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_are_pinned_and_mounted_files_exist():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(services) == {"prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith((":latest", ":main")), f"{name}: pin the image version, got {image}"
        assert service["network_mode"] == "host", f"{name}: reaches the native processes on 127.0.0.1"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"


def test_prometheus_config_is_valid_with_the_shipped_rules(tmp_path):
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.rules.yml"]
    config["rule_files"] = [str(RULES)]  # where compose.yml mounts it in the container
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    for target in (PROMETHEUS, path):
        result = subprocess.run([need_binary("promtool"), "check", "config", str(target)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"headroom-exporter", "headroom-guard", "headroom-worker"} <= jobs, "the job names the rules and dashboards use"


def test_grafana_provisioning_points_at_the_mounted_dashboards():
    datasources = yaml.safe_load((REPO / "dashboards/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert datasources[0]["type"] == "prometheus" and datasources[0]["url"] == "http://127.0.0.1:9090"
    provider = yaml.safe_load((REPO / "dashboards/provisioning/dashboards/headroom.yml").read_text())["providers"][0]
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    assert f"./dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
