"""`headroom up`: run every configured part as its own child process, stop them all on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import subprocess
import sys
import time

from headroom.cliargs import settings_command
from headroom.logsetup import setup_logging

log = logging.getLogger("headroom.up")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("up", help="run exporter + guard (+ worker when configured) with embedded defaults")
    settings_command(parser, _up)


def planned_parts(settings) -> list[str]:
    """Which parts `up` starts: the exporter always, the guard once it is built, the worker when enabled."""
    parts = ["exporter"]
    if importlib.util.find_spec("guard.app") is not None:
        parts.append("guard")
    worker = getattr(settings, "worker", None)
    if worker is not None and getattr(worker, "enabled", False):
        parts.append("worker")
    return parts


def _up(args: argparse.Namespace, settings) -> int:
    """Start each part with the same --config; `settings` were validated whole before anything starts."""
    setup_logging(settings.log_level)
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for part in planned_parts(settings):
        argv = [sys.executable, "-m", "headroom", part] + (["--config", args.config] if args.config else [])
        children[part] = subprocess.Popen(argv)
        log.info("started %s (pid %d)", part, children[part].pid)
    code = 0
    while not stopping:
        for part, child in children.items():
            if child.poll() is not None:
                log.error("%s exited with status %s; stopping the others", part, child.returncode)
                code = child.returncode or 1
                stopping = True
                break
        time.sleep(0.2)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for part, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing pid %d", part, child.pid)
            child.kill()
            child.wait()
    return code
