"""Kubernetes manifests: valid against the Kubernetes schemas offline, consistent with each other and the config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from headroom.config import load_settings
from tests.helpers import REPO, need

K8S = REPO / "deploy" / "kubernetes"
CORE = ["namespace.yaml", "configmap.yaml", "daemonset.yaml", "service.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def test_core_manifests_pass_strict_schema_validation():
    tool = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    need(tool is not None, "kubernetes-validate (tests/requirements.txt)")
    result = subprocess.run([tool, "--strict", *[str(K8S / n) for n in CORE]], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(CORE)


def test_schema_validation_would_catch_a_typo(tmp_path):
    tool = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    need(tool is not None, "kubernetes-validate (tests/requirements.txt)")
    bad = tmp_path / "daemonset.yaml"
    bad.write_text((K8S / "daemonset.yaml").read_text().replace("hostPID: true", "hostPid: true"))
    assert subprocess.run([tool, "--strict", str(bad)], capture_output=True, text=True, timeout=120).returncode != 0


def test_configmap_holds_a_valid_headroom_config(tmp_path):
    toml = tmp_path / "headroom.toml"
    toml.write_text(load("configmap.yaml")["data"]["headroom.toml"])
    settings = load_settings(toml, environ={})
    assert settings.exporter.procfs == Path("/host/proc") and settings.guard.exporter_url.startswith("http://127.0.0.1:9840")


def test_daemonset_mounts_what_the_exporter_reads_and_servicemonitor_matches_the_service():
    pod = load("daemonset.yaml")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["runtimeClassName"] == "nvidia"
    exporter = next(c for c in pod["containers"] if c["name"] == "exporter")
    mounts = {m["mountPath"] for m in exporter["volumeMounts"]}
    assert {"/host/proc", "/host/sys/fs/cgroup", "/dev/kmsg"} <= mounts
    assert "SYSLOG" in exporter["securityContext"]["capabilities"]["add"]
    service, monitor = load("service.yaml"), load("servicemonitor.yaml")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {p["name"] for p in service["spec"]["ports"]}
    container_ports = {p["name"] for c in pod["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports


def test_prometheusrule_is_generated_from_alerts_and_valid(tmp_path):
    sys.path.insert(0, str(K8S))
    try:
        import generate
    finally:
        sys.path.remove(str(K8S))
    assert (K8S / "prometheusrule.yaml").read_text() == generate.render(), "run deploy/kubernetes/generate.py"
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": load("prometheusrule.yaml")["spec"]["groups"]}))
    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool (Debian package prometheus)")
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_fleet_guard_never_freezes_a_pod(tmp_path):
    """hostPID shows the guard every tenant's processes: freezing is off in the shipped config, so a guard built from it
    leaves a real process on this node running (with the freezer on, it would SIGSTOP it)."""
    from guard.protect.freezer import Freezer
    from guard.common.store import Store

    toml = tmp_path / "headroom.toml"
    toml.write_text(load("configmap.yaml")["data"]["headroom.toml"])
    guard = load_settings(toml, environ={}).guard
    assert guard.freeze.enabled is False
    pod = subprocess.Popen(["sleep", "30"], start_new_session=True)  # another tenant's container, as /proc shows it
    try:
        freezer = Freezer(guard, Store(tmp_path / "state"))
        assert freezer.freeze([pod.pid], "test: ram below the freeze threshold", growth={pod.pid: 64 << 20}) is None
        state = Path(f"/proc/{pod.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state != "T", "the fleet guard stopped a process that is not its own"
    finally:
        pod.kill()
        pod.wait(timeout=10)
    container = next(c for c in load("daemonset.yaml")["spec"]["template"]["spec"]["containers"] if c["name"] == "guard")
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, "no CAP_KILL for the fleet guard"
    assert not any(m["mountPath"].startswith("/host/sys/fs/cgroup") for m in container["volumeMounts"])
