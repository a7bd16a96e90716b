"""How a subcommand gets its settings: `--config FILE`, and a handler the wiring calls with the loaded settings.

A part's `register(subparsers)` uses these instead of importing the command wiring (headroom.cli), which sits
above every part: the wiring loads the settings once and calls `handler(args, settings)`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable
from urllib.parse import urlsplit

Handler = Callable[[argparse.Namespace, Any], "int | None"]


def settings_command(parser: argparse.ArgumentParser, handler: Handler) -> None:
    """`parser` takes --config; the wiring loads the settings from it and calls `handler(args, settings)`."""
    parser.add_argument(
        "--config", metavar="FILE", help="TOML config file (default: $HEADROOM_CONFIG, else built-in defaults)"
    )
    parser.set_defaults(func=handler, with_settings=True)


def client_command(parser: argparse.ArgumentParser, handler: Handler) -> None:
    """A client of a running stack: without --config it finds the stack (headroom.discover) and says how in errors."""
    settings_command(parser, handler)
    parser.set_defaults(discover=True)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (what was wrong and where help is), exit 2, never the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


TTL_FLOOR_SECONDS = 5  # [run] ttl_seconds' floor: heartbeats go every third of the TTL, so at least every 1.7 s


def ttl_seconds(text: str) -> int:
    """--ttl: whole seconds from the floor up to a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole seconds, got {text!r}") from None
    if not math.isfinite(value) or value != int(value) or not TTL_FLOOR_SECONDS <= value <= 86400:
        raise argparse.ArgumentTypeError(
            f"expected whole seconds from {TTL_FLOOR_SECONDS} to 86400 (heartbeats go every third of it), got {text!r}"
        )
    return int(value)


def margin_ratio(text: str) -> float:
    """--max-margin: a finite ratio from 0 to 10 (memory.max = RAM x (1 + ratio))."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"expected a ratio from 0 to 10 such as 0.1, got {text!r}")
    return value


def url_arg(text: str) -> str:
    """--url: http(s)://HOST[:PORT][/PATH]."""
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        parts, port_ok = None, False
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or any(c.isspace() or ord(c) < 32 for c in text)
    ):
        raise argparse.ArgumentTypeError(f"expected a URL such as http://127.0.0.1:9841, got {text!r}")
    return text.rstrip("/")


def cgroup_path(value: str) -> str:
    """A cgroup path (or slice name) that stays where it says: no '..' or '.' component, no NUL."""
    parts = value.split("/")
    if ".." in parts or "." in parts or "\0" in value or not value.strip("/"):
        raise ValueError(f"expected a cgroup path without '.' or '..' components, e.g. headroom.slice, got {value!r}")
    return value
