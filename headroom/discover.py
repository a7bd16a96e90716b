"""Where a client finds its stack: --config, $HEADROOM_CONFIG, the stack `headroom up` started, or an installed one.

`headroom up` writes a small pointer (`up.json`, 0600) in the user's default state dir naming the config file, the
guard's URL and the worker's fate; it is honoured while that `up` process lives. An installed system stack is found
through /etc/headroom/headroom.toml (its state dir holds the token). Every message about a failed call names what was
tried, from `Found.how` and `token_source`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from headroom.paths import default_state_dir

CONFIG_ENV = "HEADROOM_CONFIG"
TOKEN_ENV = "HEADROOM_TOKEN"
POINTER_FILE = "up.json"
SYSTEM_CONFIG = Path("/etc/headroom/headroom.toml")


@dataclass(frozen=True)
class Found:
    """The config file a client uses (None: built-in defaults) and, in words, how it was found and what was tried."""

    path: str | None
    how: str


def pointer_path(state_dir: Path | None = None) -> Path:
    return (state_dir or default_state_dir()) / POINTER_FILE


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pointer(path: Path | None = None) -> dict | None:
    """What a running `headroom up` of this user wrote; None when there is none or its process is gone."""
    path = path or pointer_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and _alive(data.get("pid")) else None


def write_pointer(data: dict, path: Path | None = None) -> Path:
    """Write (atomically, 0600) the pointer a later client command of this user reads; `data` must hold "pid"."""
    path = path or pointer_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(temp, path)
    return path


def remove_pointer(pid: int, path: Path | None = None) -> None:
    """Remove the pointer if `pid` wrote it (another `up` may have taken over)."""
    path = path or pointer_path()
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def find_config(explicit: str | None = None, environ=None, pointer: Path | None = None,
                system: Path = SYSTEM_CONFIG) -> Found:
    """--config, else $HEADROOM_CONFIG, else the running `headroom up`'s config, else /etc/headroom, else defaults."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Found(str(explicit), f"--config {explicit}")
    if environ.get(CONFIG_ENV):
        return Found(environ[CONFIG_ENV], f"${CONFIG_ENV}={environ[CONFIG_ENV]}")
    pointer = pointer or pointer_path()
    running = read_pointer(pointer)
    if running is not None:
        config = running.get("config")
        return Found(config, f"the stack `headroom up` runs (pid {running['pid']}, {pointer}): "
                             f"{config or 'built-in defaults'}")
    if system.is_file():
        return Found(str(system), f"the installed stack ({system})")
    return Found(None, f"built-in defaults (no --config, no ${CONFIG_ENV}, no running `headroom up` ({pointer}), "
                       f"no {system})")


def token_source(state_dir: Path, configured: str | None = None, environ=None) -> tuple[str | None, str]:
    """(token, where it came from) for a client; without a token, where it looked and why that failed."""
    environ = os.environ if environ is None else environ
    if configured:
        return configured, "the configuration's [guard] token"
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV], f"${TOKEN_ENV}"
    path = Path(state_dir) / "token"
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None, f"no token: ${TOKEN_ENV} is unset and {path} does not exist"
    except PermissionError:
        return None, (f"no token: ${TOKEN_ENV} is unset and {path} is not readable by this user (try sudo, or set "
                      f"${TOKEN_ENV})")
    except (OSError, UnicodeDecodeError) as err:
        return None, f"no token: ${TOKEN_ENV} is unset and {path} cannot be read ({err})"
    return (token, f"the token file {path}") if token else (None, f"no token: {path} is empty")
