"""Fixtures for exporter tests: a real `headroom exporter` process on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO, free_port, headroom_cmd, stop_process, wait_for, write_toml

GOLDEN = REPO / "tests" / "fixtures" / "golden"


@contextlib.contextmanager
def exporter_process(tmp_path: Path, exporter: dict, env: dict | None = None, extra_args: tuple = (), preexec_fn=None):
    """Run the real exporter with `exporter` as its [exporter] section; yields (base_url, process)."""
    port = free_port()
    conf = write_toml(tmp_path / f"exporter-{port}.toml", {"log_level": "debug", "state_dir": str(tmp_path / "state"), "exporter": {"listen": f"127.0.0.1:{port}", **exporter}})
    log = open(tmp_path / f"exporter-{port}.log", "w")
    proc = subprocess.Popen(
        headroom_cmd("exporter", "--config", str(conf), *extra_args),
        cwd=REPO, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or httpx.get(base + "/metrics", timeout=2).status_code == 200, timeout=20, what="exporter to serve /metrics")
        if proc.poll() is not None:
            raise AssertionError(f"exporter exited with {proc.returncode}: {(tmp_path / f'exporter-{port}.log').read_text()}")
        yield base, proc
    finally:
        stop_process(proc)
        log.close()


def golden_exporter_config(version: str) -> dict:
    return {
        "procfs": str(GOLDEN / "proc"),
        "cgroupfs": str(GOLDEN / f"cgroup-v{version}"),
        "kmsg": str(GOLDEN / "kmsg.txt"),
        "cgroups": ["headroom.slice", "vllm-worker.service", "/not-there.slice"],
        "nvml_module": "tests.fakes.fake_pynvml",
    }


@pytest.fixture
def golden_env():
    return {"HEADROOM_FAKE_NVML": str(GOLDEN / "nvml.json")}
