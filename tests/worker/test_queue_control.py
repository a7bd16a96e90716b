"""Queue and control logic on the echo engine (dev/test engine, in-process app): ordering, cancel, 200/202/409, store."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from tests.helpers import wait_for
from tests.worker.conftest import echo_clients
from worker.engines import EchoEngine
from worker.store import DB_FILE, Store

TOKEN = "queue-control-token"
H = {"Authorization": f"Bearer {TOKEN}"}


def lines(prefix: str, n: int) -> str:
    return "".join(json.dumps({"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/completions",
                               "body": {"prompt": f"{prefix} {i} words here", "max_tokens": 2}}) + "\n" for i in range(n))


@pytest.fixture
def make_client(tmp_path):
    yield from echo_clients(tmp_path, TOKEN, 0.5)


def wait_done(client, batch_id):
    return wait_for(lambda: (b := client.get(f"/v1/batches/{batch_id}").json())["status"] == "completed" and b, 10)


def test_production_runs_before_test_before_bulk(make_client):
    client = make_client(concurrency=2)
    assert client.put("/control/state", json={"state": "paused"}, headers=H).status_code == 200
    ids = {p: client.post(f"/v1/batches?priority={p}", content=lines(p[0], 3), headers=H).json()["id"]
           for p in ("bulk", "test", "production")}
    assert client.get("/control/state").json()["queue"] == {"production": 3, "test": 3, "bulk": 3}
    client.put("/control/state", json={"state": "running"}, headers=H)
    for batch_id in ids.values():
        wait_done(client, batch_id)
    firsts = {p: min(r["step"] for r in client.get(f"/v1/batches/{i}/requests", headers=H).json()["data"]) for p, i in ids.items()}
    lasts = {p: max(r["step"] for r in client.get(f"/v1/batches/{i}/requests", headers=H).json()["data"]) for p, i in ids.items()}
    assert lasts["production"] <= firsts["test"] and lasts["test"] <= firsts["bulk"]


def test_cancel_keeps_finished_results_and_marks_the_rest(make_client):
    client = make_client()
    client.put("/control/state", json={"state": "paused"}, headers=H)
    batch_id = client.post("/v1/batches", content=lines("c", 3), headers=H).json()["id"]
    batch = client.post(f"/v1/batches/{batch_id}/cancel", headers=H).json()
    assert batch["status"] == "cancelled" and batch["request_counts"]["cancelled"] == 3
    output = [json.loads(x) for x in client.get(f"/v1/batches/{batch_id}/output", headers=H).text.splitlines()]
    assert [o["error"]["code"] for o in output] == ["batch_cancelled"] * 3
    assert "headroom_worker_requests_total{outcome=\"cancelled\"} 3.0" in client.get("/metrics").text
    assert client.get("/v1/batches/batch_nope").status_code == 404


def test_pause_answers_once_begun_and_wait_mode_lets_in_flight_finish(make_client):
    client = make_client(engine=EchoEngine(request_seconds=1.5), control_wait_seconds=0.5, pause_mode="wait")
    batch_id = client.post("/v1/batches", content=lines("s", 3), headers=H).json()["id"]
    wait_for(lambda: client.get("/control/state").json()["in_flight"] == 3, 5)
    answer = client.put("/control/state", json={"state": "paused", "requested_by": "guard"}, headers=H)
    # Begun (nothing new starts) but not reached: the three in flight finish first.
    assert answer.status_code == 202 and answer.json()["desired"]["state"] == "paused"
    assert answer.json()["in_flight"] == 3
    wait_for(lambda: client.get("/control/state").json()["state"] == "paused", 5)
    assert client.get(f"/v1/batches/{batch_id}").json()["request_counts"]["completed"] == 3
    again = client.put("/control/state", json={"state": "paused", "requested_by": "guard"}, headers=H)
    assert again.status_code == 200 and again.json()["desired"]["requested_by"] == "guard"


def test_pause_abort_mode_requeues_in_flight_and_throttle_aborts_down(make_client):
    client = make_client(engine=EchoEngine(request_seconds=30), concurrency=4)
    batch_id = client.post("/v1/batches", content=lines("a", 6), headers=H).json()["id"]
    wait_for(lambda: client.get("/control/state").json()["in_flight"] == 4, 5)
    answer = client.put("/control/state", json={"state": "throttled", "concurrency": 1}, headers=H)
    assert answer.status_code == 200 and answer.json()["in_flight"] == 1 and answer.json()["in_flight_peak"] == 1
    counts = client.get(f"/v1/batches/{batch_id}").json()["request_counts"]
    assert (counts["running"], counts["queued"]) == (1, 5)
    answer = client.put("/control/state", json={"state": "paused"}, headers=H)
    assert answer.status_code == 200 and answer.json()["state"] == "paused" and answer.json()["in_flight"] == 0
    assert client.get(f"/v1/batches/{batch_id}").json()["request_counts"]["queued"] == 6
    assert "headroom_worker_requeued_total 4.0" in client.get("/metrics").text


def test_pause_keep_mode_holds_requests_in_the_engine(make_client):
    client = make_client(engine=EchoEngine(request_seconds=0.6), pause_mode="keep")
    batch_id = client.post("/v1/batches", content=lines("k", 2), headers=H).json()["id"]
    wait_for(lambda: client.get("/control/state").json()["in_flight"] == 2, 5)
    answer = client.put("/control/state", json={"state": "paused"}, headers=H)
    assert answer.status_code == 200 and answer.json()["in_flight"] == 2
    time.sleep(1.0)
    assert client.get(f"/v1/batches/{batch_id}").json()["request_counts"]["running"] == 2, "kept requests finished while paused"
    client.put("/control/state", json={"state": "running"}, headers=H)
    batch = wait_done(client, batch_id)
    rows = client.get(f"/v1/batches/{batch_id}/requests", headers=H).json()["data"]
    assert batch["request_counts"]["completed"] == 2 and all(r["attempts"] == 1 for r in rows)


def test_level_1_allowed_where_the_engine_can_sleep(make_client):
    client = make_client(engine=EchoEngine(levels={1: "sleep", 2: "sleep"}))
    answer = client.put("/control/state", json={"state": "freed", "level": 1}, headers=H)
    assert answer.status_code in (200, 202)  # 202: the free has begun (the controller was freeing when it answered)
    state = wait_for(lambda: (s := client.get("/control/state").json())["state"] == "freed" and s, 5)
    assert state["free_level"] == 1 and state["engine"]["free_method"] == "sleep"
    answer = client.put("/control/state", json={"state": "throttled", "concurrency": 3}, headers=H)
    assert answer.status_code == 200 and answer.json()["concurrency"] == 3
    assert "headroom_worker_concurrency_limit 3.0" in client.get("/metrics").text


def test_failed_request_is_reported_and_others_complete(make_client):
    client = make_client()
    text = lines("f", 2) + json.dumps({"custom_id": "bad", "url": "/v1/completions", "body": {"prompt": "FAIL"}}) + "\n"
    batch_id = client.post("/v1/batches", content=text, headers=H).json()["id"]
    batch = wait_for(lambda: (b := client.get(f"/v1/batches/{batch_id}").json())["status"] == "completed" and b, 10)
    assert batch["request_counts"]["completed"] == 2 and batch["request_counts"]["failed"] == 1
    output = {o["custom_id"]: o for o in map(json.loads, client.get(f"/v1/batches/{batch_id}/output", headers=H).text.splitlines())}
    assert output["bad"]["error"]["code"] == "invalid_request" and output["f0"]["error"] is None


def test_maintenance_survives_restart_and_store_is_private(tmp_path, make_client):
    client = make_client()
    client.put("/control/maintenance", json={"on": True, "reason": "disk swap"}, headers=H)
    answer = client.post("/v1/batches", content=lines("m", 1), headers=H)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "300"
    db = tmp_path / "state" / DB_FILE
    for path in (db, db.with_name(DB_FILE + "-wal")):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    store = Store(db)
    assert store.load_maintenance().reason == "disk swap"
    store.close()


def test_requeue_running_after_a_crash(tmp_path):
    from worker.batchfile import parse_batch

    store = Store(tmp_path / "q.sqlite3")
    batch_id = store.add_batch("test", parse_batch(lines("r", 3).encode(), 10))
    step, claimed = store.claim(2)
    assert step == 1 and [r.custom_id for r in claimed] == ["r0", "r1"]
    store.finish([(claimed[0].key, "completed", {"custom_id": "r0"})])
    store.close()
    store = Store(tmp_path / "q.sqlite3")  # a new process after SIGKILL
    assert store.requeue_running() == 1
    counts = store.batch(batch_id)["request_counts"]
    assert (counts["completed"], counts["queued"], counts["running"]) == (1, 2, 0)
    assert [r.custom_id for r in store.claim(5)[1]] == ["r1", "r2"]
    store.close()


def test_the_state_reports_the_workers_own_processes_so_a_guard_never_freezes_them(make_client):
    """The guard's freezer knows the worker by this report: under the guard's unit it cannot map sockets to pids."""
    import subprocess
    import sys

    client = make_client()
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # an engine process it started
    try:
        time.sleep(1.1)  # past the report's one-second cache
        state = client.get("/control/state").json()
        assert state["pids"][0] == os.getpid() and engine.pid in state["pids"]
        assert "own_cgroup" in state
    finally:
        engine.kill()
        engine.wait()
