"""`headroom run`: lease, run CMD (argv, no shell) in its own memory cgroup, heartbeat, forward signals, release."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from headroom.client.http import Answer, GuardClient, GuardRejected, GuardUnreachable
from headroom.client.isolate import Isolation, create, remove
from headroom.client.lease import LeaseNotGranted, acquire, lease_body
from headroom.client.progress import ProgressLine
from headroom.errors import (EXIT_CANNOT_EXECUTE, EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_NOT_GRANTED,
                             EXIT_UNREACHABLE)
from headroom.sizes import format_size, parse_size

NO_GPU_HINT = ("the guard sees no GPU on this box (NVML reports none), so a --gpu lease can never be granted: "
               "drop --gpu to lease RAM only (GPU-less boxes: TESTING.md, \"No GPU here\")")

# Without --wait, `run` queues this long (the guard's default max_wait_seconds): making room by freeing the worker
# takes seconds to minutes, and someone who types `headroom run` expects it to run. --wait 0: never queue.
DEFAULT_WAIT_SECONDS = 600.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _say(text: str) -> None:
    print(f"headroom run: {text}", file=sys.stderr, flush=True)


def _isolation(args: argparse.Namespace, holder: str, run) -> Isolation:
    if args.no_isolate:
        return Isolation("none", "", None, None, reason="--no-isolate")
    margin = run.max_margin if args.max_margin is None else args.max_margin
    high = args.ram or None
    maximum = int(args.ram * (1 + margin)) if args.ram else None
    isolation = create(holder, high, maximum, parent=run.parent_cgroup)
    if isolation.kind == "none":
        _say(f"running without a memory cgroup: {isolation.reason}")
    else:
        _say(
            f"running in cgroup {isolation.cgroup} "
            f"({isolation.kind}; {isolation.describe_limits() or 'no memory limit'})"
        )
    return isolation


def resolve_command(cmd: list[str]) -> tuple[str | None, int, str]:
    """(path, 0, "") when CMD can be started; else (None, exit code, why): checked before any lease is asked for."""
    name = cmd[0]
    path = name if os.sep in name else shutil.which(name)
    if path is None or not os.path.exists(path):
        return None, EXIT_NOT_FOUND, f"cannot run {name}: command not found (nothing was leased)"
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        return None, EXIT_CANNOT_EXECUTE, f"cannot run {name}: not an executable file (nothing was leased)"
    return path, 0, ""


def ram_to_lease(args: argparse.Namespace, run) -> int | None:
    """--ram, else [run] default_ram; None when neither is given (then `run` refuses rather than run unlimited)."""
    if args.ram is not None:
        return args.ram
    return parse_size(run.default_ram) if run.default_ram else None


def run_command(args: argparse.Namespace, cmd: list[str], settings) -> int:
    holder = args.holder or Path(cmd[0]).name
    _path, code, why = resolve_command(cmd)
    if code:
        _say(why)
        return code
    args.ram = ram_to_lease(args, settings.run)
    if args.ram is None:
        _say(
            "give --ram SIZE (the RAM the command may use; it runs in a memory cgroup limited to it), or set "
            "[run] default_ram; --ram 0 runs with no RAM lease and no memory limit. Nothing was run"
        )
        return EXIT_CONFIG
    client = GuardClient.from_settings(settings, args.url, getattr(args, "found", None) and args.found.how)
    progress = ProgressLine(prefix="headroom run")
    wait = DEFAULT_WAIT_SECONDS if args.wait is None else args.wait
    try:
        if args.gpu and not client.gpus():
            _say(NO_GPU_HINT)
            return EXIT_CONFIG
        ttl = args.ttl or settings.run.ttl_seconds
        held = _acquire(
            client, lease_body(holder, args.gpu, args.ram, args.gpu_index, ttl, args.free_worker), wait, progress
        )
    except GuardUnreachable as err:
        _say(f"{err} (is `headroom guard` running? `headroom up` starts it); nothing was run")
        return EXIT_UNREACHABLE
    except LeaseNotGranted as err:
        progress.done(f"headroom run: not granted: {err}; retry after {err.answer.retry_after_seconds:.0f}s")
        return EXIT_NOT_GRANTED
    except GuardRejected as err:
        _say(f"{err}; nothing was run")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        progress.done("headroom run: cancelled while waiting; nothing was run")
        return EXIT_INTERRUPTED
    except Cancelled as err:
        progress.done(f"headroom run: cancelled while waiting ({err}); the request was withdrawn, nothing was run")
        return 128 + err.signum
    progress.done(
        f"headroom run: lease {held.id} granted: RAM {format_size(args.ram)}, GPU {format_size(args.gpu)}"
        + (f" on GPU {held.gpu}" if held.gpu is not None else "")
        + (" (--ram 0: no RAM is leased and the command has no memory limit)" if args.ram == 0 else "")
    )
    try:
        return _run_leased(args, cmd, held, _isolation(args, holder, settings.run))
    finally:
        held.release()
        client.close()


class Cancelled(Exception):
    """A signal (SIGINT, SIGTERM, SIGHUP) arrived while the request was queued; it was withdrawn."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


CANCELLING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, `timeout`/CI cancel/systemd, a closed terminal


def _acquire(client: GuardClient, body: dict, wait: float, progress: ProgressLine):
    """acquire() where SIGINT, SIGTERM and SIGHUP take effect between the guard's answers (at most POLL_SECONDS late),
    so the queued request is always known and withdrawn: the guard must not free the worker for someone who left."""
    received: list[int] = []
    queued: list[str] = []

    def update(answer: Answer, waited: float) -> None:
        if answer.lease_id and answer.lease_id not in queued:
            queued.append(answer.lease_id)
        if received:
            raise Cancelled(received[0])
        progress.update(answer, waited)

    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in CANCELLING}
    try:
        held = acquire(client, body, wait, update)
    except (Cancelled, KeyboardInterrupt):
        for lease_id in queued:
            with contextlib.suppress(Exception):
                client.release(lease_id)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:  # granted in the same answer that followed the signal
        held.release()
        raise Cancelled(received[0])
    return held


def _run_leased(args, cmd: list[str], held, isolation: Isolation) -> int:
    env = dict(os.environ, HEADROOM_LEASE_ID=held.id)
    if held.gpu is not None and args.gpu:
        env["CUDA_VISIBLE_DEVICES"] = str(held.gpu)
    interactive = sys.stdin.isatty()
    try:
        child = subprocess.Popen(
            isolation.argv_prefix + cmd,
            env=env,
            preexec_fn=isolation.preexec(),
            process_group=None if interactive else 0,
        )
    except (FileNotFoundError, PermissionError) as err:
        remove(isolation)
        _say(f"cannot run {cmd[0]}: {err.strerror}")
        return EXIT_NOT_FOUND if isinstance(err, FileNotFoundError) else EXIT_CANNOT_EXECUTE
    previous = {sig: signal.signal(sig, _forwarder(child, interactive)) for sig in FORWARDED}
    try:
        held.register_pid(child.pid)
        held.start_heartbeats()
        code = child.wait()
    except Exception as err:  # the guard went away mid-run: the command goes on, the lease expires by itself
        _say(f"lost contact with the guard ({err}); waiting for the command")
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _report_oom(isolation, code)
    remove(isolation)
    return 128 - code if code < 0 else code


def _forwarder(child: subprocess.Popen, interactive: bool):
    def forward(signum, _frame):
        if interactive and signum == signal.SIGINT:
            return  # the terminal already sent Ctrl-C to CMD, which shares our process group
        if child.poll() is None:
            child.send_signal(signum)

    return forward


def _report_oom(isolation: Isolation, code: int) -> None:
    if code == -signal.SIGKILL and (isolation.oom_kills() or 0) > 0:
        _say(
            f"the command was OOM-killed inside its own cgroup {isolation.cgroup} "
            f"(memory.max {format_size(isolation.max_bytes)}): ask for more --ram; nothing else was touched"
        )
