"""State files are private: the guard's and the worker's SQLite database, -wal and -shm files are all 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from guard.common.store import Store as GuardStore
from worker.batchfile import parse_batch
from worker.store import DB_FILE, Store as WorkerStore


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)  # the usual login umask: files would be 0644 unless created private
    yield
    os.umask(old)


def modes(db: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.iterdir() if p.name.startswith(db.name)}


def test_guard_database_and_its_wal_and_shm_are_0600(tmp_path, loose_umask):
    store = GuardStore(tmp_path)
    store.add_event("test", "written", {})
    found = modes(store.path)
    store.close()
    assert {store.path.name + "-wal", store.path.name + "-shm"} <= set(found)
    assert set(found.values()) == {0o600}, found


def test_worker_database_and_its_wal_and_shm_are_0600(tmp_path, loose_umask):
    store = WorkerStore(tmp_path / DB_FILE)
    store.add_batch("bulk", parse_batch(b'{"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x"}}', 10))
    found = modes(tmp_path / DB_FILE)
    store.close()
    assert {DB_FILE + "-wal", DB_FILE + "-shm"} <= set(found)
    assert set(found.values()) == {0o600}, found


def test_a_database_left_0644_is_made_private_with_its_journal(tmp_path, loose_umask):
    """E.g. restored from a backup: opening it makes it and the -wal/-shm files SQLite then creates 0600."""
    import sqlite3

    db = tmp_path / "guard.sqlite3"
    with sqlite3.connect(db) as old:
        old.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old.close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o644
    store = GuardStore(tmp_path)
    store.add_event("test", "written", {})
    found = modes(db)
    store.close()
    assert len(found) == 3 and set(found.values()) == {0o600}, found
