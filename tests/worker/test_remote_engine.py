"""The remote engine against a real vLLM OpenAI server process (dev mode): a batch, then free (sleep) and wake."""

from __future__ import annotations

import json
import subprocess
import sys
import time

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
            "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512",
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


def server_running(url: str) -> float:
    """vLLM's own count of requests it is generating for (vllm:num_requests_running)."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("vllm:num_requests_running missing from the server's /metrics")


def test_remote_free_cancels_in_flight_http_and_requeues(vllm_server, tmp_path):
    worker = start_worker(tmp_path, engine="remote", remote_url=vllm_server, concurrency=4, control_wait_seconds=5.0)
    try:
        lines = completion_lines(8, max_tokens=400, prefix="long", ignore_eos=True)
        batch_id = worker.submit(jsonl(lines)).json()["id"]
        wait_for(lambda: server_running(vllm_server) == 4, 30, 0.05, "4 requests running on the server")
        time.sleep(0.3)
        assert worker.batch(batch_id)["request_counts"]["completed"] == 0, "requests too short for this test"
        started = time.perf_counter()
        answer = worker.put_state(state="freed", level=1, reason="test", requested_by="pytest")
        assert answer.status_code in (200, 202) and answer.json()["in_flight"] == 0, answer.text
        wait_for(lambda: server_running(vllm_server) == 0, 10, 0.02, "the server dropped the cancelled requests")
        print(f"\nremote free: server idle {time.perf_counter() - started:.2f} s after the PUT")
        worker.wait_state("freed")
        counts = worker.batch(batch_id)["request_counts"]
        assert (counts["running"], counts["queued"], counts["completed"]) == (0, 8, 0)
        assert worker.put_state(state="running").status_code in (200, 202)
        batch = worker.wait_batch(batch_id, timeout=120)
        assert batch["request_counts"]["completed"] == 8
        output = [json.loads(x) for x in worker.http.get(f"/v1/batches/{batch_id}/output").text.splitlines()]
        assert sorted(o["custom_id"] for o in output) == sorted(line["custom_id"] for line in lines)
        assert all(o["response"]["body"]["usage"]["completion_tokens"] == 400 for o in output)
    finally:
        worker.stop()
