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
GUARD_RESTARTS, GUARD_RESTART_WINDOW = 5, 60.0  # a guard that dies is started again, at most this often


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


def _start(part: str, config: str | None) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-m", "headroom", part] + (["--config", config] if config else []))
    log.info("started %s (pid %d)", part, child.pid)
    return child


def thaw_left_frozen(settings, why: str) -> None:
    """Thaw whatever a guard that is gone left recorded as frozen (`headroom thaw --all`, in-process)."""
    from guard.recovery import recover_at_start

    report = recover_at_start(settings.state_dir)  # logs one line per record
    if report is not None and report.lines():
        log.warning("%s: thawed what the guard had recorded as frozen", why)


def _up(args: argparse.Namespace, settings) -> int:
    """Start each part with the same --config; `settings` were validated whole before anything starts. A guard that
    dies is thawed after and started again (at most GUARD_RESTARTS times in GUARD_RESTART_WINDOW seconds); any other
    part that exits stops them all."""
    setup_logging(settings.log_level)
    children: dict[str, subprocess.Popen] = {}
    restarts: list[float] = []
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for part in planned_parts(settings):
        children[part] = _start(part, args.config)
    code = 0
    while not stopping:
        for part, child in children.items():
            if child.poll() is None:
                continue
            if part == "guard" and not stopping:
                thaw_left_frozen(settings, f"the guard exited with status {child.returncode}")
                restarts = [t for t in restarts if time.monotonic() - t < GUARD_RESTART_WINDOW] + [time.monotonic()]
                if len(restarts) <= GUARD_RESTARTS:
                    log.error("the guard exited with status %s; starting it again", child.returncode)
                    children[part] = _start(part, args.config)
                    break
            log.error("%s exited with status %s; stopping the others", part, child.returncode)
            code = child.returncode or 1
            stopping = True
            break
        time.sleep(0.2)
    _stop_all(children)
    if "guard" in children:
        thaw_left_frozen(settings, "stopping")  # a guard killed on the timeout below thaws nothing itself
    return code


def _stop_all(children: dict[str, subprocess.Popen]) -> None:
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
