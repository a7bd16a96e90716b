"""A state database: checked at start (a broken file moved aside or refused), its write transaction, its failures
(counted, raised as StoreUnavailable) and the HTTP answers to them (507/503, never a bare 500)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from headroom.errors import EXIT_STATE, HeadroomError

log = logging.getLogger("headroom.store")
CORRUPT_ERRORS = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}  # what SQLite says of a damaged file (not "locked", not "full")
SIDE_FILES = ("", "-wal", "-shm")  # the database and what SQLite keeps beside it in WAL mode
ON_CORRUPT = ("move_aside", "refuse")
LOG_EVERY_SECONDS = 60.0  # while writes keep failing, one warning a minute


@dataclass(frozen=True)
class Recovery:
    """A corrupt database found at start and moved aside; the fresh one starts empty."""

    path: str  # the database's path
    moved_to: str  # where the broken file now is (kept byte for byte, never deleted)
    reason: str  # what quick_check or SQLite said
    at: float  # unix seconds

    def describe(self) -> str:
        return (
            f"the state database {self.path} was corrupt ({self.reason}); it was moved aside to {self.moved_to} "
            "and a fresh one started: earlier leases, jobs and events are in the moved file (see TROUBLESHOOTING.md)"
        )


class StoreUnavailable(Exception):
    """A write that had to be durable failed; `full` when the disk is full (the API answers 507), else 503."""

    def __init__(self, message: str, full: bool):
        super().__init__(message)
        self.full = full


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT; whatever fails inside rolls back (a failed rollback is ignored) and is raised."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def is_full(err: BaseException) -> bool:
    """True when SQLite failed because the disk (or its quota) is full."""
    return getattr(err, "sqlite_errorname", "") == "SQLITE_FULL" or "disk is full" in str(err)


READY_MIN_FREE_BYTES = (
    64 * 1024
)  # below this on the database's filesystem a store is not ready, whatever the last write did


def disk_room(path: Path) -> int | None:
    """Bytes an unprivileged writer can still use on the filesystem holding `path` (None when it cannot be asked).
    Readiness asks this, not only the last write: on a full disk a small write can still land in the database's own
    free pages (after a WAL checkpoint), and readiness must not flicker with it."""
    try:
        stat = os.statvfs(path.parent if not path.is_dir() else path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def describe_error(err: BaseException) -> str:
    name = getattr(err, "sqlite_errorname", "") or type(err).__name__
    return f"{err} ({name})"


def check_database(path: Path) -> str | None:
    """Why the database at `path` is unusable, or None when it is fine or does not exist yet."""
    if not path.exists():
        return None
    wal = Path(f"{path}-wal")
    if path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size > 0):
        return "the file is empty (0 bytes): truncated"
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
    except sqlite3.Error as err:
        raise HeadroomError(f"cannot open the state database {path}: {describe_error(err)}", EXIT_STATE) from None
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as err:
        if getattr(err, "sqlite_errorname", "") in CORRUPT_ERRORS:
            return describe_error(err)
        raise HeadroomError(f"cannot check the state database {path}: {describe_error(err)}", EXIT_STATE) from None
    finally:
        db.close()
    if [tuple(row) for row in rows] != [("ok",)]:
        return "quick_check: " + "; ".join(str(row[0]) for row in rows[:3]) + (" ..." if len(rows) > 3 else "")
    return None


def move_aside(path: Path, now: float) -> Path:
    """Rename the database (and its -wal/-shm files) to `<name>.corrupt-<UTC time>`; nothing is deleted."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{target}{suffix}").exists() for suffix in SIDE_FILES):
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in SIDE_FILES:
        if Path(f"{path}{suffix}").exists():
            os.rename(f"{path}{suffix}", f"{target}{suffix}")
    return target


def corrupt_files(path: Path) -> list[Path]:
    """Databases moved aside beside `path` that are still there (what the operator has not dealt with yet)."""
    try:
        return sorted(p for p in path.parent.glob(f"{path.name}.corrupt-*") if not p.name.endswith(("-wal", "-shm")))
    except OSError:
        return []


def open_checked(path: Path, on_corrupt: str, setting: str, now: float | None = None) -> Recovery | None:
    """Check the database before it is opened; move a corrupt one aside, or refuse (exit 5) when `on_corrupt` says
    so."""
    reason = check_database(path)
    if reason is None:
        return None
    if on_corrupt == "refuse":
        raise HeadroomError(
            f'the state database {path} is corrupt ({reason}); not starting because {setting} = "refuse". '
            f'Move the file aside (or restore a backup) and start again, or set {setting} = "move_aside" '
            "(see TROUBLESHOOTING.md, 'A corrupt state database')",
            EXIT_STATE,
        )
    now = time.time() if now is None else now
    target = move_aside(path, now)
    recovery = Recovery(str(path), str(target), reason, now)
    log.error("%s", recovery.describe())
    return recovery


class StoreHealth:
    """Write failures of one store: counts by operation, the last error, and whether writes work now (thread-safe)."""

    def __init__(self, name: str, operations: tuple[str, ...], recovery: Recovery | None = None, clock=time.time):
        self.name, self.recovery, self.clock = name, recovery, clock
        self.errors = dict.fromkeys(operations, 0)  # failed writes by operation since start (all listed from 0)
        self.writable = True  # False from a failed write until the next write that succeeds
        self.full = False  # the last failure was a full disk
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._logged_at = 0.0
        self.lock = threading.Lock()

    def failed(self, operation: str, err: BaseException) -> None:
        now = self.clock()
        with self.lock:
            first = self.writable
            self.errors[operation] = self.errors.get(operation, 0) + 1
            self.writable, self.full = False, is_full(err)
            self.last_error, self.last_error_at = describe_error(err), now
            if first or now - self._logged_at >= LOG_EVERY_SECONDS:
                self._logged_at = now
                log.error(
                    "%s store: %s failed: %s (%d write errors so far)",
                    self.name,
                    operation,
                    self.last_error,
                    sum(self.errors.values()),
                )

    def succeeded(self) -> None:
        with self.lock:
            if not self.writable:
                log.warning("%s store: writes work again (last error: %s)", self.name, self.last_error)
            self.writable, self.full = True, False

    def reason(self) -> str:
        """What a person reads when writes fail: the error and what to do."""
        what = "the disk is full" if self.full else "writes fail"
        return f"the {self.name} state database cannot be written ({what}: {self.last_error})"

    def view(self, path: Path) -> dict:
        with self.lock:
            return {
                "writable": self.writable,
                "disk_full": self.full,
                "errors": sum(self.errors.values()),
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "recovered": dataclasses.asdict(self.recovery) if self.recovery else None,
                "corrupt_files": [str(p) for p in corrupt_files(path)],
            }


def install_store_handlers(
    app: FastAPI, database: str, retry_after: Callable[[Request], int], advice: str = ""
) -> None:
    """Answer a failed durable write with 507 (disk full) or 503 and Retry-After, and a failed read (a database damaged
    after start) with 503 and SQLite's words; `database` names it for people ("the worker's job database")."""

    async def unavailable(request: Request, err: StoreUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": f"{err}{advice}", "reason": "disk full" if err.full else "store unavailable"},
            status_code=507 if err.full else 503,
            headers={"Retry-After": str(retry_after(request))},
        )

    async def failed(request: Request, err: sqlite3.Error) -> JSONResponse:
        log.error("%s error on %s %s: %s", database, request.method, request.url.path, describe_error(err))
        return JSONResponse(
            {"detail": f"{database} failed: {describe_error(err)}", "reason": "store error"}, status_code=503
        )

    app.add_exception_handler(StoreUnavailable, unavailable)
    app.add_exception_handler(sqlite3.Error, failed)
