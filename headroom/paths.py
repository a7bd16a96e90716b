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
