"""One protection run on the real kernel: a worker and an unleased grower in a test memory cgroup (test and bench).

The kernel is the judge: OOM kills come from the cgroup's own counter, the threshold crossing from a memory
threshold eventfd the harness registers itself (cgroup v1), the freeze and thaw times from the guard's events.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.guard.realstack import MiB, MemoryCgroup
from tests.helpers import REPO

GROWER = Path(__file__).with_name("grower.py")
WORKER_OOM_SCORE_ADJ = -500  # what `headroom worker` sets by default (worker.oom_score_adj)


def oom_kills(cgroup: MemoryCgroup) -> int:
    """The cgroup's own OOM kill counter (v1 memory.oom_control, v2 memory.events)."""
    name = "memory.events" if cgroup.version == 2 else "memory.oom_control"
    for line in (cgroup.path / name).read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


class Crossing:
    """When the cgroup's usage first rose through `usage_bytes`, as the kernel notifies it (v1 eventfd threshold)."""

    def __init__(self, cgroup: MemoryCgroup, usage_bytes: int):
        self.cgroup, self.usage_bytes = cgroup, usage_bytes
        self.times: list[float] = []
        self.available = cgroup.version == 1
        self._stop = threading.Event()
        if not self.available:
            return
        self.efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.ufd = os.open(cgroup.path / "memory.usage_in_bytes", os.O_RDONLY)
        (cgroup.path / "cgroup.event_control").write_text(f"{self.efd} {self.ufd} {usage_bytes}")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.efd], [], [], 0.2)
            if ready:
                now = time.time()
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self.efd)
                if self.cgroup.usage() >= self.usage_bytes - 4 * MiB:  # upward crossings only
                    self.times.append(now)

    def first_after(self, t: float) -> float | None:
        return next((x for x in self.times if x >= t), None)

    def close(self) -> None:
        self._stop.set()
        if self.available:
            self.thread.join(timeout=2)
            os.close(self.efd)
            os.close(self.ufd)


def start_grower(cgroup: MemoryCgroup, target_mib: int, rate_mbs: float, log: Path) -> subprocess.Popen:
    """The unleased newcomer: its own session (so a SIGSTOP to its group reaches nothing of the test's), in the cgroup."""
    return subprocess.Popen([sys.executable, str(GROWER), "--target-mib", str(target_mib), "--rate-mbs", str(rate_mbs)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True, preexec_fn=cgroup.join,
                            start_new_session=True)


def protect_worker(pid: int, adj: int = WORKER_OOM_SCORE_ADJ) -> bool:
    """The kernel backstop, as `headroom worker` sets it; lowering needs CAP_SYS_RESOURCE (absent in some containers)."""
    try:
        Path(f"/proc/{pid}/oom_score_adj").write_text(str(adj))
        return True
    except PermissionError:
        return False


@dataclass
class RunResult:
    rate_mbs: float
    oom_kills: int
    grower_rc: int | None
    grower_rate_mbs: float | None  # what it achieved end to end (frozen time included)
    reaction_seconds: list[float] = field(default_factory=list)  # kernel crossing -> freeze, per freeze
    guard_reaction_seconds: list[float] = field(default_factory=list)  # the guard's own estimate
    frozen_seconds: float = 0.0
    worker_back_seconds: float | None = None  # grower exit -> worker observed running
    worker_downtime_seconds: float | None = None  # worker left running -> running again
    events: list[dict] = field(default_factory=list)

    def row(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "events"}


def grower_outcome(proc: subprocess.Popen, timeout: float) -> tuple[int | None, float | None]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, None
    done = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"done"' in line]
    return proc.returncode, done[-1]["rate_mbs"] if done else None


def freeze_times(events: list[dict]) -> tuple[list[float], float]:
    """(freeze times, total frozen seconds) from the guard's freeze/thaw events."""
    freezes = [e["data"]["frozen_at"] for e in events if e["kind"] == "freeze" and "frozen_at" in e.get("data", {})]
    frozen = 0.0
    for e in events:
        if e["kind"] == "thaw" and "frozen_at" in e.get("data", {}):
            frozen += e["at"] - e["data"]["frozen_at"]
    return freezes, frozen


def reactions(crossing: Crossing | None, events: list[dict]) -> tuple[list[float], list[float]]:
    """Per freeze: kernel crossing -> freeze done (the harness's own eventfd), and the guard's own estimate."""
    acts = [e["data"] for e in events if e["kind"] == "protect" and e["data"].get("pid")]
    kernel = []
    for act in acts:
        crossed = [x for x in (crossing.times if crossing else []) if x <= act["acted_at"]]
        if crossed:
            kernel.append(act["acted_at"] - crossed[-1])
    return kernel, [act["acted_at"] - act["crossed_at"] for act in acts]
