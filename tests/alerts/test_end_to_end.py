"""The proof: real exporter, guard and worker, a real Prometheus and Alertmanager on the shipped rules and routes.

A real OOM kill in a memory cgroup reaches the guard's webhook; every dashboard query returns data; stopping the
exporter fires HeadroomExporterDown. Only intervals, addresses and the webhook's URL and token file differ from
what alerts/ and deploy/prometheus/ ship (tests/alerts/stack.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.alerts.stack import (RULES, alertmanager_config, dashboard_targets, firing, prometheus_config, query, start_alertmanager,
                                start_prometheus, substitute)
from tests.exporter.conftest import GOLDEN, golden_exporter_config
from tests.helpers import REPO, free_port, headroom_cmd, need_binary, need_root_memory_cgroup, stop_process, wait_for, write_toml
from tests.kernel import ALLOCATOR, memory_cgroup, spawn_in_cgroup

pytestmark = [pytest.mark.kernel, pytest.mark.prometheus, pytest.mark.timeout(240)]
TOKEN = "e2e-alerts-token"
MiB = 2**20


class Stack:
    """The headroom processes this test starts, each stopped by its PID at the end."""

    def __init__(self, tmp: Path, cgroup_path: str):
        self.tmp = tmp
        self.ports = {name: free_port() for name in ("exporter", "fixture", "guard", "worker")}
        self.procs: dict[str, subprocess.Popen] = {}
        self.config = write_toml(tmp / "headroom.toml", {
            "log_level": "info", "state_dir": str(tmp / "state"),
            "exporter": {"listen": self.addr("exporter"), "cgroups": [cgroup_path]},
            "guard": {"listen": self.addr("guard"), "token": TOKEN, "exporter_url": f"http://{self.addr('exporter')}/metrics",
                      "worker_url": f"http://{self.addr('worker')}"},
            "worker": {"listen": self.addr("worker"), "engine": "echo", "token": TOKEN},
        })
        self.fixture_config = write_toml(tmp / "fixture.toml", {
            "log_level": "info", "state_dir": str(tmp / "fixture-state"),
            "exporter": {"listen": self.addr("fixture"), **golden_exporter_config("2")},
        })

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def start(self, name: str, argv: list[str], env: dict | None = None) -> None:
        log = open(self.tmp / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def start_all(self) -> None:
        self.start("exporter", headroom_cmd("exporter", "--config", str(self.config)))
        self.start("fixture", headroom_cmd("exporter", "--config", str(self.fixture_config)),
                   env={"HEADROOM_FAKE_NVML": str(fixture_nvml(self.tmp))})
        self.start("worker", headroom_cmd("worker", "--config", str(self.config)))
        self.start("guard", headroom_cmd("guard", "--config", str(self.config)))
        probes = {"exporter": "/metrics", "fixture": "/metrics", "worker": "/control/state", "guard": "/readyz"}
        for name, path in probes.items():
            wait_for(lambda: self.alive() and httpx.get(f"http://{self.addr(name)}{path}", timeout=2).status_code == 200,
                     30, what=f"{name} to answer {path}")

    def alive(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.logs()}")
        return True

    def stop(self, name: str) -> None:
        stop_process(self.procs[name])

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(self.tmp.glob("*.log")))


def fixture_nvml(tmp: Path) -> Path:
    """The golden test's fake NVML, with power readings on both GPUs.

    The golden file leaves GPU 1's power out (unsupported); the exporter then stops asking any GPU for power after
    its first scrape (it remembers unsupported functions per process, not per GPU), and the Power panel would
    have nothing to check against. Every other field is the golden file's."""
    data = json.loads((GOLDEN / "nvml.json").read_text())
    for gpu in data["gpus"]:
        gpu["power_mw"] = gpu["power_mw"] or 70000
    path = tmp / "nvml.json"
    path.write_text(json.dumps(data))
    return path


def guard_alert_events(guard: httpx.Client, alertname: str, **labels) -> list[dict]:
    events = guard.get("/v1/events", params={"kind": "alert", "limit": 1000}).json()["events"]
    return [e for e in events if e["data"].get("labels", {}).get("alertname") == alertname and e["data"].get("status") == "firing"
            and all(e["data"]["labels"].get(k) == v for k, v in labels.items())]


def cause_oom_kill(cgroup) -> float:
    """A real allocation past the cgroup's limit; returns the wall time at which the victim was seen dead."""
    child = spawn_in_cgroup(cgroup, ALLOCATOR.format(comm="hr-e2e-victim", hold_mb=20, grow_mb=400),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == -9, "the allocation past the limit should be OOM-killed"
        return time.time()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def exercise_guard_and_worker(stack: Stack) -> None:
    """Give the guard and worker panels something real: a batch through the worker, a lease, a free and a wake."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    worker = httpx.Client(base_url=f"http://{stack.addr('worker')}", headers=auth, timeout=10)
    guard = httpx.Client(base_url=f"http://{stack.addr('guard')}", headers=auth, timeout=10)
    lines = [json.dumps({"custom_id": f"r{n}", "method": "POST", "url": "/v1/completions",
                         "body": {"model": "echo", "prompt": f"hello {n}", "max_tokens": 4}}) for n in range(5)]
    assert worker.post("/v1/batches", params={"priority": "test"}, content="\n".join(lines)).status_code == 201
    lease = guard.post("/v1/leases", json={"holder": "e2e-alerts", "ram_bytes": MiB, "ttl_seconds": 120})
    assert lease.status_code in (200, 201), lease.text
    freed = worker.put("/control/state", json={"state": "freed", "level": 2, "reason": "e2e", "requested_by": "e2e"})
    assert freed.status_code in (200, 202), freed.text
    # The guard wants the worker running and puts it back (an action it counts); then the engine wakes.
    wait_for(lambda: worker.get("/control/state").json()["state"] == "running", 20, what="the guard to restore the worker")


def check_panels(prometheus, instances: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Every dashboard query against the real Prometheus: (lines of what answered, panels without data)."""
    answered, empty = [], []
    for board, title, expr in dashboard_targets():
        tried = []
        for instance in instances[board]:
            result = query(prometheus, substitute(expr, instance))
            tried.append(f"{instance}: {len(result)}")
            if result:
                answered.append(f"{board:22} {title[:60]:60} {len(result):3} series from {instance}")
                break
        else:
            empty.append(f"{board} / {title}: {expr} ({', '.join(tried)})")
    return answered, empty


def test_oom_kill_reaches_the_guard_every_panel_has_data_and_exporter_down_fires(tmp_path):
    prometheus_bin, alertmanager_bin = need_binary("prometheus"), need_binary("prometheus-alertmanager")
    need_root_memory_cgroup()
    with contextlib.ExitStack() as cleanup:
        cgroup = cleanup.enter_context(memory_cgroup(200 * MiB, prefix="headroom-e2e"))
        stack = Stack(tmp_path, cgroup.path)
        cleanup.callback(stack.stop_all)
        stack.start_all()
        token_file = tmp_path / "guard-token"
        token_file.write_text(TOKEN + "\n")
        alertmanager = start_alertmanager(alertmanager_bin, tmp_path, alertmanager_config(f"http://{stack.addr('guard')}/v1/alerts", token_file))
        cleanup.callback(alertmanager.stop)
        targets = {"headroom-exporter": [stack.addr("exporter"), stack.addr("fixture")], "headroom-guard": [stack.addr("guard")],
                   "headroom-worker": [stack.addr("worker")], "prometheus": [], "alertmanager": [f"127.0.0.1:{alertmanager.port}"]}
        prometheus = start_prometheus(prometheus_bin, tmp_path, prometheus_config(targets, f"127.0.0.1:{alertmanager.port}"))
        cleanup.callback(prometheus.stop)
        wait_for(lambda: len(query(prometheus, "up == 1")) == 5, 30, interval=0.2, what="all five targets up")
        guard = httpx.Client(base_url=f"http://{stack.addr('guard')}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        victim = {"alertname": "HeadroomOOMKill", "cgroup": cgroup.path, "comm": "hr-e2e-victim"}
        assert not guard_alert_events(guard, **victim)

        # 1. A real OOM kill reaches the guard's webhook, through the shipped rule and routes.
        killed_at = cause_oom_kill(cgroup)
        events = wait_for(lambda: guard_alert_events(guard, **victim), 30, interval=0.02, what="the OOM alert among the guard's events")
        seconds = events[0]["at"] - killed_at
        print(f"\nkill -> guard webhook: {seconds:.2f} s (scrape and evaluation every 1 s, group_wait 0s)")
        alert = events[0]["data"]
        assert alert["labels"]["severity"] == "critical" and alert["labels"]["instance"] == stack.addr("exporter")
        assert alert["annotations"]["runbook_url"] == "docs/runbook.md#headroomoomkill"
        assert "hr-e2e-victim" in alert["annotations"]["summary"] and cgroup.path in alert["annotations"]["description"]
        assert seconds < 10

        # 2. Every dashboard query returns data: host panels from this host's exporter (or the fixture exporter for
        # what this host lacks: GPUs, cgroup v2 files), guard and worker panels from the real guard and worker.
        exercise_guard_and_worker(stack)
        time.sleep(3)  # a few scrapes after the worker came back, for rate() and increase()
        exporters = [stack.addr("exporter"), stack.addr("fixture")]
        instances = {"headroom-host.json": exporters, "headroom-gpus.json": [stack.addr("fixture"), stack.addr("exporter")],
                     "headroom-guard.json": [stack.addr("guard")], "headroom-worker.json": [stack.addr("worker")]}
        answered, empty = check_panels(prometheus, instances)
        print("\n".join(["dashboard queries:"] + answered))
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
        names = set(httpx.get(prometheus.url + "/api/v1/label/__name__/values", timeout=5).json()["data"])
        in_rules = set(re.findall(r"\bheadroom_\w+", RULES.read_text()))
        assert in_rules - names == set(), "metrics the alert rules use that no real process exposes"

        # 3. The exporter stops: HeadroomExporterDown fires after its for: 1m, and reaches the guard.
        stack.stop("exporter")
        stopped_at = time.time()
        down = {"alertname": "HeadroomExporterDown", "instance": stack.addr("exporter")}
        wait_for(lambda: guard_alert_events(guard, **down), 90, interval=0.2, what="HeadroomExporterDown at the guard")
        assert firing(prometheus, **down)
        assert not firing(prometheus, "HeadroomExporterDown", instance=stack.addr("fixture"))
        print(f"exporter stopped -> HeadroomExporterDown at the guard: {time.time() - stopped_at:.1f} s (for: 1m)")
