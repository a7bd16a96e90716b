"""The freeze records on disk: `frozen.json` beside the state database, so they outlive the guard and the database.

The file is written whole (temp file, then rename; mode 0600) before every freeze and after every thaw. It is not
SQLite: a corrupt database moved aside keeps nothing from here, a locked one never delays a freeze, and `headroom
thaw --all` (ExecStopPost=, `headroom up`) reads it with no guard running. No fsync: a guard killed mid-freeze leaves
the page cache behind it; a machine that crashes leaves no frozen process either.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("headroom.guard.frozenfile")
RECORDS_FILE = "frozen.json"
LOCK_FILE = "guard.lock"  # held (flock) by the running guard for its whole life: its records are its own
_held: list[int] = []  # the running guard's lock, kept open until the process ends
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def records_path(state_dir: Path) -> Path:
    return Path(state_dir) / RECORDS_FILE


def boottime() -> float:
    """CLOCK_BOOTTIME seconds: monotonic, counts suspend, the same in every process of one boot."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot_id(path: Path = BOOT_ID) -> str:
    """This boot's id: a record from another boot names processes and cgroups that no longer exist."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def read_records(path: Path) -> list[dict]:
    """The records in the file; [] when there is none. A damaged file is kept aside (never silently emptied)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    try:
        items = json.loads(text) if text.strip() else []
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise ValueError("not a list of records")
        return items
    except ValueError as err:
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        os.replace(path, aside)
        log.error("freeze records %s unreadable (%s); kept as %s: thaw what it names by hand", path, err, aside)
        return []


def write_records(path: Path, items: list[dict]) -> None:
    """Replace the file's records with `items` atomically (0600); raises OSError when the disk refuses."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(items, handle)
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)
        raise


def take_lock(state_dir: Path, hold: bool) -> bool | None:
    """Try to own the state dir's records: True when no guard holds them (with `hold`, keep them until this process
    ends), False when a running guard does, None when the lock cannot be taken at all (no rights: go on without)."""
    try:
        Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(Path(state_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    except OSError:
        os.close(fd)
        return None
    if hold:
        _held.append(fd)
    else:
        os.close(fd)
    return True
