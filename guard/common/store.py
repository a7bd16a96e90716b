"""The guard's durable state in SQLite (WAL): leases and the queue, maintenance, policy state, recent events.

Protection never waits on this journal: a write that fails (a full disk, an I/O error) is counted, kept in memory
(bounded) and retried later, and never raises into the tick. Only the first write of a new lease must be durable:
it raises StoreUnavailable, which the API answers with 507 (disk full) or 503.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from guard.common.types import ACTIVE, Lease
from headroom.dbfile import StoreHealth, StoreUnavailable, open_checked, transaction
from headroom.paths import ensure_private_dir, private_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, status TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS leases_status ON leases(status);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
                                   message TEXT NOT NULL, data TEXT NOT NULL);
"""
LEASE_FIELDS = {f.name for f in dataclasses.fields(Lease)}
OPERATIONS = ("event", "lease", "state", "retry", "prune")  # what a failed write was doing (the metric's label)
RETRY_SECONDS = 1.0  # while writes fail, try again at most this often (the rest waits in memory)
ACTIVE_MARKS = ", ".join("?" * len(ACTIVE))  # the active lease statuses as SQL parameters
UNRECORDED_MAX = 1000  # events kept in memory while they cannot be written; the oldest are dropped beyond


class Store:
    """A small thread-safe wrapper around one SQLite connection; every write commits, or waits in memory."""

    def __init__(
        self,
        state_dir: Path,
        events_max: int = 1000,
        filename: str = "guard.sqlite3",
        on_corrupt: str = "move_aside",
        unrecorded_max: int = UNRECORDED_MAX,
        clock: Callable[[], float] = time.time,
    ):
        ensure_private_dir(Path(state_dir))
        self.path = Path(state_dir) / filename
        self.events_max, self.clock = events_max, clock
        recovery = open_checked(self.path, on_corrupt, "guard.store_on_corrupt")
        self.lock = threading.Lock()
        private_database(self.path)  # before connect: the -wal/-shm files copy its 0600
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.health = StoreHealth("guard", OPERATIONS, recovery, clock)
        self.unrecorded_events: deque[tuple] = deque(maxlen=unrecorded_max)  # (at, kind, message, data json)
        self.unrecorded_kv: dict[str, str] = {}
        self.unrecorded_leases: dict[str, tuple[str, str]] = {}  # id -> (status, data json)
        self.dropped_events = 0  # unrecorded events pushed out of memory by newer ones
        self.written_leases: set[str] = set()  # active leases the database holds (their updates may wait in memory)
        self._retry_at = 0.0
        if recovery is not None:
            self.add_event("store", recovery.describe(), dataclasses.asdict(recovery), at=recovery.at)

    # --- writing ----------------------------------------------------------------------------------
    def _write(self, operation: str, statements: Callable[[], None], keep: Callable[[], None] | None = None) -> bool:
        """Run `statements` after whatever waits in memory; on failure call `keep` (under the lock) and return False."""
        with self.lock:
            if not self.health.writable and self.clock() < self._retry_at or not self._flush_locked():
                if keep:
                    keep()
                return False
            try:
                statements()
            except sqlite3.Error as err:
                self._failed(operation, err)
                if keep:
                    keep()
                return False
            self.health.succeeded()
            return True

    def _failed(self, operation: str, err: sqlite3.Error) -> None:
        self.health.failed(operation, err)
        self._retry_at = self.clock() + RETRY_SECONDS

    def _flush_locked(self) -> bool:
        """Write what waits in memory, in one transaction; True when nothing is left."""
        if not (self.unrecorded_events or self.unrecorded_kv or self.unrecorded_leases):
            return True
        try:
            with transaction(self.db):
                leases = [(lease_id, status, data) for lease_id, (status, data) in self.unrecorded_leases.items()]
                self.db.executemany("INSERT OR REPLACE INTO leases (id, status, data) VALUES (?, ?, ?)", leases)
                self.db.executemany(
                    "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", list(self.unrecorded_kv.items())
                )
                self.db.executemany(
                    "INSERT INTO events (at, kind, message, data) VALUES (?, ?, ?, ?)", list(self.unrecorded_events)
                )
        except sqlite3.Error as err:
            self._failed("retry", err)
            return False
        self.unrecorded_events.clear()
        self.unrecorded_kv.clear()
        self.unrecorded_leases.clear()
        self.health.succeeded()
        return True

    def retry(self) -> bool:
        """Write what waits in memory, or probe with a tiny write while writes fail; True when the store works."""
        with self.lock:
            if not self._flush_locked():
                return False
            if self.health.writable:
                return True
            try:
                self.db.execute(
                    "INSERT OR REPLACE INTO kv (key, value) VALUES ('store_probe', ?)", (json.dumps(self.clock()),)
                )
            except sqlite3.Error as err:
                self._failed("retry", err)
                return False
            self.health.succeeded()
            return True

    def unrecorded(self) -> int:
        """Writes waiting in memory (events, leases, state)."""
        with self.lock:
            return len(self.unrecorded_events) + len(self.unrecorded_kv) + len(self.unrecorded_leases)

    def health_view(self) -> dict:
        view = self.health.view(self.path)
        with self.lock:
            view.update(
                unrecorded=len(self.unrecorded_events) + len(self.unrecorded_kv) + len(self.unrecorded_leases),
                dropped_events=self.dropped_events,
            )
        return view

    # --- leases -----------------------------------------------------------------------------------
    def put_lease(self, lease: Lease, event: tuple[str, str, dict] | None = None, at: float | None = None) -> None:
        """Write a lease and, with `event` (kind, message, data), its event in the same transaction: both or neither.
        A new lease must reach the disk (StoreUnavailable); an update may wait in memory, its event with it."""
        data = json.dumps(dataclasses.asdict(lease))
        new = lease.id not in self.written_leases
        row = (at or self.clock(), event[0], event[1], json.dumps(event[2] or {})) if event else None

        def keep() -> None:
            if not new:
                self.unrecorded_leases[lease.id] = (lease.status, data)
                if row is not None:
                    self._keep_event(row)

        def write() -> None:
            with transaction(self.db):
                self.db.execute(
                    "INSERT OR REPLACE INTO leases (id, status, data) VALUES (?, ?, ?)", (lease.id, lease.status, data)
                )
                if row is not None:
                    self._insert_event(row)
            self.unrecorded_leases.pop(lease.id, None)

        if not self._write("lease", write, keep) and new:
            raise StoreUnavailable(self.health.reason() + "; the lease was not created", self.health.full)
        if lease.active:
            self.written_leases.add(lease.id)
        else:
            self.written_leases.discard(lease.id)

    def get_lease(self, lease_id: str) -> Lease | None:
        with self.lock:
            if lease_id in self.unrecorded_leases:
                return _lease(self.unrecorded_leases[lease_id][1])
            row = self.db.execute("SELECT data FROM leases WHERE id = ?", (lease_id,)).fetchone()
        return _lease(row[0]) if row else None

    def active_leases(self) -> list[Lease]:
        with self.lock:
            rows = self.db.execute(f"SELECT id, data FROM leases WHERE status IN ({ACTIVE_MARKS})", ACTIVE).fetchall()
            found = {lease_id: data for lease_id, data in rows}
            found.update(
                {lease_id: data for lease_id, (status, data) in self.unrecorded_leases.items() if status in ACTIVE}
            )
        self.written_leases.update(found)
        return [_lease(data) for data in found.values()]

    def prune_leases(self, keep_ended: int = 1000) -> None:
        """Drop the oldest ended leases beyond `keep_ended`."""
        self._write(
            "prune",
            lambda: self.db.execute(
                f"DELETE FROM leases WHERE status NOT IN ({ACTIVE_MARKS}) AND rowid NOT IN "
                f"(SELECT rowid FROM leases WHERE status NOT IN ({ACTIVE_MARKS}) ORDER BY rowid DESC LIMIT ?)",
                (*ACTIVE, *ACTIVE, keep_ended),
            ),
        )

    # --- state and events -------------------------------------------------------------------------
    def set(self, key: str, value) -> None:
        text = json.dumps(value)

        def keep() -> None:
            self.unrecorded_kv[key] = text

        self._write(
            "state", lambda: self.db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, text)), keep
        )

    def get(self, key: str, default=None):
        with self.lock:
            if key in self.unrecorded_kv:
                return json.loads(self.unrecorded_kv[key])
            row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def add_event(self, kind: str, message: str, data: dict | None = None, at: float | None = None) -> int | None:
        """Record an event; its id, or None when it waits in memory until the store can be written."""
        row = (at or self.clock(), kind, message, json.dumps(data or {}))
        event_id: list[int] = []

        def write() -> None:
            event_id.append(self._insert_event(row))

        self._write("event", write, lambda: self._keep_event(row))
        return event_id[0] if event_id else None

    def _insert_event(self, row: tuple) -> int:
        cursor = self.db.execute("INSERT INTO events (at, kind, message, data) VALUES (?, ?, ?, ?)", row)
        if cursor.lastrowid % 100 == 0:
            self.db.execute("DELETE FROM events WHERE id <= ?", (cursor.lastrowid - self.events_max,))
        return cursor.lastrowid

    def _keep_event(self, row: tuple) -> None:
        if len(self.unrecorded_events) == self.unrecorded_events.maxlen:
            self.dropped_events += 1
        self.unrecorded_events.append(row)

    def events(self, limit: int = 100, after: int = 0, kind: str | None = None) -> list[dict]:
        """Recorded events, oldest first; with `after` = 0 also those waiting in memory (id null, unrecorded true)."""
        query = "SELECT id, at, kind, message, data FROM events WHERE id > ?"
        params: list = [after]
        if kind:
            query += " AND kind = ?"
            params.append(kind)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self.lock:
            rows = self.db.execute(query, params).fetchall()
            waiting = [r for r in self.unrecorded_events if not kind or r[1] == kind] if after == 0 else []
        found = [
            {"id": r[0], "at": r[1], "kind": r[2], "message": r[3], "data": json.loads(r[4])} for r in reversed(rows)
        ]
        found += [
            {"id": None, "at": r[0], "kind": r[1], "message": r[2], "data": json.loads(r[3]), "unrecorded": True}
            for r in waiting
        ]
        return found[-limit:]

    def close(self) -> None:
        with self.lock:
            self._flush_locked()
            self.db.close()


def _lease(text: str) -> Lease:
    data = json.loads(text)
    return Lease(**{k: v for k, v in data.items() if k in LEASE_FIELDS})
