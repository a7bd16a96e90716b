"""The engine loop on a real vLLM engine with long requests: pause, free and throttle act within an iteration."""

from __future__ import annotations

import json
import time

import pytest

from tests.worker.conftest import completion_lines, jsonl, need_vllm, start_worker, vllm_worker_settings, wait_until

pytestmark = pytest.mark.vllm
N = 32  # requests in flight at once
LONG = 400  # generated tokens per request (ignore_eos): seconds per request at this concurrency


@pytest.fixture(scope="module")
def worker(tiny_model, tmp_path_factory):
    need_vllm()
    handle = start_worker(tmp_path_factory.mktemp("loop-worker"), concurrency=N, control_wait_seconds=5.0,
                          **vllm_worker_settings(tiny_model, max_model_len=512))
    yield handle
    handle.stop()


def long_lines(prefix: str, n: int = N, max_tokens: int = LONG) -> list[dict]:
    return completion_lines(n, max_tokens=max_tokens, prefix=prefix, ignore_eos=True)


def submit(worker, lines) -> str:
    answer = worker.submit(jsonl(lines), "test")
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def mid_batch(worker, batch_id: str, n: int) -> None:
    """Wait until `n` requests are in vLLM's engine and have generated for a while, none finished."""
    wait_until(lambda: worker.state()["in_flight"] == n, 60, f"{n} requests in flight")
    time.sleep(0.3)
    assert worker.batch(batch_id)["request_counts"]["completed"] == 0, "requests too short for a mid-batch test"


def iteration_seconds(worker) -> float:
    return worker.metric("headroom_worker_iteration_seconds_total") / worker.metric("headroom_worker_steps_total")


def outputs(worker, batch_id: str) -> dict[str, str]:
    lines = [json.loads(x) for x in worker.http.get(f"/v1/batches/{batch_id}/output").text.splitlines()]
    ids = [line["custom_id"] for line in lines]
    assert len(ids) == len(set(ids)), "a request was written twice"
    return {line["custom_id"]: line["response"]["body"]["choices"][0]["text"] for line in lines}


def test_pause_leaves_no_request_running_within_an_iteration(worker):
    batch_id = submit(worker, long_lines("pause"))
    mid_batch(worker, batch_id, N)
    started = time.perf_counter()
    answer = worker.put_state(state="paused", reason="test", requested_by="pytest")
    seconds = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "paused" and answer.json()["in_flight"] == 0  # counted by vLLM's engine
    counts = worker.batch(batch_id)["request_counts"]
    assert (counts["running"], counts["queued"], counts["completed"]) == (0, N, 0)
    request_seconds = LONG * iteration_seconds(worker)
    inside = answer.json()["last_control_to_idle_seconds"]  # the worker's own clock: PUT accepted -> engine empty
    print(f"\npause: PUT to no request running {seconds * 1000:.0f} ms ({inside * 1000:.1f} ms inside); engine iteration "
          f"{iteration_seconds(worker) * 1000:.1f} ms; a request of {LONG} tokens ~{request_seconds:.1f} s")
    assert seconds < 2.0 and seconds < request_seconds / 2 and inside <= seconds
    worker.http.post(f"/v1/batches/{batch_id}/cancel")
    assert worker.put_state(state="running").status_code == 200


def test_free_mid_batch_drops_rss_and_wake_gives_the_uninterrupted_outputs_once(worker):
    reference_id = submit(worker, long_lines("same"))
    worker.wait_batch(reference_id, timeout=180)
    reference = outputs(worker, reference_id)
    batch_id = submit(worker, long_lines("same"))
    mid_batch(worker, batch_id, N)
    rss_loaded = worker.rss_bytes()
    started = time.perf_counter()
    answer = worker.put_state(state="freed", level=2, reason="test needs RAM", requested_by="pytest")
    assert answer.status_code in (200, 202), answer.text
    assert answer.json()["in_flight"] == 0 and answer.json()["state"] in ("freeing", "freed")
    begun = time.perf_counter() - started
    worker.wait_state("freed")
    freed = time.perf_counter() - started
    time.sleep(0.5)
    rss_freed = worker.rss_bytes()
    print(f"\nfree: PUT answered (requests aborted, freeing begun) {begun * 1000:.0f} ms, freed {freed:.2f} s; "
          f"RSS {rss_loaded / 2**20:.0f} -> {rss_freed / 2**20:.0f} MiB")
    assert rss_loaded - rss_freed > 300 * 2**20, f"RSS {rss_loaded / 2**20:.0f} MiB -> {rss_freed / 2**20:.0f} MiB"
    counts = worker.batch(batch_id)["request_counts"]
    assert (counts["running"], counts["queued"], counts["completed"]) == (0, N, 0)
    assert worker.put_state(state="running").status_code in (200, 202)
    worker.wait_batch(batch_id, timeout=180)
    assert outputs(worker, batch_id) == reference  # every request once, same text as the uninterrupted run
    rows = worker.http.get(f"/v1/batches/{batch_id}/requests").json()["data"]
    assert {r["attempts"] for r in rows} == {2}, "each request was aborted once and run again"


def test_throttle_to_one_mid_batch_keeps_one_request_in_the_engine(worker):
    batch_id = submit(worker, long_lines("one", n=6))
    mid_batch(worker, batch_id, 6)
    answer = worker.put_state(state="throttled", concurrency=1, requested_by="pytest")
    assert answer.status_code == 200 and answer.json()["in_flight"] == 1, answer.text
    seen = []
    for _ in range(20):  # 1 s of samples while one request runs
        state = worker.state()
        seen.append(state["in_flight"])
        time.sleep(0.05)
    assert max(seen) == 1 and state["in_flight_peak"] == 1, (seen, state["in_flight_peak"])
    assert worker.put_state(state="running").status_code == 200
    worker.wait_batch(batch_id, timeout=120)
    assert sorted(outputs(worker, batch_id)) == sorted(f"one-{i}" for i in range(6))
