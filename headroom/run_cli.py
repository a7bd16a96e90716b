"""`headroom check` and `headroom run`: ask the guard before loading a model (replacing check_resources.sh and
test_model_safely.sh from the seed)."""

from __future__ import annotations

import argparse
import json
import sys

EXIT_UNREACHABLE = 2  # check: the guard cannot be reached (fail closed)
EXIT_RUN_UNAVAILABLE = 69  # run: the guard cannot be reached (EX_UNAVAILABLE)
EXIT_RUN_NOT_GRANTED = 75  # run: refused, or the wait ran out (EX_TEMPFAIL: try again later)
# `headroom run` without --wait queues this long (the guard's default max_wait_seconds): making room by freeing
# the worker takes seconds to minutes, and someone who types `headroom run` expects it to run. --wait 0: never queue.
DEFAULT_WAIT_SECONDS = 600.0


def _size(text: str) -> int:
    from headroom.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _duration(text: str) -> float:
    from headroom.sizes import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _common(parser: argparse.ArgumentParser) -> None:
    from headroom.cli import add_config_argument

    add_config_argument(parser)
    parser.add_argument("--gpu", type=_size, default=0, metavar="SIZE", help="GPU memory, e.g. 14GiB, 512MiB, 14G (1024-based), 14GB (10^9)")
    parser.add_argument("--ram", type=_size, default=0, metavar="SIZE", help="RAM, same forms as --gpu")
    parser.add_argument("--gpu-index", metavar="N|UUID", help="which GPU (default: any that fits)")
    parser.add_argument("--url", help="the guard's URL (default: from [guard] listen)")


def register(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser("check", help="would the guard grant GPU/RAM now? exit 0 yes, 1 no, 2 guard unreachable")
    _common(check)
    check.add_argument("--if-unreachable", choices=("fail", "allow"), default="fail", help="exit 0 instead of 2 when the guard is down")
    check.add_argument("--json", action="store_true", help="print the answer as JSON")
    check.set_defaults(func=_check)
    run = subparsers.add_parser("run", help="lease GPU/RAM from the guard, run CMD in its own memory cgroup, release")
    _common(run)
    run.add_argument("--free-worker", action="store_true", help="let the guard free the worker to make room (restored after)")
    run.add_argument("--wait", type=_duration, default=None, metavar="DURATION",
                     help="queue up to this long, with a live progress line, e.g. 90s (default 10m; 0: give up at once)")
    run.add_argument("--holder", help="name shown in leases and events (default: CMD's name)")
    run.add_argument("--ttl", type=int, metavar="SECONDS", help="lease TTL, renewed by heartbeats (default [run] ttl_seconds, 60)")
    run.add_argument("--max-margin", type=float, metavar="RATIO",
                     help="memory.max = RAM lease x (1 + RATIO); memory.high = the RAM lease (default [run] max_margin, 0.10)")
    run.add_argument("--no-isolate", action="store_true", help="do not create a memory cgroup for CMD")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")
    run.set_defaults(func=_run)


def _check(args: argparse.Namespace) -> int:
    from headroom.client import GuardClient, GuardRejected, GuardUnreachable
    from headroom.config import load_settings
    from headroom.lease import describe_refusal, lease_body

    client = GuardClient.from_settings(load_settings(args.config), args.url)
    try:
        answer = client.check(lease_body("headroom-check", args.gpu, args.ram, args.gpu_index))
    except GuardRejected as err:
        _emit(args, {"ok": False, "status": "rejected", "reason": str(err)}, f"no: {err}")
        return 1
    except GuardUnreachable as err:
        allowed = args.if_unreachable == "allow"
        _emit(args, {"ok": allowed, "status": "unreachable", "reason": str(err)}, f"{'allowed' if allowed else 'no'}: {err}")
        return 0 if allowed else EXIT_UNREACHABLE
    finally:
        client.close()
    ok = answer.status in ("granted", "would_grant")
    text = "yes: the guard would grant it now" if ok else f"no: {describe_refusal(answer)}"
    _emit(args, {"ok": ok, "status": answer.status, "reason": answer.reason, "shortfall": answer.shortfall,
                 "retry_after_seconds": answer.retry_after_seconds}, text)
    return 0 if ok else 1


def _emit(args, payload: dict, text: str) -> None:
    print(json.dumps(payload) if args.json else text, file=sys.stdout)


def _run(args: argparse.Namespace) -> int:
    from headroom.runner import run_command

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("headroom run: give the command after --, e.g. headroom run --gpu 14GiB -- python test.py", file=sys.stderr)
        return 2
    return run_command(args, cmd)
