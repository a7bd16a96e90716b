"""systemd's notify protocol over $NOTIFY_SOCKET: READY=1 once serving, WATCHDOG=1 pings, STOPPING=1 (no libsystemd)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Callable

log = logging.getLogger("headroom.sdnotify")


def notify(message: str, environ=os.environ) -> bool:
    """Send `message` to the service manager; False when not under systemd (no $NOTIFY_SOCKET)."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as err:
        log.warning("cannot notify systemd at %s: %s", environ.get("NOTIFY_SOCKET"), err)
        return False


def watchdog_interval(environ=os.environ) -> float | None:
    """Half of WatchdogSec (from $WATCHDOG_USEC, if meant for this pid), as systemd recommends; None when off."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


def start_watchdog(healthy: Callable[[], bool] = lambda: True, environ=os.environ) -> threading.Event | None:
    """Ping WATCHDOG=1 every half period while `healthy()`; a hung process stops pinging and systemd restarts it."""
    interval = watchdog_interval(environ)
    if interval is None:
        return None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            if healthy():
                notify("WATCHDOG=1", environ)
            else:
                log.error("not healthy: withholding the watchdog ping")

    threading.Thread(target=loop, name="sd-watchdog", daemon=True).start()
    return stop


def ready(status: str = "", environ=os.environ, healthy: Callable[[], bool] = lambda: True) -> None:
    notify("READY=1" + (f"\nSTATUS={status}" if status else ""), environ)
    start_watchdog(healthy, environ=environ)
