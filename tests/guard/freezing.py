"""Processes the freezer tests start and own: counters in a cgroup the test creates, or in a process group of their own."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from exporter.units import parse_proc_cgroup
from guard.protect import cgroupctl
from guard.protect.freezer import Freezer
from guard.protect.frozenfile import boot_id
from guard.protect.procinfo import read_stat
from guard.common.settings import GuardSettings
from guard.common.store import Store
from tests.helpers import REPO, need, wait_for

CGROUPFS = Path("/sys/fs/cgroup")
NOBODY = 65534
# Counts in a file every 10 ms; with a second argument it first starts a child counting in that file (same group).
COUNTER = """import os, signal, subprocess, sys, time
if os.environ.get('COUNTER_IGNORES_SIGTERM'):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if len(sys.argv) > 2:
    subprocess.Popen([sys.executable, '-c', open(sys.argv[3]).read(), sys.argv[2]])
n = 0
while True:
    n += 1
    with open(sys.argv[1] + '.tmp', 'w') as f:
        f.write(str(n))
    os.replace(sys.argv[1] + '.tmp', sys.argv[1])
    time.sleep(0.01)
"""


def need_freezer_root() -> None:
    need(os.geteuid() == 0 and bool(roots()), "root and a cgroup freezer (v2 cgroup.freeze or the v1 freezer)")


def roots() -> list[tuple[int, Path]]:
    found = []
    if (v2 := cgroupctl.v2_root(CGROUPFS)) is not None:
        found.append((2, v2))
    if (v1 := cgroupctl.v1_freezer_root(CGROUPFS)) is not None:
        found.append((1, v1))
    return found


def count(path: Path) -> int:
    return int(path.read_text() or 0) if path.exists() else 0


def counting(path: Path, seconds: float = 0.3) -> bool:
    """Whether the counter behind `path` advances within `seconds` (a stopped or frozen one does not)."""
    before = count(path)
    time.sleep(seconds)
    return count(path) > before


def set_oom_score_adj(pid: int, value: int) -> None:
    Path(f"/proc/{pid}/oom_score_adj").write_text(str(value))


def start_counter(tmp_path: Path, name: str, *, child: bool = False, join: Path | None = None,
                  oom_score_adj: int = 0, ignores_sigterm: bool = False) -> tuple[subprocess.Popen, list[Path]]:
    """A counter in a new session (its own process group); with `child`, a second counter below it."""
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    outs = [tmp_path / f"{name}.count"] + ([tmp_path / f"{name}-child.count"] if child else [])
    args = [sys.executable, "-c", COUNTER, str(outs[0])] + ([str(outs[1]), str(script)] if child else [])

    def enter():
        if join is not None:
            (join / "cgroup.procs").write_text(str(os.getpid()))

    env = {**os.environ, **({"COUNTER_IGNORES_SIGTERM": "1"} if ignores_sigterm else {})}
    proc = subprocess.Popen(args, start_new_session=True, preexec_fn=enter, env=env)
    set_oom_score_adj(proc.pid, oom_score_adj)
    for out in outs:
        wait_for(lambda out=out: count(out) > 0, timeout=15, what=f"{out.name} counting")
    return proc, outs


def group_pids(proc: subprocess.Popen) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == proc.pid]


def _pgid(pid: int) -> int:
    with contextlib.suppress(OSError):
        return os.getpgid(pid)
    return -1


def stop(proc: subprocess.Popen) -> None:
    """Kill the counter's whole group (the test started it) and reap it; a v1 cgroup the guard made for it is thawed
    (a frozen v1 task dies only once thawed) and removed, so a failed test leaves nothing frozen behind."""
    made = _guard_made_cgroup(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    if made is not None:
        with contextlib.suppress(OSError):
            cgroupctl.thaw(made)
    proc.wait(timeout=10)
    if made is not None:
        with contextlib.suppress(OSError, AssertionError):
            wait_for(lambda: not cgroupctl.pids(made), timeout=5, what="the guard-made cgroup empty")
            made.directory.rmdir()


def _guard_made_cgroup(pid: int) -> cgroupctl.FreezerCgroup | None:
    try:
        path = freezer_path(pid)
    except OSError:
        return None
    return cgroupctl.freezer_of(CGROUPFS, path, 1) if path.startswith(cgroupctl.GUARD_GROUP + "/") else None


@contextlib.contextmanager
def owned_cgroup(version: int, root: Path):
    """A freezer-capable cgroup the test creates under `root`, removed afterwards (thawed, emptied first)."""
    name = f"headroom-test-freezer-{uuid.uuid4().hex[:8]}"
    directory = root / name
    directory.mkdir()
    try:
        yield "/" + name, directory
    finally:
        with contextlib.suppress(OSError):
            cgroupctl.thaw(cgroupctl.FreezerCgroup("/" + name, directory, version))
        wait_for(lambda: not (directory / "cgroup.procs").read_text().strip(), timeout=10, what="test cgroup empty")
        directory.rmdir()


GREW = 64 << 20  # a growth to hand the freezer where a test is about records and surfaces, not the choice (the choice
# itself is tested with growth measured from real processes: tests/guard/test_freeze_adversarial.py)


def grew(*pids: int) -> dict[int, int]:
    return {pid: GREW for pid in pids}


def make_freezer(tmp_path: Path, clock=time.time, protected: set[int] | None = None, facts=None, monotonic=None,
                 **settings) -> Freezer:
    """A freezer on a fresh state dir; `clock` (wall) also drives durations unless `monotonic` is given."""
    store = Store(tmp_path / "state")
    extra = {"facts": facts} if facts is not None else {}
    return Freezer(GuardSettings(**settings), store, clock=clock, protected_pids=lambda: set(protected or ()),
                   monotonic=monotonic, **extra)


# A stand-in for the guard process: the real Freezer and Store on a state dir, freezing each pid it is given (one line
# per pid: "frozen METHOD" or "nothing"), then sleeping until the test kills it; or, given "recover", thawing what a
# previous one recorded and printing "pid:method" for each.
GUARD = """import sys, time
from pathlib import Path
from guard.protect.freezer import Freezer
from guard.common.settings import GuardSettings
from guard.common.store import Store
freezer = Freezer(GuardSettings(), Store(Path(sys.argv[1])))
if sys.argv[2] == 'recover':
    print(' '.join(f'{fp.pid}:{fp.method}' for fp in freezer.recover()), flush=True)
    freezer.close()
    sys.exit(0)
for pid in sys.argv[2].split(','):
    fp = freezer.freeze([int(pid)], 'test: ram below the freeze threshold', growth={int(pid): 64 << 20})
    print(f'frozen {fp.method}' if fp else 'nothing', flush=True)
time.sleep(600)
"""


def run_guard(state, arg) -> subprocess.Popen:
    """The stand-in guard on `state`: `arg` is a pid, pids joined by commas, or "recover"."""
    return subprocess.Popen([sys.executable, "-c", GUARD, str(state), str(arg)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)


def legacy_record(proc: subprocess.Popen) -> dict:
    """What a guard before the cgroup freezer wrote for a process group it stopped by SIGSTOP (no cgroup, a pgid)."""
    pids = group_pids(proc)
    return {"pid": proc.pid, "comm": "python", "method": "sigstop", "cgroup": None, "frozen_at": time.time(),
            "reason": "an older guard", "rss_bytes": 0, "pgid": proc.pid,
            "members": [[pid, read_stat(pid).start_ticks] for pid in pids], "boot_id": boot_id()}


def freezer_path(pid: int) -> str:
    """The process's cgroup in the v1 freezer hierarchy ("/" at its root, or on a host without one)."""
    return parse_proc_cgroup(Path(f"/proc/{pid}/cgroup").read_text()).get("freezer", "/")


@contextlib.contextmanager
def nobodys_counter():
    """A counter of another user (nobody) alone in a cgroup delegated to nobody (its directory and files are nobody's,
    as systemd's Delegate= does): a guard without CAP_DAC_OVERRIDE may not write its cgroup.freeze / freezer.state."""
    version, root = roots()[0]
    folder = Path(tempfile.mkdtemp(prefix="headroom-test-nobody-"))
    folder.chmod(0o777)
    out = folder / "nobody.count"
    with owned_cgroup(version, root) as (_, directory):
        for item in [directory, *directory.iterdir()]:
            os.chown(item, NOBODY, NOBODY)

        def enter():
            (directory / "cgroup.procs").write_text(str(os.getpid()))
            os.setresuid(NOBODY, NOBODY, NOBODY)

        proc = subprocess.Popen(["/usr/bin/python3", "-c", COUNTER, str(out)], start_new_session=True, cwd=folder,
                                preexec_fn=enter)
        try:
            wait_for(lambda: count(out) > 0, timeout=15, what="nobody's counter")
            yield proc, out
        finally:
            stop(proc)
            shutil.rmtree(folder, ignore_errors=True)
