"""The cgroup worker target's steps that know nothing of the target: run a configured command, thaw recorded cgroups,
wait for a condition."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from guard.protect import cgroupctl


def run_argv(argv: list[str], timeout: float) -> str | None:
    """Run a configured command (never through a shell); None when it exited 0, else what went wrong."""
    with tempfile.TemporaryFile() as err:  # not a pipe: a daemon the command starts would hold it open
        try:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return f"{argv[0]} did not finish within {timeout:g}s"
        except OSError as error:
            return f"cannot run {argv[0]}: {error}"
        if rc == 0:
            return None
        err.seek(0)
        return f"{' '.join(argv)} exited {rc}: {err.read()[-300:].decode(errors='replace').strip()}"


def thaw_recorded(items: list[dict]) -> list[dict]:
    """Thaw each cgroup recorded as frozen in the state store ({"path", "directory", "version"}); the items."""
    for item in items:
        cgroupctl.thaw(cgroupctl.FreezerCgroup(item["path"], Path(item["directory"]), int(item["version"])))
    return items


def wait_until(probe: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
