"""SIGKILL the worker mid-batch and restart it: every request completes exactly once (real vLLM engine)."""

from __future__ import annotations

import json
import signal
import sqlite3

import httpx

import pytest

from tests.worker.conftest import completion_lines, jsonl, need_vllm, start_worker, vllm_worker_settings, wait_until

pytestmark = pytest.mark.vllm
N = 40


def finished_in_db(state_dir) -> dict[str, str]:
    """custom_id -> stored output line, read straight from the SQLite file after the kill."""
    db = sqlite3.connect(state_dir / "worker.sqlite3")
    try:
        return dict(db.execute("SELECT custom_id, result FROM requests WHERE status='completed'").fetchall())
    finally:
        db.close()


def test_sigkill_mid_batch_then_restart_completes_each_request_once(tiny_model, tmp_path):
    need_vllm()
    settings = vllm_worker_settings(tiny_model, concurrency=2)
    first = start_worker(tmp_path / "a", state_dir=tmp_path / "state", **settings)
    try:
        batch_id = first.submit(jsonl(completion_lines(N, max_tokens=64, ignore_eos=True)), "production").json()["id"]
        wait_until(lambda: first.batch(batch_id)["request_counts"]["completed"] >= 6, 60, "6 requests done")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.stop()
    done_before = finished_in_db(tmp_path / "state")
    assert 6 <= len(done_before) < N, "the kill did not land mid-batch"

    second = start_worker(tmp_path / "b", state_dir=tmp_path / "state", **settings)
    try:
        batch = second.wait_batch(batch_id, timeout=120)
        assert batch["request_counts"]["completed"] == N and batch["request_counts"]["failed"] == 0
        lines = [json.loads(x) for x in second.http.get(f"/v1/batches/{batch_id}/output").text.splitlines()]
        ids = [line["custom_id"] for line in lines]
        assert sorted(ids) == sorted(f"req-{i}" for i in range(N)), "a request is missing or repeated"
        # Requests finished before the kill were not run again: their stored lines are unchanged ...
        stored = {line["custom_id"]: line for line in lines}
        for cid, raw in done_before.items():
            assert stored[cid] == json.loads(raw)
        # ... and the new process ran exactly the rest.
        ran_now = second.metric("headroom_worker_requests_total", 'outcome="completed"')
        assert ran_now == N - len(done_before)
    finally:
        second.stop()


def test_sigkill_between_abort_and_requeue_then_restart_completes_each_request_once(tiny_model, tmp_path):
    """A free aborts in-flight requests in vLLM, then requeues them in SQLite: the process dies in between."""
    need_vllm()
    settings = vllm_worker_settings(tiny_model, concurrency=4)
    first = start_worker(tmp_path / "a", state_dir=tmp_path / "state", env={"HEADROOM_WORKER_TEST_KILL_AT": "after_abort"},
                         **settings)
    try:
        batch_id = first.submit(jsonl(completion_lines(N, max_tokens=64, ignore_eos=True)), "production").json()["id"]
        wait_until(lambda: first.batch(batch_id)["request_counts"]["completed"] >= 6, 60, "6 requests done")
        wait_until(lambda: first.state()["in_flight"] == 4, 30, "4 requests in flight")
        try:
            first.put_state(state="freed", level=2, reason="test", requested_by="pytest")
        except httpx.HTTPError:
            pass  # the worker died while answering
        assert first.proc.wait(30) == -signal.SIGKILL
    finally:
        first.stop()
    db = sqlite3.connect(tmp_path / "state" / "worker.sqlite3")
    running = db.execute("SELECT COUNT(*) FROM requests WHERE status='running'").fetchone()[0]
    db.close()
    assert running == 4, "the kill did not land between vLLM's abort and the requeue"
    done_before = finished_in_db(tmp_path / "state")

    second = start_worker(tmp_path / "b", state_dir=tmp_path / "state", **settings)
    try:
        batch = second.wait_batch(batch_id, timeout=120)
        assert batch["request_counts"]["completed"] == N and batch["request_counts"]["failed"] == 0
        lines = [json.loads(x) for x in second.http.get(f"/v1/batches/{batch_id}/output").text.splitlines()]
        assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(N))
        stored = {line["custom_id"]: line for line in lines}
        assert all(stored[cid] == json.loads(raw) for cid, raw in done_before.items())
        assert second.metric("headroom_worker_requests_total", 'outcome="completed"') == N - len(done_before)
    finally:
        second.stop()
