"""Parallel PUT /control/maintenance: what the worker applies and what it saved (what a restart reads) never disagree."""

from __future__ import annotations

import json
import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.worker.conftest import TOKEN, start_worker
from worker.store import DB_FILE

pytestmark = [pytest.mark.timeout(120)]


def saved(state_dir) -> dict:
    with sqlite3.connect(f"file:{state_dir / DB_FILE}?mode=ro", uri=True) as db:
        return json.loads(db.execute("SELECT value FROM kv WHERE key='maintenance'").fetchone()[0])


def test_parallel_maintenance_puts_apply_and_save_the_same_value(tmp_path):
    worker = start_worker(tmp_path / "w", engine="echo", control_wait_seconds=0.2)
    rng = random.Random(21)
    try:
        with httpx.Client(base_url=worker.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http, \
                ThreadPoolExecutor(8) as pool:
            def put(i: int) -> int:
                on = rng.random() < 0.5
                return http.put("/control/maintenance", json={"on": on, "reason": f"r{i}" if on else None}).status_code

            for round_ in range(12):
                codes = list(pool.map(put, range(round_ * 40, round_ * 40 + 40)))
                assert set(codes) <= {200, 202}, codes
                applied, stored = http.get("/control/maintenance").json(), saved(worker.state_dir)
                assert (applied["on"], applied["reason"]) == (stored["on"], stored["reason"]), (round_, applied, stored)
        expected = worker.http.get("/control/maintenance").json()
    finally:
        worker.stop()
    again = start_worker(tmp_path / "w", state_dir=worker.state_dir, engine="echo")
    try:
        after = again.http.get("/control/maintenance").json()
        assert (after["on"], after["reason"]) == (expected["on"], expected["reason"])
    finally:
        again.stop()
