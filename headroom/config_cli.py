"""`headroom config check FILE` / `headroom config show`: validate or print the effective configuration."""

from __future__ import annotations

import argparse
import json

from headroom.cliargs import settings_command
from headroom.errors import EXIT_CONFIG


def register(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="validate or show the configuration")
    actions = config.add_subparsers(dest="config_command", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check",
        help=f"validate FILE (plus HEADROOM_* variables) as `headroom guard` would at start, "
        f"starting nothing; exit {EXIT_CONFIG} naming each bad key",
    )
    check.add_argument("file")
    check.set_defaults(func=_check)
    show = actions.add_parser("show", help="print the effective configuration as JSON")
    settings_command(show, _show)
    ref = actions.add_parser("reference", help="print the configuration reference (docs/configuration.md) as Markdown")
    ref.set_defaults(func=_reference)


def _check(args: argparse.Namespace) -> int:
    from headroom.config import load_settings

    load_settings(args.file, check_host=True)
    print(f"{args.file}: OK")
    return 0


def _show(args: argparse.Namespace, settings) -> int:
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def _reference(args: argparse.Namespace) -> int:
    from headroom.config import Settings
    from headroom.confref import reference

    print(reference(Settings), end="")
    return 0
