"""The GPU temperature signal end to end: fake NVML -> the real exporter's headroom_gpu_temperature_celsius -> a real
guard's levels, events, /v1/headroom and /metrics; and off by default."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from guard.core.policy import evaluate
from guard.common.settings import GuardSettings
from guard.common.types import GpuObs, GuardState, Level, Snapshot
from headroom.config import load_settings
from headroom.errors import HeadroomError
from tests.exporter.conftest import GOLDEN, exporter_process, golden_exporter_config
from tests.helpers import REPO, free_port, headroom_cmd, stop_process, wait_for, write_toml

TOKEN = "gpu-temperature-test-token-0123456789"
RULE = {"enter": {"warn": 60, "throttle": 85}, "band": 3, "grace_seconds": 0, "hold_seconds": 1}


def hot_nvml(tmp_path, temperatures: tuple[int, int]):
    """The golden two-GPU scenario with the given core temperatures."""
    scenario = json.loads((GOLDEN / "nvml.json").read_text())
    for gpu, celsius in zip(scenario["gpus"], temperatures):
        gpu["temperature"] = celsius
    path = tmp_path / "nvml.json"
    path.write_text(json.dumps(scenario))
    return path


def start_guard(tmp_path, exporter_url: str, rule: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = write_toml(tmp_path / "guard.toml", {"state_dir": str(tmp_path / "state"), "guard": {
        "listen": f"127.0.0.1:{port}", "token": TOKEN, "exporter_url": exporter_url, "gpu_temperature": rule,
        "fast_path": False, "mlock": False, "freeze_enabled": False}})
    log = open(tmp_path / "guard.log", "w")
    proc = subprocess.Popen(headroom_cmd("guard", "--config", str(config)), cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def test_a_hot_gpu_reaches_the_guard_as_levels_events_and_metrics(tmp_path):
    env = {"HEADROOM_FAKE_NVML": str(hot_nvml(tmp_path, (90, 70)))}
    with exporter_process(tmp_path, golden_exporter_config("2"), env=env) as (exporter, _):
        assert 'headroom_gpu_temperature_celsius{gpu="0"' in httpx.get(exporter + "/metrics").text
        proc, base = start_guard(tmp_path, exporter + "/metrics", RULE)
        try:
            client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)

            def levels() -> dict:
                events = client.get("/v1/events", params={"kind": "level", "limit": 1000}).json()["events"]
                return {e["data"]["resource"]: e["data"]["to"] for e in events
                        if e["data"]["resource"].startswith("gpu_temperature")}

            wait_for(lambda: proc.poll() is None and len(levels()) == 2, timeout=30,
                     what="gpu_temperature level events")
            assert levels() == {"gpu_temperature:0": "throttle", "gpu_temperature:1": "warn"}
            headroom = client.get("/v1/headroom").json()
            assert headroom["signals"]["gpu_temperature:0"]["level"] == "throttle"
            assert "90 °C" in headroom["signals"]["gpu_temperature:0"]["why"]
            assert any(r.startswith("gpu_temperature:0 throttle") for r in headroom["reasons"])
            assert headroom["admissions_open"] is False  # admissions close at throttle, on any resource
            metrics = client.get("/metrics").text
            assert 'headroom_guard_level{resource="gpu_temperature:0"} 2.0' in metrics
            assert 'headroom_guard_level{resource="gpu_temperature:1"} 1.0' in metrics
        finally:
            stop_process(proc)


def hot_snapshot(celsius: float) -> Snapshot:
    gpu = GpuObs("0", None, 16 * 2**30, 15 * 2**30, temperature_celsius=celsius)
    return Snapshot(taken_at=100.0, ok=True, ram_total_bytes=64 * 2**30, ram_available_bytes=60 * 2**30,
                    swap_free_bytes=0, psi_full_ratio=0.0, gpus=(gpu,))


def test_off_by_default_and_throttles_when_configured():
    state, decision = evaluate(hot_snapshot(99), GuardState(), [], 100.0, GuardSettings())
    assert state.resources["gpu_temperature:0"].level == Level.OK and decision.level == Level.OK
    on = GuardSettings(gpu_temperature=RULE)
    state, decision = evaluate(hot_snapshot(99), GuardState(), [], 100.0, on)
    assert decision.level == Level.THROTTLE and decision.desired.state == "throttled"
    assert decision.reasons == ("gpu_temperature:0 throttle: 99 °C",)


@pytest.mark.parametrize("rule, message", [
    ({"enter": {"pause": 90}}, "guard.gpu_temperature.enter.pause = 90: GPU temperature may enter levels up to"),
    ({"enter": {"warn": "80C"}}, "guard.gpu_temperature.enter.warn: expected non-negative numbers"),
    ({"enter": {"warn": 90, "throttle": 80}}, "guard.gpu_temperature.enter.throttle = 80: expected a value at or"),
])
def test_a_bad_temperature_rule_names_its_key(rule, message):
    with pytest.raises(HeadroomError) as err:
        load_settings(environ={"HEADROOM_GUARD__GPU_TEMPERATURE": json.dumps(rule)})
    assert message in str(err.value)
