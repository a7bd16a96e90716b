"""`headroom up`: run every configured part as its own child process, stop them all on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from headroom.cliargs import settings_command
from headroom.logsetup import setup_logging
from headroom.settings_base import base_url

log = logging.getLogger("headroom.up")
WORKER_URL_ENV = "HEADROOM_GUARD__WORKER__URL"
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


def part_env(part: str, settings, parts: list[str]) -> dict[str, str]:
    """The guard drives the worker `up` runs, with no extra key: [guard.worker] url defaults to the worker's listen."""
    env = dict(os.environ)
    guard = settings.guard
    if part == "guard" and "worker" in parts and not guard.worker.url and guard.worker.kind != "cgroup" \
            and WORKER_URL_ENV not in env:
        env[WORKER_URL_ENV] = base_url(settings.worker.listen)
    return env


class WorkerLog:
    """Passes the worker's stderr through and keeps its last `headroom:` line: why it could not start."""

    def __init__(self, stream) -> None:
        self.last_error = ""
        self.thread = threading.Thread(target=self._pump, args=(stream,), name="worker-stderr", daemon=True)
        self.thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.startswith("headroom: ") or "Error" in line.split(":")[0]:
                self.last_error = line.strip().removeprefix("headroom: ")


def _start(part: str, args, settings, parts: list[str]) -> tuple[subprocess.Popen, WorkerLog | None]:
    argv = [sys.executable, "-m", "headroom", part] + (["--config", args.config] if args.config else [])
    piped = part == "worker"
    child = subprocess.Popen(argv, env=part_env(part, settings, parts), stderr=subprocess.PIPE if piped else None,
                             text=piped or None)
    log.info("started %s (pid %d)", part, child.pid)
    return child, WorkerLog(child.stderr) if piped else None


def _pointer(args, settings, worker: dict) -> dict:
    config = os.path.abspath(args.config) if args.config else None
    return {"pid": os.getpid(), "config": config, "guard_url": base_url(settings.guard.listen),
            "state_dir": str(settings.state_dir), "worker": worker}


def _announce(settings, parts: list[str]) -> None:
    if "guard" in parts:
        url = base_url(settings.guard.listen)
        log.info("status page: %s/  (or `headroom status`; in another shell first: . .venv/bin/activate)", url)
    if "worker" in parts:
        log.info("worker: %s, driven by the guard", base_url(settings.worker.listen))


def _worker_failed(child: subprocess.Popen, logger: WorkerLog | None) -> str:
    if logger is not None:
        logger.thread.join(timeout=2)
    why = (logger.last_error if logger else "") or f"it exited with status {child.returncode}"
    log.error("the worker could not run: %s. Exporter and guard keep running (protection stays up); fix it and "
              "restart `headroom up`", why)
    return why


def thaw_left_frozen(settings, why: str) -> None:
    """Thaw whatever a guard that is gone left recorded as frozen (`headroom thaw --all`, in-process)."""
    from guard.protect.recovery import recover_at_start

    report = recover_at_start(settings.state_dir)  # logs one line per record
    if report is not None and report.lines():
        log.warning("%s: thawed what the guard had recorded as frozen", why)


def _up(args: argparse.Namespace, settings) -> int:
    """Start each part with the same --config; `settings` were validated whole before anything starts. A guard that
    dies is thawed after and started again (at most GUARD_RESTARTS times in GUARD_RESTART_WINDOW seconds); a worker
    that fails leaves protection up; any other part that exits stops them all."""
    from headroom.discover import remove_pointer, write_pointer

    setup_logging(settings.log_level)
    restarts: list[float] = []
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    parts = planned_parts(settings)
    started = {part: _start(part, args, settings, parts) for part in parts}
    children = {part: child for part, (child, _) in started.items()}
    worker = {"state": "running"} if "worker" in parts else {"state": "not enabled"}
    write_pointer(_pointer(args, settings, worker))
    _announce(settings, parts)
    code = 0
    try:
        while not stopping:
            for part, child in list(children.items()):
                if child.poll() is None:
                    continue
                if part == "worker":  # protection stays up: the thing it protects failing is no reason to stop it
                    worker = {"state": "failed", "error": _worker_failed(child, started[part][1])}
                    write_pointer(_pointer(args, settings, worker))
                    del children[part]
                    continue
                if part == "guard" and not stopping:
                    thaw_left_frozen(settings, f"the guard exited with status {child.returncode}")
                    now = time.monotonic()
                    restarts = [t for t in restarts if now - t < GUARD_RESTART_WINDOW] + [now]
                    if len(restarts) <= GUARD_RESTARTS:
                        log.error("the guard exited with status %s; starting it again", child.returncode)
                        children[part], _ = _start(part, args, settings, parts)
                        break
                log.error("%s exited with status %s; stopping the others", part, child.returncode)
                code = child.returncode or 1
                stopping = True
                break
            time.sleep(0.2)
    finally:
        remove_pointer(os.getpid())
        _stop_all(children)
        if "guard" in parts:
            thaw_left_frozen(settings, "stopping")  # a guard killed on the stop timeout thaws nothing itself
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
