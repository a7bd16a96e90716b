"""A memory cgroup of its own for a command: a systemd scope where systemd runs, else a cgroup v2/v1 directory."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from exporter.cgroupfs import detect_memory_root, parse_flat_keyed, parse_limit
from headroom.sizes import format_size

log = logging.getLogger("headroom.isolate")
CGROUP_ROOT = Path("/sys/fs/cgroup")  # the default cgroupfs; create() takes another (tests, containers)
SLICE = "headroom.slice"


@dataclass
class Isolation:
    """Where the command runs. `argv_prefix` wraps the command (systemd-run); `directory` is joined before exec."""

    kind: str  # "systemd-scope", "cgroup-v2", "cgroup-v1" or "none"
    cgroup: str  # path under the memory hierarchy root, e.g. /headroom.slice/headroom-run-olmo-1a2b.scope
    high_bytes: int | None
    max_bytes: int | None
    argv_prefix: list[str] = field(default_factory=list)
    directory: Path | None = None
    reason: str = ""  # why there is no isolation, when kind == "none"
    limits: dict[str, int | None] = field(default_factory=dict)  # limit file or systemd property -> bytes it holds

    def describe_limits(self) -> str:
        """What was really set, by its own name: 'memory.limit_in_bytes 1.8 GiB, memory.soft_limit_in_bytes 1.6 GiB'."""
        return ", ".join(
            f"{name} {format_size(value) if value is not None else 'unlimited'}" for name, value in self.limits.items()
        )

    def preexec(self):
        """A preexec_fn that moves the child into the cgroup before it runs a single instruction of CMD."""
        if self.directory is None:
            return None
        procs = str(self.directory / "cgroup.procs")

        def join() -> None:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))

        return join

    def oom_kills(self) -> int | None:
        """OOM kills inside the cgroup so far (None when unknown)."""
        if self.directory is None:
            return None
        name = "memory.events" if self.kind == "cgroup-v2" else "memory.oom_control"
        with contextlib.suppress(OSError):
            return parse_flat_keyed((self.directory / name).read_text()).get("oom_kill")
        return None


def _unit_name(holder: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in holder)[:40] or "run"
    return f"headroom-run-{safe}-{uuid.uuid4().hex[:6]}"


def _systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemd-run") is not None


def create(
    holder: str,
    high_bytes: int | None,
    max_bytes: int | None,
    parent: str = SLICE,
    prefer_systemd: bool = True,
    cgroupfs: Path = CGROUP_ROOT,
) -> Isolation:
    """A fresh memory cgroup for `holder` under `parent` with memory.high/max; kind "none" (with the reason) if
    impossible."""
    name = _unit_name(holder)
    if prefer_systemd and parent.endswith(".slice") and "/" not in parent and _systemd_running():
        return _systemd_scope(parent, name, high_bytes, max_bytes, cgroupfs)
    found = detect_memory_root(cgroupfs)
    if found is None:
        return Isolation("none", "", high_bytes, max_bytes, reason="no memory cgroup controller is mounted")
    root, version = found
    try:
        return _make_directory(root, version, parent.strip("/") or SLICE, name, high_bytes, max_bytes)
    except PermissionError:
        return Isolation(
            "none",
            "",
            high_bytes,
            max_bytes,
            reason=f"no permission to create a cgroup under {root} (run as root, or under systemd)",
        )


def _systemd_scope(parent: str, name: str, high_bytes: int | None, max_bytes: int | None, cgroupfs: Path) -> Isolation:
    """A transient scope; on a cgroup v1 host systemd has no MemoryHigh, so only MemoryMax (memory.limit_in_bytes) is
    set."""
    found = detect_memory_root(cgroupfs)
    v1 = found is not None and found[1] == 1
    prefix = ["systemd-run", "--scope", "--quiet", "--collect", f"--slice={parent}", f"--unit={name}.scope"]
    limits: dict[str, int | None] = {}
    if high_bytes and not v1:
        prefix += ["-p", f"MemoryHigh={high_bytes}"]
        limits["MemoryHigh"] = high_bytes
    if max_bytes:
        prefix += ["-p", f"MemoryMax={max_bytes}"]
        limits["MemoryMax (memory.limit_in_bytes)" if v1 else "MemoryMax"] = max_bytes
    if os.geteuid() != 0:
        prefix.insert(1, "--user")
    high = None if v1 else high_bytes
    return Isolation(
        "systemd-scope", f"/{parent}/{name}.scope", high, max_bytes, argv_prefix=prefix + ["--"], limits=limits
    )


def _make_directory(
    root: Path, version: int, parent_path: str, name: str, high: int | None, maximum: int | None
) -> Isolation:
    parent = root / parent_path
    parent.mkdir(parents=True, exist_ok=True)
    if version == 2:
        for level in (root, parent):  # children of both need the memory controller
            with contextlib.suppress(OSError):
                (level / "cgroup.subtree_control").write_text("+memory")
    directory = parent / name
    directory.mkdir()
    if version == 2:
        if high:
            (directory / "memory.high").write_text(str(high))
        if maximum:
            (directory / "memory.max").write_text(str(maximum))
        with contextlib.suppress(OSError):
            (directory / "memory.swap.max").write_text("0")  # the lease is RAM: do not let CMD thrash swap
    else:
        if maximum:
            (directory / "memory.limit_in_bytes").write_text(str(maximum))
            with contextlib.suppress(OSError):  # memory+swap at the same bound: as on v2, CMD never thrashes swap
                (directory / "memory.memsw.limit_in_bytes").write_text(str(maximum))
        if high:  # v1 has no memory.high; the soft limit makes the kernel reclaim from CMD first
            (directory / "memory.soft_limit_in_bytes").write_text(str(high))
    kind = "cgroup-v2" if version == 2 else "cgroup-v1"
    if version == 2:
        wanted = (("memory.high", high), ("memory.max", maximum))
    else:
        wanted = (("memory.limit_in_bytes", maximum), ("memory.soft_limit_in_bytes", high))
    # read back: the kernel rounds to pages; 'max' and v1's huge value mean unlimited
    limits = {file: parse_limit((directory / file).read_text()) for file, value in wanted if value}
    return Isolation(kind, f"/{parent_path}/{name}", high, maximum, directory=directory, limits=limits)


def remove(isolation: Isolation, timeout: float = 5.0) -> None:
    """Remove the cgroup directory once its processes are gone (systemd collects its own scopes)."""
    if isolation.directory is None:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            isolation.directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if time.monotonic() > deadline:
                log.warning("could not remove %s: %s", isolation.directory, err)
                return
            time.sleep(0.05)
