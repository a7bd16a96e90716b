"""Swap for a test only: a swap file in the test's temp dir, switched on for the test's own cgroup, always switched off.

The host's other test cgroups are pinned to RAM + 0 swap (tests/kernel.py no_swap_v1), so only the cgroup given an
allowance here may swap while the file is on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

GiB = 2**30


@contextlib.contextmanager
def swap_file(directory: Path, size_bytes: int = 3 * GiB):
    """fallocate + chmod 600 + mkswap + swapon; swapoff and removal afterwards, even on failure."""
    path = directory / "headroom-test.swap"
    try:
        subprocess.run(["fallocate", "-l", str(size_bytes), str(path)], check=True)
        os.chmod(path, 0o600)
        subprocess.run(["mkswap", str(path)], check=True, capture_output=True)
        subprocess.run(["swapon", str(path)], check=True, capture_output=True)
        try:
            yield path
        finally:
            switch_off(path)
    finally:
        path.unlink(missing_ok=True)


def switch_off(path: Path, tries: int = 20) -> None:
    """swapoff, retried: it fails (EBUSY, ENOMEM) while a cgroup that swapped is still being torn down; loud if it never works."""
    error = ""
    for _ in range(tries):
        done = subprocess.run(["swapoff", str(path)], capture_output=True, text=True)
        active = str(path) in Path("/proc/swaps").read_text()
        if done.returncode == 0 or not active:
            return
        error = done.stderr.strip()
        time.sleep(0.5)
    raise RuntimeError(f"swapoff {path} failed {tries} times: {error}; run `swapoff {path}` by hand")


def allow_swap(directory: Path, version: int, limit_bytes: int, swap_bytes: int) -> None:
    """Let the test's own cgroup use `swap_bytes` of swap beside its RAM limit (v1 memsw = limit + swap, v2 swap.max)."""
    if version == 1:
        (directory / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes + swap_bytes))
    else:
        (directory / "memory.swap.max").write_text(str(swap_bytes))


def swap_supported() -> str | None:
    """None when this host can make a test swap file; else why not."""
    if os.geteuid() != 0:
        return "root (swapon)"
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return next((tool for tool in ("swapon", "swapoff", "mkswap", "fallocate") if shutil.which(tool, path=path) is None), None)
