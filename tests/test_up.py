"""`headroom up`: starts every part with embedded defaults (addresses from the config) and Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import time
import subprocess

import httpx
import psutil

from tests.helpers import REPO, free_port, headroom_cmd, wait_for, write_toml


def test_up_serves_metrics_and_stops_cleanly_on_ctrl_c(tmp_path):
    ports = {part: free_port() for part in ("exporter", "guard", "worker")}
    conf = write_toml(tmp_path / "up.toml", {"state_dir": str(tmp_path / "state"), **{part: {"listen": f"127.0.0.1:{port}"} for part, port in ports.items()}})
    proc = subprocess.Popen(headroom_cmd("up", "--config", str(conf)), cwd=REPO, env={**os.environ, "HEADROOM_EXPORTER__COLLECTORS": '["memory"]'}, stderr=subprocess.PIPE, text=True)
    try:
        metrics = wait_for(lambda: httpx.get(f"http://127.0.0.1:{ports['exporter']}/metrics", timeout=2).text, timeout=30, what="the exporter under `headroom up`")
        assert "headroom_memory_available_bytes " in metrics
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "up runs each part as a child process"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], "every part stopped"


def test_guard_log_is_quiet_at_info(tmp_path):
    """Four ticks a second must not write four log lines a second (journald would fill up)."""
    port = free_port()
    log = tmp_path / "guard.log"
    env = {**os.environ, "HEADROOM_STATE_DIR": str(tmp_path / "state"), "HEADROOM_LOG_LEVEL": "info"}
    proc = subprocess.Popen(headroom_cmd("guard", "--listen", f"127.0.0.1:{port}"), cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200, 20, what="the guard")
        time.sleep(2.0)  # eight ticks
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    lines = log.read_text().splitlines()
    assert len(lines) < 12, "\n".join(lines[:20])


def _up(tmp_path, worker: dict, env_extra: dict | None = None):
    """`headroom up` with exporter, guard and worker on free ports; the user's state dir (the pointer) in tmp_path."""
    ports = {part: free_port() for part in ("exporter", "guard", "worker")}
    conf = write_toml(tmp_path / "up.toml", {"state_dir": str(tmp_path / "state"),
                                             "exporter": {"listen": f"127.0.0.1:{ports['exporter']}", "collectors": ["memory"]},
                                             "guard": {"listen": f"127.0.0.1:{ports['guard']}"},
                                             "worker": {"listen": f"127.0.0.1:{ports['worker']}", "enabled": True, **worker}})
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg"), **(env_extra or {})}
    proc = subprocess.Popen(headroom_cmd("up", "--config", str(conf)), cwd=tmp_path, env=env, stderr=subprocess.PIPE,
                            text=True)
    return proc, ports, env


def _status(env: dict, cwd) -> subprocess.CompletedProcess:
    """Plain `headroom status`, no flags: it must find the stack `up` runs."""
    return subprocess.run(headroom_cmd("status"), cwd=cwd, env=env, capture_output=True, text=True, timeout=30)


def test_up_wires_its_worker_to_the_guard_and_status_finds_the_stack_without_flags(tmp_path):
    proc, ports, env = _up(tmp_path, {"engine": "echo"})
    try:
        guard = f"http://127.0.0.1:{ports['guard']}"
        wait_for(lambda: httpx.get(guard + "/v1/headroom", timeout=2).json()["worker"]["observed"] == "running", 40,
                 what="the guard driving the worker `up` started")
        status = _status(env, tmp_path)
        assert status.returncode == 0 and "worker: running (wanted running)" in status.stdout, status.stdout + status.stderr
        assert "GPUs: none" in status.stdout and "PSI:" in status.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert f"status page: {guard}/" in err
    assert not (tmp_path / "xdg" / "headroom" / "up.json").exists(), "the pointer goes with the stack"


def test_a_worker_that_cannot_start_leaves_protection_up_with_one_line_saying_the_fix(tmp_path):
    proc, ports, env = _up(tmp_path, {"engine": "vllm", "model": str(tmp_path / "no-such-model")})
    try:
        guard = f"http://127.0.0.1:{ports['guard']}"
        wait_for(lambda: "failed" in (tmp_path / "xdg" / "headroom" / "up.json").read_text(), 40,
                 what="up to see the worker fail")
        assert httpx.get(guard + "/healthz", timeout=5).status_code == 200, "the guard keeps running"
        assert httpx.get(f"http://127.0.0.1:{ports['exporter']}/metrics", timeout=5).status_code == 200
        status = _status(env, tmp_path)
        assert "worker: FAILED to start under `headroom up`: worker.model" in status.stdout, status.stdout + status.stderr
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and "no such directory" in err and "Exporter and guard keep running" in err, err
    assert proc.returncode == 0


def test_a_missing_vllm_is_one_line_naming_the_extra(monkeypatch):
    import importlib.util

    import pytest

    from headroom.errors import HeadroomError
    from worker.server import check_engine
    from worker.settings import WorkerSettings

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(HeadroomError) as err:
        check_engine(WorkerSettings(engine="vllm", model="google/gemma-3-4b-it"))
    assert "pip install 'headroom[vllm]'" in str(err.value) and err.value.exit_code == 2


def test_the_guard_warns_about_an_enabled_worker_it_does_not_drive():
    from guard.app import undriven_worker_warning
    from headroom.config import load_settings

    settings = load_settings(environ={"HEADROOM_WORKER__ENABLED": "true", "HEADROOM_WORKER__MODEL": "m"})
    assert "[guard.worker] url = \"http://127.0.0.1:9842\"" in undriven_worker_warning(settings, driven=False)
    assert undriven_worker_warning(settings, driven=True) is None
