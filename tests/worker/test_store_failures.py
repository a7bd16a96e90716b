"""The worker's job store on a real full disk (a small tmpfs) and on corrupt databases: nothing lost, nothing silent."""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest

from tests.diskfull import CORRUPTIONS, checkpoint, small_disk
from tests.helpers import REPO, free_port, headroom_cmd, wait_for
from tests.worker.conftest import TOKEN, completion_lines, jsonl, start_worker
from worker.batchfile import parse_batch
from worker.controller import Controller
from worker.engines import EchoEngine
from worker.store import DB_FILE, Store

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def disk(tmp_path):
    with small_disk(tmp_path / "state", "2m") as disk:
        yield disk


def test_a_result_commit_that_fails_requeues_its_requests(disk):
    store = Store(disk.path / DB_FILE)
    lines = completion_lines(2, prefix="full")
    batch_id = store.add_batch("bulk", parse_batch(jsonl(lines).encode(), 100))
    controller = Controller(store, EchoEngine(request_seconds=1.5), concurrency=16)
    controller.start()
    try:
        wait_for(lambda: all(r["status"] == "running" for r in store.requests(batch_id)), 10, what="the step running")
        disk.fill()  # the step finishes while nothing can be written
        wait_for(lambda: not store.health.writable and controller.in_flight == 0, 10, what="the commit failing")
        assert store.health.errors["result"] == 1 and controller.counters.requests["completed"] == 0
        assert store.batch(batch_id)["status"] != "completed"

        disk.free()
        wait_for(lambda: store.batch(batch_id)["status"] == "completed", 15, what="the requeued requests done")
        requests = store.requests(batch_id)
        assert [r["attempts"] for r in requests] == [2, 2]  # run again, since the first results never reached the disk
        outputs = [json.loads(row["result"]) for row in store.finished_requests(batch_id)]
        assert sorted(o["custom_id"] for o in outputs) == ["full-0", "full-1"]  # each exactly once
        assert controller.counters.requests["completed"] == 2 and store.health.writable
    finally:
        controller.stop()
        store.close()


def test_uploads_on_a_full_disk_get_507_and_readyz_says_why(tmp_path, disk):
    worker = start_worker(tmp_path / "w", state_dir=disk.path, engine="echo")
    try:
        disk.fill()
        refused = worker.submit(jsonl(completion_lines(3)))
        assert refused.status_code == 507 and "disk is full" in refused.json()["detail"], refused.text
        ready = httpx.get(worker.url + "/readyz")
        assert ready.status_code == 503 and "disk is full" in ready.json()["error"], ready.text
        assert worker.metric("headroom_worker_store_errors_total", 'operation="batch"') == 1
        assert worker.metric("headroom_worker_store_writable") == 0
        assert worker.http.get("/v1/batches").json()["data"] == []  # reads still work; nothing half-stored

        disk.free()
        wait_for(lambda: httpx.get(worker.url + "/readyz").status_code == 200, 15, what="ready once there is room")
        accepted = worker.submit(jsonl(completion_lines(3)))
        assert accepted.status_code == 201, accepted.text
        worker.wait_batch(accepted.json()["id"], 30)
    finally:
        worker.stop()


def seeded_database(state_dir) -> str:
    store = Store(state_dir / DB_FILE)
    batch_id = store.add_batch("bulk", parse_batch(jsonl(completion_lines(300, prefix="seed")).encode(), 1000))
    store.close()
    checkpoint(state_dir / DB_FILE)
    return batch_id


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_a_corrupt_job_database_is_moved_aside_and_said(tmp_path, damage):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    seeded_database(state)
    CORRUPTIONS[damage](state / DB_FILE)
    broken = (state / DB_FILE).read_bytes()
    worker = start_worker(tmp_path / "w", state_dir=state, engine="echo")
    try:
        moved = [p for p in state.glob(DB_FILE + ".corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
        assert len(moved) == 1 and moved[0].read_bytes() == broken
        ready = httpx.get(worker.url + "/readyz").json()
        assert ready["ready"] and ready["store"]["recovered"]["moved_to"] == str(moved[0]), ready
        assert worker.metric("headroom_worker_store_corrupt_files") == 1
        assert worker.http.get("/v1/batches").json()["data"] == []  # a fresh queue that works, not a 500
        assert "corrupt" in worker.log.read_text()
    finally:
        worker.stop()


def test_refuse_exits_before_serving(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    seeded_database(state)
    CORRUPTIONS["random_pages"](state / DB_FILE)
    port = free_port()
    config = tmp_path / "worker.toml"
    config.write_text(f'state_dir = "{state}"\n[worker]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
                      'engine = "echo"\nstore_on_corrupt = "refuse"\n')
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}, "PYTHONPATH": str(REPO)}
    result = subprocess.run(headroom_cmd("worker", "--config", str(config)), capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 5, result.stderr
    assert str(state / DB_FILE) in result.stderr and "worker.store_on_corrupt" in result.stderr
    assert "Traceback" not in result.stderr and not list(state.glob("*.corrupt-*"))


def test_readyz_stays_503_while_the_disk_stays_full(tmp_path, disk):
    """A tiny write can still fit in the database's own free pages on a full disk; /readyz must not flicker to 200."""
    import time

    worker = start_worker(tmp_path / "w", state_dir=disk.path, engine="echo")
    try:
        assert worker.submit(jsonl(completion_lines(400, max_tokens=64))).status_code == 201  # work goes on meanwhile
        disk.fill()
        assert worker.submit(jsonl(completion_lines(3))).status_code == 507
        codes = []
        for _ in range(40):  # over three of the worker's store probes
            codes.append(httpx.get(worker.url + "/readyz").status_code)
            time.sleep(0.17)
        assert codes == [503] * 40, codes
        disk.free()
        wait_for(lambda: httpx.get(worker.url + "/readyz").status_code == 200, 15, what="ready once there is room")
    finally:
        worker.stop()
