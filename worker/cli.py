"""`headroom worker` (the server) and `headroom batch submit|status|results|cancel` (its client)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from headroom.cli import add_config_argument

    worker = subparsers.add_parser("worker", help="run the vLLM batch worker (job API, control endpoint, /metrics)")
    add_config_argument(worker)
    worker.add_argument("--listen", metavar="HOST:PORT", help="override worker.listen (default 127.0.0.1:9842)")
    worker.add_argument("--oom-score-adj", type=int, metavar="N", help="override worker.oom_score_adj (default -500)")
    worker.set_defaults(func=_run_worker)

    batch = subparsers.add_parser("batch", help="submit a batch to the worker, read its status and results")
    actions = batch.add_subparsers(dest="batch_command", metavar="ACTION")
    actions.required = True
    submit = actions.add_parser("submit", help="submit FILE (OpenAI batch JSONL); prints the batch id")
    submit.add_argument("file")
    submit.add_argument("--priority", choices=["production", "test", "bulk"], default="bulk")
    submit.add_argument("--name", help="a label for the batch")
    for name, helptext in (("status", "show a batch's status and counts"), ("results", "print the output JSONL"),
                           ("cancel", "cancel the batch's queued requests")):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("batch_id", metavar="ID")
    for action in actions.choices.values():
        add_config_argument(action)
        action.add_argument("--url", help="the worker's base URL (default: from worker.listen)")
        action.set_defaults(func=_batch)


def _run_worker(args: argparse.Namespace) -> int:
    from headroom.cli import setup_logging
    from headroom.config import load_settings
    from worker.server import serve

    overrides = {k: v for k, v in (("listen", args.listen), ("oom_score_adj", args.oom_score_adj)) if v is not None}
    settings = load_settings(args.config, **({"worker": overrides} if overrides else {}))
    setup_logging(settings.log_level)
    set_oom_score_adj(settings.worker.oom_score_adj)
    return serve(settings)


def set_oom_score_adj(value: int | None, proc_self: str = "/proc/self") -> bool:
    """Write the worker's oom_score_adj (inherited by the engine processes it starts); refused: a warning, never fatal."""
    import logging

    if value is None:
        return False
    try:
        with open(f"{proc_self}/oom_score_adj", "w") as handle:
            handle.write(str(value))
        return True
    except OSError as err:
        logging.getLogger("headroom.worker").warning(
            "cannot set oom_score_adj to %d: %s (lowering it needs CAP_SYS_RESOURCE; under systemd the unit's "
            "OOMScoreAdjust= sets it)", value, err.strerror)
        return False


def _batch(args: argparse.Namespace) -> int:
    from headroom.config import load_settings
    from headroom.errors import HeadroomError
    from worker.client import WorkerClient

    client = WorkerClient(load_settings(args.config), args.url)
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
