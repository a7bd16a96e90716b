"""Real processes that try to make the freezer misbehave: growers, bystanders, forkers, /dev/shm writers (test helpers).

Every process runs inside a memory cgroup the test made (a small limit), in a session of its own unless asked; the
test ends them by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from guard.protect import cgroupctl
from guard.protect.growth import GrowthTracker
from guard.protect.procinfo import descendants, parents, read_proc, read_stat
from tests.guard.freezing import count
from tests.helpers import wait_for

# One actor: holds `hold_mib` at once, then grows `step_mib` every 50 ms up to `cap_mib`, forks a 300 ms child every
# `fork_ms`, leaves a zombie child with `zombie`, writes `shm_mib` into `shm` every 50 ms (tmpfs pages, no RSS), and
# reads one line from stdin with `read_line` once grown; it counts in `out` every 10 ms throughout.
ACTOR = r"""
import json, mmap, os, sys, time
cfg = json.loads(sys.argv[1])
def touch(mib):
    return mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE) if mib else None
held, grown, shm, n, last_fork = [touch(cfg.get("hold_mib", 0))], 0, 0, 0, time.time()
if cfg.get("zombie") and os.fork() == 0:
    os._exit(0)
out = cfg["out"]
while True:
    n += 1
    if n % 5 == 0 and cfg.get("step_mib") and grown < cfg.get("cap_mib", 0):
        held.append(touch(cfg["step_mib"])); grown += cfg["step_mib"]
    if n % 5 == 0 and cfg.get("shm") and shm < cfg.get("cap_mib", 0):
        with open(cfg["shm"], "ab") as f:
            f.write(b"x" * (cfg["shm_mib"] << 20))
        shm += cfg["shm_mib"]
    if cfg.get("fork_ms") and time.time() - last_fork >= cfg["fork_ms"] / 1000:
        last_fork = time.time()
        if os.fork() == 0:
            time.sleep(0.3); os._exit(0)
    while cfg.get("fork_ms"):
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0: break
        except ChildProcessError:
            break
    with open(out + ".tmp", "w") as f:
        f.write(str(n))
    os.replace(out + ".tmp", out)
    if cfg.get("read_line") and grown >= cfg.get("cap_mib", 0):
        print("GOT " + sys.stdin.readline().strip(), flush=True)
        sys.exit(0)
    time.sleep(0.01)
"""


def actor_argv(**cfg) -> list[str]:
    return [sys.executable, "-c", ACTOR, json.dumps(cfg)]


def start_actor(tmp: Path, name: str, join: Callable | None = None, adj: int = 0, session: bool = True,
                group: int | None = None, **cfg) -> tuple[subprocess.Popen, Path]:
    """An actor in `join`'s cgroup (a preexec), in a session of its own unless `session` is False (then in process
    group `group`: 0 for a new one, None for the test's)."""
    out = tmp / f"{name}.count"
    proc = subprocess.Popen(actor_argv(out=str(out), **cfg), start_new_session=session, preexec_fn=join,
                            process_group=None if session else group)
    Path(f"/proc/{proc.pid}/oom_score_adj").write_text(str(adj))
    wait_for(lambda: count(out) > 0, timeout=15, what=f"{name} counting")
    return proc, out


def end(proc: subprocess.Popen) -> None:
    """End a process this test started (by pid) and everything it forked."""
    for pid in sorted(descendants(proc.pid, parents()) - {proc.pid}):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def measure(pids: list[int], seconds: float = 0.4, shmem=lambda: None) -> dict[int, int]:
    """Growth over `seconds`, as the fast path measures it."""
    tracker = GrowthTracker(shmem=shmem)
    tracker.sample(pids, time.time())
    time.sleep(seconds)
    return tracker.growth(pids, time.time())


def frozen_now(pid: int) -> bool:
    """Whether the kernel holds `pid` frozen: its v1 freezer or v2 cgroup reports frozen."""
    info = read_proc(pid)
    if info is None:
        return False
    for key, version in (("freezer", 1), ("", 2)):
        path = info.cgroups.get(key)
        if path and path != "/":
            cg = cgroupctl.freezer_of(Path("/sys/fs/cgroup"), path, version)
            if cg is not None and cgroupctl.is_frozen(cg):
                return True
    return False


def stopped(pid: int) -> bool:
    stat = read_stat(pid)
    return stat is not None and stat.state in ("T", "t")

