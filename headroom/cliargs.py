"""How a subcommand gets its settings: `--config FILE`, and a handler the wiring calls with the loaded settings.

A part's `register(subparsers)` uses these instead of importing the command wiring (headroom.cli), which sits
above every part: the wiring loads the settings once and calls `handler(args, settings)`.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

Handler = Callable[[argparse.Namespace, Any], "int | None"]


def settings_command(parser: argparse.ArgumentParser, handler: Handler) -> None:
    """`parser` takes --config; the wiring loads the settings from it and calls `handler(args, settings)`."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: $HEADROOM_CONFIG, else built-in defaults)")
    parser.set_defaults(func=handler, with_settings=True)


def client_command(parser: argparse.ArgumentParser, handler: Handler) -> None:
    """A client of a running stack: without --config it finds the stack (headroom.discover) and says how in errors."""
    settings_command(parser, handler)
    parser.set_defaults(discover=True)
