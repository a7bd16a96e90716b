"""`headroom check` and `headroom run`: ask the guard before loading a model (the lease client's commands)."""

from __future__ import annotations

import argparse
import json
import sys

from headroom.cliargs import client_command, margin_ratio, ttl_seconds, url_arg
from headroom.errors import EXIT_CONFIG, EXIT_NO, EXIT_OK, EXIT_UNREACHABLE
from headroom.sizes import parse_duration, parse_size


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _common(parser: argparse.ArgumentParser, handler) -> None:
    client_command(parser, handler)
    parser.add_argument(
        "--gpu",
        type=_size,
        default=0,
        metavar="SIZE",
        help="GPU memory, e.g. 14GiB, 512MiB, 14G (1024-based), 14GB (10^9)",
    )
    parser.add_argument("--ram", type=_size, default=None, metavar="SIZE", help="RAM, same forms as --gpu")
    parser.add_argument("--gpu-index", metavar="N|UUID", help="which GPU (default: any that fits)")
    parser.add_argument("--url", type=url_arg, help="the guard's URL (default: from [guard] listen)")


def register(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check",
        help=f"would the guard grant GPU/RAM now? exit 0 yes, {EXIT_NO} no, {EXIT_UNREACHABLE} guard unreachable",
    )
    _common(check, _check)
    check.add_argument(
        "--if-unreachable",
        choices=("fail", "allow"),
        default="fail",
        help=f"exit 0 instead of {EXIT_UNREACHABLE} when the guard is down",
    )
    check.add_argument("--json", action="store_true", help="print the answer as JSON")
    check.add_argument("--free-worker", action="store_true", help="would it fit if the guard freed the worker?")
    run = subparsers.add_parser("run", help="lease GPU/RAM from the guard, run CMD in its own memory cgroup, release")
    _common(run, _run)
    run.add_argument(
        "--free-worker", action="store_true", help="let the guard free the worker to make room (restored after)"
    )
    run.add_argument(
        "--wait",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="queue up to this long, with a live progress line, e.g. 90s (default 10m; 0: give up at once)",
    )
    run.add_argument("--holder", help="name shown in leases and events (default: CMD's name)")
    run.add_argument(
        "--ttl",
        type=ttl_seconds,
        metavar="SECONDS",
        help="lease TTL, renewed by heartbeats (default [run] ttl_seconds, 60)",
    )
    run.add_argument(
        "--max-margin",
        type=margin_ratio,
        metavar="RATIO",
        help="memory.max = RAM lease x (1 + RATIO); memory.high = the RAM lease (default [run] max_margin, 0.10)",
    )
    run.add_argument("--no-isolate", action="store_true", help="do not create a memory cgroup for CMD")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")


def _check(args: argparse.Namespace, settings) -> int:
    from headroom.client.http import GuardClient, GuardRejected, GuardUnreachable
    from headroom.client.lease import describe_refusal, lease_body

    client = GuardClient.from_settings(settings, args.url, getattr(args, "found", None) and args.found.how)
    try:
        if args.gpu and not client.gpus():
            from headroom.client.runner import NO_GPU_HINT

            _emit(args, {"ok": False, "status": "no_gpu", "reason": NO_GPU_HINT}, f"no: {NO_GPU_HINT}")
            return EXIT_NO
        answer = client.check(
            lease_body("headroom-check", args.gpu, args.ram, args.gpu_index, free_worker=args.free_worker)
        )
    except GuardRejected as err:  # the same refusal `run` exits 2 for: a bad field or token
        _emit(args, {"ok": False, "status": "rejected", "reason": str(err)}, f"no: {err}")
        return EXIT_CONFIG
    except GuardUnreachable as err:
        allowed = args.if_unreachable == "allow"
        _emit(
            args,
            {"ok": allowed, "status": "unreachable", "reason": str(err)},
            f"{'allowed' if allowed else 'no'}: {err}",
        )
        return EXIT_OK if allowed else EXIT_UNREACHABLE
    finally:
        client.close()
    ok = answer.status in ("granted", "would_grant") or (args.free_worker and answer.needs_free)
    text = (
        (
            "yes: the guard would grant it once it has freed the worker"
            if answer.needs_free
            else "yes: the guard would grant it now"
        )
        if ok
        else f"no: {describe_refusal(answer)}"
    )
    _emit(
        args,
        {
            "ok": ok,
            "status": answer.status,
            "reason": answer.reason,
            "shortfall": answer.shortfall,
            "retry_after_seconds": answer.retry_after_seconds,
        },
        text,
    )
    return EXIT_OK if ok else EXIT_NO


def _emit(args, payload: dict, text: str) -> None:
    print(json.dumps(payload) if args.json else text, file=sys.stdout)


def _run(args: argparse.Namespace, settings) -> int:
    from headroom.client.runner import run_command

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print(
            "headroom run: give the command after --, e.g. headroom run --gpu 14GiB -- python test.py", file=sys.stderr
        )
        return EXIT_CONFIG
    return run_command(args, cmd, settings)
