"""One cgroup path in every hierarchy (cgroup2, v1 freezer, memory): its directories, processes and memory, and whether
headroom is inside it; the model the cgroup worker target (guard/targets/cgroup_target.py) acts on."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from exporter.cgroupfs import detect_memory_root, hierarchy_roots, parse_flat_keyed
from exporter.units import find_unit_path, is_unit_name, parse_proc_cgroup
from guard.protect import cgroupctl
from guard.protect.procinfo import is_headroom, read_cmdline

# One cgroup path, several hierarchies. On a hybrid host (this one) "/a/b" may exist as unified/a/b (cgroup2, which
# freezes), freezer/a/b (v1 freezer) and memory/a/b (v1 memory); systemd creates a unit's cgroup in all of them. The
# worker cgroup is the same path in each: freezing uses cgroup2 when it has cgroup.freeze there, else the v1 freezer;
# memory is read where the memory controller is (cgroup2 memory.current on a pure v2 host, else v1 memory); the worker's
# processes are the union of every hierarchy's cgroup.procs at that path and below it.
ANON_SLACK_BYTES = (
    4 * 2**20
)  # per-CPU charge batching: a cgroup with no process left may still read a few pages of anon


@dataclass(frozen=True)
class Memory:
    """What the worker's memory cgroup holds now; all zero when the cgroup is gone."""

    usage_bytes: int  # memory.current / memory.usage_in_bytes: anon + page cache + kernel
    anon_bytes: int  # anonymous memory (v2 anon, v1 total_rss): gone only when its processes are
    shmem_bytes: int  # tmpfs/shm pages, which outlive the processes that made them


def memory_from(usage_text: str, stat_text: str, version: int) -> Memory:
    stats = parse_flat_keyed(stat_text)
    if version == 2:
        return Memory(int(usage_text), stats.get("anon", 0), stats.get("shmem", 0))
    return Memory(
        int(usage_text), stats.get("total_rss", stats.get("rss", 0)), stats.get("total_shmem", stats.get("shmem", 0))
    )


@dataclass(frozen=True)
class WorkerCgroup:
    """The worker's cgroup path, looked up afresh in each hierarchy under `cgroupfs` every time (it may come and go)."""

    path: str  # "/system.slice/my-worker.service"
    cgroupfs: Path = Path("/sys/fs/cgroup")

    def _in(self, root: Path | None) -> Path | None:
        return root / self.path.lstrip("/") if root is not None else None

    def directories(self) -> list[Path]:
        """This path in every hierarchy that has it."""
        return [d for d in (self._in(r) for r in hierarchy_roots(self.cgroupfs)) if d.is_dir()]

    def exists(self) -> bool:
        return bool(self.directories())

    def freezer(self) -> cgroupctl.FreezerCgroup | None:
        return cgroupctl.freezer_of(self.cgroupfs, self.path)

    def pids(self) -> list[int]:
        return sorted({pid for directory in self.directories() for pid in cgroupctl.pids_under(directory)})

    def memory(self) -> Memory:
        found = detect_memory_root(self.cgroupfs)
        if found is not None:
            directory, version = found[0] / self.path.lstrip("/"), found[1]
            usage = "memory.current" if version == 2 else "memory.usage_in_bytes"
            with contextlib.suppress(OSError, ValueError):
                return memory_from((directory / usage).read_text(), (directory / "memory.stat").read_text(), version)
        return Memory(0, 0, 0)


def resolve(value: str, cgroupfs: Path = Path("/sys/fs/cgroup")) -> str | None:
    """A cgroup path or a systemd unit name -> the cgroup path that exists in some hierarchy; None when none has it."""
    roots = hierarchy_roots(cgroupfs)
    if is_unit_name(value):
        for root in roots:
            found = find_unit_path(root, value)  # the exporter's lookup: its default place, then a bounded search
            if found:
                return found
        return None
    return value if value.startswith("/") and any((r / value.lstrip("/")).is_dir() for r in roots) else None


def _within(inner: str, outer: str) -> bool:
    return outer.rstrip("/") == "" or inner == outer or inner.startswith(outer.rstrip("/") + "/")


def holds_headroom(cg: WorkerCgroup, procfs: Path = Path("/proc"), own_pid: int | None = None) -> str | None:
    """Why acting on `cg` would act on headroom itself (this process, or a headroom process inside it); None if not."""
    own_pid = own_pid or os.getpid()
    with contextlib.suppress(OSError):
        own = parse_proc_cgroup((procfs / str(own_pid) / "cgroup").read_text())
        for key, name in (("", "cgroup2"), ("freezer", "freezer"), ("memory", "memory")):
            if key in own and _within(own[key], cg.path):
                return f"headroom itself (pid {own_pid}, in {name} cgroup {own[key]})"
    for pid in cg.pids():
        with contextlib.suppress(OSError):
            cmdline = read_cmdline(pid, procfs)
            if is_headroom(cmdline):
                return f"a headroom process (pid {pid}: {' '.join(cmdline).strip()[:120]})"
    return None


def gpu_process_bytes(gpus) -> dict[int, float]:
    """pid -> GPU bytes it holds over every GPU of a snapshot."""
    found: dict[int, float] = {}
    for gpu in gpus:
        for pid, used in gpu.processes.items():
            found[pid] = found.get(pid, 0.0) + used
    return found
