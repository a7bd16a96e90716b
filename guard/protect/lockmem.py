"""Keep the guard's pages in RAM: mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT), with its cost in RSS."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("headroom.guard")
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        import os

        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def lock_memory() -> tuple[bool, int, str]:
    """(locked, RSS growth in bytes, note). MCL_ONFAULT locks pages as they are touched, so the 8 MiB thread stacks
    and untouched library pages are not pulled in: the cost is what the guard really uses. Refused without
    CAP_IPC_LOCK or a large enough LimitMEMLOCK: the guard runs on, and says so."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    before = rss_bytes()
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        err = ctypes.get_errno()
        import os

        return False, 0, f"mlockall refused: {os.strerror(err)} (give the unit LimitMEMLOCK=infinity or CAP_IPC_LOCK)"
    grown = rss_bytes() - before
    return (
        True,
        grown,
        f"memory locked (mlockall on fault); RSS grew by {grown / 2**20:.1f} MiB to {rss_bytes() / 2**20:.1f} MiB",
    )


def unlock_memory() -> None:
    ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).munlockall()
