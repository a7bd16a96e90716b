"""The guard's durable state in SQLite (WAL): leases and the queue, maintenance, policy state, recent events."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from pathlib import Path

from guard.types import Lease
from headroom.paths import ensure_private_dir, private_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, status TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS leases_status ON leases(status);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
                                   message TEXT NOT NULL, data TEXT NOT NULL);
"""
LEASE_FIELDS = {f.name for f in dataclasses.fields(Lease)}


class Store:
    """A small thread-safe wrapper around one SQLite connection; every write commits."""

    def __init__(self, state_dir: Path, events_max: int = 1000, filename: str = "guard.sqlite3"):
        ensure_private_dir(Path(state_dir))
        self.path = Path(state_dir) / filename
        self.events_max = events_max
        self.lock = threading.Lock()
        private_database(self.path)  # before connect: the -wal/-shm files copy its 0600
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def put_lease(self, lease: Lease) -> None:
        data = json.dumps(dataclasses.asdict(lease))
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO leases (id, status, data) VALUES (?, ?, ?)", (lease.id, lease.status, data))

    def get_lease(self, lease_id: str) -> Lease | None:
        with self.lock:
            row = self.db.execute("SELECT data FROM leases WHERE id = ?", (lease_id,)).fetchone()
        return _lease(row[0]) if row else None

    def active_leases(self) -> list[Lease]:
        with self.lock:
            rows = self.db.execute("SELECT data FROM leases WHERE status IN ('waiting', 'granted')").fetchall()
        return [_lease(row[0]) for row in rows]

    def prune_leases(self, keep_ended: int = 1000) -> None:
        """Drop the oldest ended leases beyond `keep_ended`."""
        with self.lock:
            self.db.execute(
                "DELETE FROM leases WHERE status NOT IN ('waiting', 'granted') AND rowid NOT IN "
                "(SELECT rowid FROM leases WHERE status NOT IN ('waiting', 'granted') ORDER BY rowid DESC LIMIT ?)",
                (keep_ended,))

    def set(self, key: str, value) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def get(self, key: str, default=None):
        with self.lock:
            row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def add_event(self, kind: str, message: str, data: dict | None = None, at: float | None = None) -> int:
        with self.lock:
            cursor = self.db.execute("INSERT INTO events (at, kind, message, data) VALUES (?, ?, ?, ?)",
                                     (at or time.time(), kind, message, json.dumps(data or {})))
            event_id = cursor.lastrowid
            if event_id % 100 == 0:
                self.db.execute("DELETE FROM events WHERE id <= ?", (event_id - self.events_max,))
        return event_id

    def events(self, limit: int = 100, after: int = 0, kind: str | None = None) -> list[dict]:
        query = "SELECT id, at, kind, message, data FROM events WHERE id > ?"
        params: list = [after]
        if kind:
            query += " AND kind = ?"
            params.append(kind)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self.lock:
            rows = self.db.execute(query, params).fetchall()
        return [{"id": r[0], "at": r[1], "kind": r[2], "message": r[3], "data": json.loads(r[4])} for r in reversed(rows)]

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _lease(text: str) -> Lease:
    data = json.loads(text)
    return Lease(**{k: v for k, v in data.items() if k in LEASE_FIELDS})
