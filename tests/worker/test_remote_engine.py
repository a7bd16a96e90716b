"""The remote engine against a real vLLM OpenAI server process (dev mode): a batch, then free (sleep) and wake."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.helpers import free_port, stop_process, wait_for
from tests.worker.conftest import CHAT_LINES, child_env, completion_lines, jsonl, need_vllm, start_worker

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    need_vllm()
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = child_env() | {"VLLM_SERVER_DEV_MODE": "1"}
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
            "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "128",
            "--enforce-eager", "--kv-cache-memory-bytes", str(64 * 2**20), "--served-model-name", "tiny"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited {proc.returncode}: {log.read_text()[-3000:]}")
        return httpx.get(url + "/health", timeout=2).status_code == 200

    try:
        wait_for(healthy, 180, 0.5, f"vLLM OpenAI server at {url} (log {log})")
        yield url
    finally:
        stop_process(proc, timeout=20)


def test_remote_engine_runs_a_batch_and_frees_through_sleep(vllm_server, tmp_path):
    worker = start_worker(tmp_path, engine="remote", remote_url=vllm_server, concurrency=4)
    try:
        assert worker.state()["engine"]["model"] == "tiny"
        batch_id = worker.submit(jsonl(completion_lines(5) + CHAT_LINES)).json()["id"]
        batch = worker.wait_batch(batch_id)
        assert batch["request_counts"]["completed"] == 8, batch
        lines = [json.loads(x) for x in worker.http.get(f"/v1/batches/{batch_id}/output").text.splitlines()]
        for line in lines:
            assert line["error"] is None and line["response"]["status_code"] == 200
            assert line["response"]["body"]["usage"]["completion_tokens"] >= 1
        assert worker.metric("headroom_worker_generated_tokens_total") >= 8

        answer = worker.put_state(state="freed", level=1, reason="test", requested_by="pytest")
        assert answer.status_code in (200, 202), answer.text
        state = worker.wait_state("freed")
        assert state["engine"]["free_method"] == "remote_sleep"
        assert httpx.get(vllm_server + "/is_sleeping").json()["is_sleeping"] is True
        assert worker.put_state(state="running").status_code in (200, 202)
        worker.wait_state("running")
        assert httpx.get(vllm_server + "/is_sleeping").json()["is_sleeping"] is False
        again = worker.submit(jsonl(completion_lines(2, prefix="again"))).json()["id"]
        assert worker.wait_batch(again)["request_counts"]["completed"] == 2
    finally:
        worker.stop()
