"""`headroom batch submit|status|results|cancel`: the worker's job API from the command line (headroom.cli serves the
worker)."""

from __future__ import annotations

import argparse
import json
import sys

from headroom.cliargs import client_command, url_arg
from headroom.errors import HeadroomError


def register(subparsers: argparse._SubParsersAction) -> None:
    batch = subparsers.add_parser("batch", help="submit a batch to the worker, read its status and results")
    actions = batch.add_subparsers(dest="batch_command", metavar="ACTION")
    actions.required = True
    submit = actions.add_parser("submit", help="submit FILE (OpenAI batch JSONL); prints the batch id")
    submit.add_argument("file")
    submit.add_argument("--priority", choices=["production", "test", "bulk"], default="bulk")
    submit.add_argument("--name", help="a label for the batch")
    for name, helptext in (
        ("status", "show a batch's status and counts"),
        ("results", "print the output JSONL"),
        ("cancel", "cancel the batch's queued requests"),
    ):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("batch_id", metavar="ID")
    for action in actions.choices.values():
        client_command(action, _batch)
        action.add_argument("--url", type=url_arg, help="the worker's base URL (default: from worker.listen)")


def _batch(args: argparse.Namespace, settings) -> int:
    from worker.client import WorkerClient

    found = getattr(args, "found", None)
    client = WorkerClient(settings, args.url, found=found.how if found else "")
    if args.batch_command == "submit":
        try:
            with open(args.file, "rb") as handle:
                data = handle.read()
        except OSError as err:
            raise HeadroomError(f"cannot read {args.file}: {err.strerror}") from None
        batch = client.submit(data, args.priority, args.name)
        print(batch["id"])
        print(f"{batch['request_counts']['total']} requests queued at priority {batch['priority']}", file=sys.stderr)
    elif args.batch_command == "status":
        print(json.dumps(client.status(args.batch_id), indent=2))
    elif args.batch_command == "results":
        sys.stdout.write(client.results(args.batch_id))
    else:
        print(json.dumps(client.cancel(args.batch_id), indent=2))
    return 0
