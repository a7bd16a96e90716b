"""The `headroom` command line: one parser, each part registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from headroom import __version__
from headroom.errors import EXIT_OK, HeadroomError

# Modules with a `register(subparsers)` function; kept import-light (heavy imports inside handlers).
PART_CLIS = ("headroom.config_cli", "headroom.up", "exporter.cli", "guard.cli", "worker.cli", "headroom.run_cli", "headroom.install")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headroom", description="Keep a GPU box from killing its own work.")
    parser.add_argument("--version", action="version", version=f"headroom {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in PART_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue  # that part is not built yet
            raise
        module.register(subparsers)
    return parser


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: $HEADROOM_CONFIG, else built-in defaults)")


# Libraries that log every tick or request at INFO (4 ticks a second would flood the journal).
CHATTY_LOGGERS = ("apscheduler", "httpx", "httpcore")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level.lower() != "debug":
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except HeadroomError as err:
        print(f"headroom: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    return EXIT_OK if result is None else int(result)
