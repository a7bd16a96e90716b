"""Where headroom keeps state: $STATE_DIRECTORY (systemd), $XDG_STATE_HOME/headroom, ~/.local/state/headroom."""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    systemd_dir = os.environ.get("STATE_DIRECTORY")
    if systemd_dir:
        return Path(systemd_dir.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "headroom"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if needed; state files are never world-readable."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def private_database(path: Path) -> Path:
    """Create an SQLite file 0600 before SQLite opens it, and fix older side files.

    SQLite gives the -wal and -shm files it creates the main file's mode, so a database created 0600 keeps its
    journal private too (without touching the process-wide umask, which other threads share).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        try:
            os.chmod(name, 0o600)
        except FileNotFoundError:
            pass
    return path
