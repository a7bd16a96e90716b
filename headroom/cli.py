"""The `headroom` command line, the one place that wires the parts: it serves them and registers their commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from headroom import __version__
from headroom.cliargs import Parser, settings_command
from headroom.errors import EXIT_INTERRUPTED, EXIT_OK, HeadroomError
from headroom.logsetup import setup_logging


@dataclass(frozen=True)
class Flag:
    """A server's command-line flag that overrides one key of its settings section."""

    option: str
    key: str
    type: type
    metavar: str
    help: str


LISTEN = Flag("--listen", "listen", str, "HOST:PORT", "address to serve on (default: [{part}] listen)")


@dataclass(frozen=True)
class Server:
    """A part that serves: `module` exports `serve(settings) -> int | None`; `name` is its command and settings
    section."""

    name: str
    module: str
    help: str
    flags: tuple[Flag, ...] = (LISTEN,)


# `headroom <name>` loads the settings (with its flags), sets up logging and calls the part's serve(settings).
SERVERS = (
    Server("exporter", "exporter.app", "serve GPU/RAM/swap/pressure/OOM metrics on /metrics"),
    Server("guard", "guard.app", "run the guard (lease API, worker control, /metrics)"),
    Server(
        "worker",
        "worker.server",
        "run the vLLM batch worker (job API, control endpoint, /metrics)",
        (
            LISTEN,
            Flag(
                "--oom-score-adj",
                "oom_score_adj",
                int,
                "N",
                "the worker's oom_score_adj (default: [{part}] oom_score_adj)",
            ),
        ),
    ),
)
# Modules with a `register(subparsers)` for the other commands, in help order (kept import-light).
COMMANDS = (
    "headroom.config_cli",
    "headroom.up",
    "guard.cli",
    "worker.cli",
    "headroom.client.commands",
    "headroom.install",
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="headroom", description="Keep a GPU box from killing its own work.")
    parser.add_argument("--version", action="version", version=f"headroom {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for server in SERVERS:
        sub = subparsers.add_parser(server.name, help=server.help)
        settings_command(sub, _serve)
        for flag in server.flags:
            sub.add_argument(
                flag.option,
                dest=flag.key,
                type=flag.type,
                metavar=flag.metavar,
                help=flag.help.format(part=server.name),
            )
        sub.set_defaults(server=server)
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def _serve(args: argparse.Namespace, settings) -> int:
    setup_logging(settings.log_level)
    result = importlib.import_module(args.server.module).serve(settings)
    return EXIT_OK if result is None else int(result)


def _settings(args: argparse.Namespace):
    """The settings a command runs with: its --config file, HEADROOM_* variables, then a server's flags."""
    from headroom.config import load_settings

    server = getattr(args, "server", None)
    if getattr(args, "discover", False):
        from headroom.discover import find_config

        args.found = find_config(args.config)
        return load_settings(args.found.path)
    given = {
        flag.key: getattr(args, flag.key)
        for flag in (server.flags if server else ())
        if getattr(args, flag.key) is not None
    }
    serves_guard = (server.name if server else args.command) in ("guard", "up")  # its host must have what it names
    return load_settings(args.config, check_host=serves_guard, **({server.name: given} if given else {}))


def _thaws_first(args: argparse.Namespace) -> bool:
    """`headroom guard` and `headroom thaw --all` thaw the freeze records even when the configuration is invalid."""
    server = getattr(args, "server", None)
    return (server is not None and server.name == "guard") or (args.command == "thaw" and getattr(args, "all", False))


def _settings_or_thaw(args: argparse.Namespace):
    """The settings; when they are invalid, a guard's records are thawed first (nothing may stay frozen because a
    config edit broke the restart), then the error ends the command as usual."""
    try:
        return _settings(args)
    except HeadroomError:
        if _thaws_first(args):
            from guard.protect.recovery import recover_at_start, state_dir_unvalidated

            setup_logging("warning")
            recover_at_start(state_dir_unvalidated(args.config))
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args, _settings_or_thaw(args)) if getattr(args, "with_settings", False) else args.func(args)
    except HeadroomError as err:
        print(f"headroom: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK if result is None else int(result)
