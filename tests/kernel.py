"""Real memory cgroups for tests: created with a small limit, a process placed in them, removed afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class MemoryCgroup:
    path: str  # "/headroom-test-ab12", as the exporter labels it
    directory: Path
    version: int

    def procs_file(self) -> Path:
        return self.directory / "cgroup.procs"

    def usage_bytes(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return int((self.directory / name).read_text())


def memory_root() -> tuple[Path, int]:
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return CGROUP_ROOT, 2
    return CGROUP_ROOT / "memory", 1


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int, prefix: str = "headroom-test"):
    """A fresh memory cgroup at the hierarchy root with `limit_bytes`; every process in it is killed at the end."""
    root, version = memory_root()
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    directory = root / name
    directory.mkdir()
    try:
        if version == 2:
            (directory / "memory.max").write_text(str(limit_bytes))
            (directory / "memory.swap.max").write_text("0") if (directory / "memory.swap.max").exists() else None
        else:
            (directory / "memory.limit_in_bytes").write_text(str(limit_bytes))
            no_swap_v1(directory, limit_bytes)
        yield MemoryCgroup(path="/" + name, directory=directory, version=version)
    finally:
        _empty_and_remove(directory)


def no_swap_v1(directory: Path, limit_bytes: int) -> None:
    """cgroup v1: RAM+swap = RAM, so a swap file another test switched on never changes what this cgroup may use."""
    memsw = directory / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        memsw.write_text(str(limit_bytes))


def _empty_and_remove(directory: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()] if directory.exists() else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)  # only processes this test put into its own cgroup
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"could not remove test cgroup {directory}")


def spawn_in_cgroup(cgroup: MemoryCgroup, code: str, **popen_args) -> subprocess.Popen:
    """Run `python -c code` inside `cgroup` (it joins before exec, so every byte is charged there)."""
    procs = str(cgroup.procs_file())

    def join():
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))

    return subprocess.Popen([sys.executable, "-c", code], preexec_fn=join, **popen_args)


# A child that names itself `comm`, holds `hold_mb`, says "ready", then on a line from stdin allocates `grow_mb`.
ALLOCATOR = """
import ctypes, sys
ctypes.CDLL(None).prctl(15, {comm!r}.encode(), 0, 0, 0)
held = b"x" * ({hold_mb} * 2**20)
print("ready", flush=True)
sys.stdin.readline()
more = b"y" * ({grow_mb} * 2**20)
print("survived", flush=True)
sys.stdin.readline()
"""
