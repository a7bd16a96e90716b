"""The durable job store: batches and their requests in SQLite (WAL); a result is committed as its request finishes."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from headroom.dbfile import StoreHealth, StoreUnavailable, open_checked, transaction
from worker.batches import FINISHED, UNFINISHED, RequestStatus as R, batch_status, describe
from worker.batchfile import BatchLine
from headroom.contract import Maintenance
from worker.types import PRIORITIES, PRIORITY_RANK, EngineRequest

log = logging.getLogger("headroom.worker.store")
DB_FILE = "worker.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, priority TEXT NOT NULL,
    name TEXT, created_at REAL NOT NULL, cancelled_at REAL, total INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, batch_seq INTEGER NOT NULL REFERENCES batches(seq),
    prank INTEGER NOT NULL, line INTEGER NOT NULL, custom_id TEXT NOT NULL, url TEXT NOT NULL,
    body TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued', step INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL, finished_at REAL, result TEXT, UNIQUE (batch_seq, custom_id));
CREATE INDEX IF NOT EXISTS requests_queue ON requests (status, prank, batch_seq, line);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


REQUEUE_ALL = "UPDATE requests SET status=?, step=NULL, started_at=NULL WHERE status=?"  # (queued, running)
REQUEUE_ONE = "UPDATE requests SET status=?, step=NULL, started_at=NULL WHERE id=? AND status=?"  # queued, id, running
OPERATIONS = ("batch", "claim", "result", "cancel", "maintenance", "requeue", "probe")  # the errors metric's labels


class BatchNotFound(KeyError):
    pass


def _private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (its -wal/-shm files copy the mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class Store:
    def __init__(self, path: Path, on_corrupt: str = "move_aside"):
        self.path = Path(path)
        recovery = open_checked(self.path, on_corrupt, "worker.store_on_corrupt")
        self.health = StoreHealth("worker", OPERATIONS, recovery)
        self._orphans: set[int] = set()  # requests left running by a result commit that failed: queued again next claim
        self._unsaved_maintenance: Maintenance | None = None  # maintenance set while the store could not be written
        _private_file(self.path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, fn, operation: str = "batch"):
        """Run `fn` in one write transaction; a SQLite failure is counted and raised as StoreUnavailable."""
        with self._lock:
            try:
                with transaction(self._db):
                    value = fn()
            except sqlite3.Error as err:
                self.health.failed(operation, err)
                raise StoreUnavailable(self.health.reason(), self.health.full) from err
            self.health.succeeded()
            return value

    def probe(self) -> bool:
        """A tiny write (and any maintenance that waited): True once the store can be written again."""
        with self._lock:  # what waited is written and forgotten in one step: a save in between is not lost
            try:
                self._tx(self._write_pending, "probe")
            except StoreUnavailable:
                return False
            self._pending_written()
        return True

    def _write_pending(self) -> None:
        """Inside a write transaction: requeue orphaned requests and save maintenance that waited in memory."""
        if self._orphans:
            self._db.executemany(REQUEUE_ONE, [(R.QUEUED, key, R.RUNNING) for key in self._orphans])
        if self._unsaved_maintenance is not None:
            self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('maintenance', ?)",
                             (json.dumps(self._unsaved_maintenance.as_dict()),))
        self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('store_probe', ?)", (str(time.time()),))

    def _pending_written(self) -> None:
        """After a commit that included _write_pending."""
        with self._lock:
            if self._orphans:
                log.warning("requeued %d requests whose results could not be committed", len(self._orphans))
            self._orphans.clear()
            self._unsaved_maintenance = None

    def add_batch(self, priority: str, lines: list[BatchLine], name: str | None = None) -> str:
        """Store a validated batch in one transaction; returns its id."""
        batch_id = "batch_" + secrets.token_hex(12)

        def insert() -> None:
            cur = self._db.execute(
                "INSERT INTO batches (id, priority, name, created_at, total) VALUES (?,?,?,?,?)",
                (batch_id, priority, name, time.time(), len(lines)))
            seq = cur.lastrowid
            self._db.executemany(
                "INSERT INTO requests (batch_seq, prank, line, custom_id, url, body) VALUES (?,?,?,?,?,?)",
                [(seq, PRIORITY_RANK[priority], ln.line, ln.custom_id, ln.url, json.dumps(ln.body)) for ln in lines])

        self._tx(insert)
        return batch_id

    def requeue_running(self) -> int:
        """At start: requests a killed worker left running had no result written; queue them again (now or once the
        store can be written)."""
        try:
            return self._tx(lambda: self._db.execute(REQUEUE_ALL, (R.QUEUED, R.RUNNING)).rowcount, "requeue")
        except StoreUnavailable:
            with self._lock:
                running = self._db.execute("SELECT id FROM requests WHERE status=?", (R.RUNNING,))
                self._orphans.update(r[0] for r in running)
            return 0

    def requeue(self, keys: Iterable[int]) -> int:
        """Requests the engine aborted (pause, throttle, free) go back to the queue; no result was written.
        While the store cannot be written they are requeued by the next claim (or probe) that can."""
        rows = [(R.QUEUED, key, R.RUNNING) for key in keys]
        try:
            return self._tx(lambda: self._db.executemany(REQUEUE_ONE, rows).rowcount, "requeue")
        except StoreUnavailable:
            with self._lock:
                self._orphans.update(row[1] for row in rows)
            return 0

    def next_step(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key='step'").fetchone()
        return (int(row["value"]) if row else 0) + 1

    def claim(self, limit: int) -> tuple[int, list[EngineRequest]]:
        """Mark up to `limit` queued requests running (production, test, bulk; oldest batch, then line order)."""

        def take() -> tuple[int, list[EngineRequest]]:
            self._write_pending()
            rows = self._db.execute(
                "SELECT id, url, body, custom_id FROM requests WHERE status=? ORDER BY prank, batch_seq, line LIMIT ?",
                (R.QUEUED, limit)).fetchall()
            if not rows:
                return 0, []
            step = self.next_step()
            self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('step', ?)", (str(step),))
            now = time.time()
            self._db.executemany(
                "UPDATE requests SET status=?, step=?, started_at=?, attempts=attempts+1 WHERE id=?",
                [(R.RUNNING, step, now, row["id"]) for row in rows])
            return step, [
                EngineRequest(row["id"], row["url"], json.loads(row["body"]), row["custom_id"]) for row in rows]

        try:
            claimed = self._tx(take, "claim")
        except StoreUnavailable:  # nothing runs while nothing can be recorded; health says why
            return 0, []
        self._pending_written()
        return claimed

    def finish(self, outcomes: Iterable[tuple[int, str, dict[str, Any]]]) -> bool:
        """Write (request id, 'completed'|'failed', output line) for running requests, in one transaction.

        False when the commit failed: the requests are queued again by the next claim that can write, so each
        result is still recorded exactly once."""
        now = time.time()
        rows = [(R(status), now, json.dumps(line), key, R.RUNNING) for key, status, line in outcomes]
        try:
            self._tx(lambda: self._db.executemany(
                "UPDATE requests SET status=?, finished_at=?, result=? WHERE id=? AND status=?", rows), "result")
        except StoreUnavailable:
            with self._lock:
                self._orphans.update(row[3] for row in rows)
            return False
        return True

    def _batch_row(self, batch_id: str) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM batches WHERE id=?", (batch_id,)).fetchone()
        if row is None:
            raise BatchNotFound(batch_id)
        return row

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The batch's status and request counts."""
        with self._lock:
            row = self._batch_row(batch_id)
            counts = dict(self._db.execute(
                "SELECT status, COUNT(*) FROM requests WHERE batch_seq=? GROUP BY status", (row["seq"],)).fetchall())
            finished_at = self._db.execute(
                "SELECT MAX(finished_at) FROM requests WHERE batch_seq=?", (row["seq"],)).fetchone()[0]
        return describe(row, counts, finished_at)

    def list_batches(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            ids = [r["id"] for r in self._db.execute("SELECT id FROM batches ORDER BY seq DESC LIMIT ?", (limit,))]
        return [self.batch(batch_id) for batch_id in ids]

    def cancel(self, batch_id: str) -> tuple[dict[str, Any], int]:
        """Queued requests of the batch become cancelled (how many is returned); running ones finish."""

        def mark() -> int:
            row = self._batch_row(batch_id)
            if row["cancelled_at"] is None:
                self._db.execute("UPDATE batches SET cancelled_at=? WHERE seq=?", (time.time(), row["seq"]))
            return self._db.execute(
                "UPDATE requests SET status=?, finished_at=? WHERE batch_seq=? AND status=?",
                (R.CANCELLED, time.time(), row["seq"], R.QUEUED)).rowcount

        cancelled = self._tx(mark, "cancel")
        return self.batch(batch_id), cancelled

    def finished_requests(self, batch_id: str) -> list[sqlite3.Row]:
        """Finished requests of the batch in line order (for the output file)."""
        with self._lock:
            row = self._batch_row(batch_id)
            return self._db.execute(
                "SELECT id, line, custom_id, status, result FROM requests "
                "WHERE batch_seq=? AND status IN (?,?,?) ORDER BY line",
                (row["seq"], *FINISHED)).fetchall()

    def requests(self, batch_id: str) -> list[dict[str, Any]]:
        """Every request's progress: status, step, attempts, start and finish times."""
        with self._lock:
            row = self._batch_row(batch_id)
            rows = self._db.execute(
                "SELECT line, custom_id, url, status, step, attempts, started_at, finished_at FROM requests "
                "WHERE batch_seq=? ORDER BY line", (row["seq"],)).fetchall()
        return [dict(r) for r in rows]

    def queue_depth(self) -> dict[str, int]:
        """Requests not yet finished (queued or running) per priority."""
        with self._lock:
            rows = self._db.execute(
                "SELECT prank, COUNT(*) FROM requests WHERE status IN (?,?) GROUP BY prank", UNFINISHED).fetchall()
        depth = dict.fromkeys(PRIORITIES, 0)
        for rank, count in rows:
            depth[PRIORITIES[rank]] = count
        return depth

    def batch_status_counts(self) -> dict[str, int]:
        """How many batches are in each status (one query, for /metrics)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT b.seq, b.cancelled_at, r.status, COUNT(*) FROM batches b JOIN requests r ON r.batch_seq=b.seq "
                "GROUP BY b.seq, r.status").fetchall()
        per_batch: dict[int, tuple[Any, dict[str, int]]] = {}
        for seq, cancelled_at, status, count in rows:
            per_batch.setdefault(seq, (cancelled_at, {}))[1][status] = count
        counts: dict[str, int] = {}
        for cancelled_at, by_status in per_batch.values():
            status = batch_status(cancelled_at, by_status).value
            counts[status] = counts.get(status, 0) + 1
        return counts

    def load_maintenance(self) -> Maintenance:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE key='maintenance'").fetchone()
        return Maintenance.from_dict(json.loads(row["value"])) if row else Maintenance()

    def save_maintenance(self, value: Maintenance) -> None:
        """Save maintenance; while the store cannot be written it applies at once and is saved later."""
        try:
            self._tx(lambda: self._db.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES ('maintenance', ?)", (json.dumps(value.as_dict()),)),
                "maintenance")
        except StoreUnavailable:
            with self._lock:
                self._unsaved_maintenance = value
            return
        with self._lock:
            self._unsaved_maintenance = None

    def health_view(self) -> dict[str, Any]:
        view = self.health.view(self.path)
        with self._lock:
            view["requeue_pending"] = len(self._orphans)
        return view

