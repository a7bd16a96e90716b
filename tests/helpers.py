"""Small helpers every test tier shares: ports, waiting, and 'missing dependency' handling."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
T = TypeVar("T")
FREEZE_ENV = "HEADROOM_GUARD__FREEZE__ENABLED"  # tests/conftest.py turns freezing off for every guard a test starts


def need(condition: bool, what: str) -> None:
    """Skip when `what` is missing, but fail loudly in CI (CI=true): a missing part is never hidden there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing in CI: {what}", pytrace=False)
    pytest.skip(f"missing: {what}")


def need_binary(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"the {name} binary (Debian package; `make test` installs it as root)")
    return path  # type: ignore[return-value]


def need_root_memory_cgroup() -> None:
    """Kernel tests create memory cgroups: root and a v1 memory hierarchy or v2 with the memory controller."""
    v1 = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    has_v2_memory = v2.exists() and "memory" in v2.read_text()
    need(os.geteuid() == 0 and (v1.exists() or has_v2_memory), "root and a writable memory cgroup hierarchy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """Call `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as err:  # the thing is not up yet
            last_error = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}")


def headroom_cmd(*args: str) -> list[str]:
    """argv for running the real `headroom` command line in a child process."""
    return [sys.executable, "-m", "headroom", *args]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """End a process this test started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def toml_value(value) -> str:
    """A TOML value: bool, number, string, list, or a dict as an inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def write_toml(path: Path, data: dict) -> Path:
    """Write a config file: top-level scalars, then one [section] per dict (enough for headroom's config)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path
