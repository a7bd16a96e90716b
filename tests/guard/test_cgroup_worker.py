"""The cgroup worker target against the real kernel: a heartbeating worker in its own cgroup is frozen, stopped, started."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from guard.protect import cgroupctl
from guard.targets.cgroup_target import STORE_KEY, CgroupWorkerTarget, build_cgroup_target, observed_state
from guard.common.settings import GuardSettings
from guard.common.store import Store
from guard.common.types import Desired
from guard.protect.procinfo import is_headroom
from guard.targets.cgroup_hierarchies import WorkerCgroup, holds_headroom, memory_from
from headroom.errors import HeadroomError
from tests.helpers import need, wait_for

CGROUPFS = Path("/sys/fs/cgroup")
APP = Path(__file__).with_name("cgroup_worker_app.py")
MiB = 2**20
PR_SET_CHILD_SUBREAPER = 36


class WorkerBox:
    """A cgroup path the test creates in cgroup2 (freezing) and v1 memory (usage), and a heartbeating worker started in it."""

    def __init__(self, tmp: Path, parent: str = ""):
        self.path = f"{parent}/headroom-test-cgw-{uuid.uuid4().hex[:8]}"
        v2 = cgroupctl.v2_root(CGROUPFS)
        memory = CGROUPFS / "memory"
        self.dirs = [root / self.path.lstrip("/") for root in (v2, memory if memory.is_dir() else None) if root is not None]
        self.heartbeat = str(tmp / f"beat-{uuid.uuid4().hex[:6]}")
        self.libc = ctypes.CDLL(None, use_errno=True)

    def __enter__(self) -> "WorkerBox":
        self.made: list[Path] = []
        for directory in self.dirs:
            missing = [d for d in [directory, *directory.parents] if not d.exists()]
            for made in reversed(missing):  # a parent (the domain) may exist in one hierarchy only
                made.mkdir()
                self.made.append(made)
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # the detached workers stay our children, so we reap them
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            (self.dirs[0] / "cgroup.freeze").write_text("0")
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # only processes in the cgroup this test made
            time.sleep(0.05)
        for pid in self.started_pids():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for directory in reversed(self.made):
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()

    @property
    def procs(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> list[int]:
        return sorted({int(p) for f in self.procs if Path(f).exists() for p in Path(f).read_text().split()})

    def started_pids(self) -> list[int]:
        path = Path(self.heartbeat + ".pids")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def start_argv(self, hold_mib: int = 64, ignore_term: bool = False) -> list[str]:
        argv = [sys.executable, str(APP), "start", "--heartbeat", self.heartbeat, "--hold-mib", str(hold_mib)]
        return argv + [a for f in self.procs for a in ("--procs", f)] + (["--ignore-term"] if ignore_term else [])

    def stop_argv(self) -> list[str]:
        return [sys.executable, str(APP), "stop", "--heartbeat", self.heartbeat] + [a for f in self.procs for a in ("--procs", f)]

    def start(self, hold_mib: int = 64, ignore_term: bool = False) -> None:
        Path(self.heartbeat).unlink(missing_ok=True)  # count the new worker's beats, not the last one's
        subprocess.run(self.start_argv(hold_mib, ignore_term), check=True, timeout=30)
        wait_for(lambda: self.beats() > 2, 15, what="the worker's heartbeats")

    def beats(self) -> int:
        try:
            return int(Path(self.heartbeat).read_text().split()[0])
        except (FileNotFoundError, IndexError):
            return 0

    def heartbeating(self, window: float = 1.0) -> bool:
        before = self.beats()
        time.sleep(window)
        return self.beats() > before

    def frozen(self) -> bool:
        return "frozen 1" in (self.dirs[0] / "cgroup.events").read_text()

    def marker(self, kind: str) -> str:
        path = Path(f"{self.heartbeat}.{kind}")
        return path.read_text() if path.exists() else ""


def need_cgroups() -> None:
    v2 = cgroupctl.v2_root(CGROUPFS)
    has_memory = (CGROUPFS / "memory" / "memory.usage_in_bytes").exists() or (v2 is not None and "memory" in (v2 / "cgroup.controllers").read_text())
    need(os.geteuid() == 0 and v2 is not None and has_memory, "root, a cgroup2 mount (freezer) and a memory hierarchy")


@pytest.fixture
def box(tmp_path):
    need_cgroups()
    with WorkerBox(tmp_path) as worker_box:
        yield worker_box


@pytest.fixture
def store(tmp_path):
    opened = Store(tmp_path / "state")
    yield opened
    opened.close()


def settle(target: CgroupWorkerTarget, want: str, timeout: float = 20) -> dict:
    return wait_for(lambda: (lambda s: s if s.state == want else None)(target.read()), timeout, what=f"worker state {want}")


@pytest.mark.parametrize("procs, frozen, busy, holds, want", [
    (True, False, None, True, "running"), (True, True, None, True, "paused"), (True, False, "freeing", True, "freeing"),
    (False, False, "freeing", True, "freeing"), (False, False, "freeing", False, "freed"), (False, False, None, True, "freeing"),
    (False, False, None, False, "freed"), (False, False, "waking", False, "waking"), (True, False, "waking", True, "running"),
])
def test_observed_state_says_freed_only_when_nothing_is_held(procs, frozen, busy, holds, want):
    assert observed_state(procs, frozen, busy, holds) == want


def test_memory_stat_v1_and_v2():
    v1 = memory_from("300000000\n", "cache 1\nrss 5\ntotal_rss 200000000\ntotal_shmem 4096\n", 1)
    assert (v1.usage_bytes, v1.anon_bytes, v1.shmem_bytes) == (300000000, 200000000, 4096)
    v2 = memory_from("1000\n", "anon 700\nfile 300\nshmem 12\n", 2)
    assert (v2.usage_bytes, v2.anon_bytes, v2.shmem_bytes) == (1000, 700, 12)


def test_headroom_command_lines_are_recognised():
    assert is_headroom(["/usr/bin/python3", "-m", "headroom", "guard"]) and is_headroom(["/usr/local/bin/headroom", "up"])
    assert not is_headroom(["python", "-m", "core.batch_app.worker"]) and not is_headroom(["vllm", "serve", "headroom-model"])


def test_empty_argv_and_missing_target_are_refused_by_the_settings():
    with pytest.raises(ValueError, match="worker_stop|non-empty argv"):
        GuardSettings(worker_kind="cgroup", worker_cgroup="/w", worker_stop=[])
    with pytest.raises(ValueError, match="guard.worker.cgroup"):
        GuardSettings(worker_kind="cgroup")
    assert GuardSettings(worker_kind="cgroup", worker_cgroup="aristotle-batch-worker.service").worker_stop is None


@pytest.mark.kernel
def test_pause_freezes_the_cgroup_and_running_thaws_it(box, store):
    box.start()
    target = CgroupWorkerTarget(WorkerCgroup(box.path, CGROUPFS), store)
    assert target.read().state == "running"
    assert target.apply(Desired("paused")).result in ("ok", "accepted")
    settle(target, "paused")
    assert box.frozen() and not box.heartbeating(0.4), "the worker kept heartbeating while frozen"
    assert target.apply(Desired("running")).result == "ok"
    assert not box.frozen() and box.heartbeating(), "the worker did not resume after the thaw"
    assert target.read().state == "running"


@pytest.mark.kernel
def test_throttle_is_refused_or_mapped_to_pause(box, store):
    box.start()
    refusing = CgroupWorkerTarget(WorkerCgroup(box.path, CGROUPFS), store)
    outcome = refusing.apply(Desired("throttled", concurrency=1))
    assert outcome.result == "refused" and "worker_cgroup_throttle" in outcome.detail and box.heartbeating()
    pausing = CgroupWorkerTarget(WorkerCgroup(box.path, CGROUPFS), store, throttle="pause")
    pausing.apply(Desired("throttled", concurrency=1))
    assert settle(pausing, "paused").desired.state == "throttled" and not box.heartbeating(0.4)
    pausing.close()
    assert not box.frozen(), "close() left the worker frozen"


@pytest.mark.kernel
def test_free_by_signals_escalates_to_sigkill_and_then_needs_a_person(box, store):
    box.start(hold_mib=96, ignore_term=True)  # shrugs off SIGTERM, as a stuck worker would
    target = CgroupWorkerTarget(WorkerCgroup(box.path, CGROUPFS), store, name="stuck.service", stop_timeout=1.0)
    assert target.read().cgroup["anon_bytes"] >= 90 * MiB
    target.apply(Desired("paused"))
    settle(target, "paused")
    assert target.apply(Desired("freed", level=2)).result == "accepted"
    state = settle(target, "freed")
    assert box.marker("term"), "SIGTERM came first (after a thaw, so a frozen worker can act on it)"
    assert state.cgroup["processes"] == 0 and state.cgroup["anon_bytes"] < 8 * MiB
    assert target.apply(Desired("running")).result == "ok"
    assert "a person must restart it (stuck.service)" in target.read().note
    box.start()  # a person restarts it
    assert target.read().state == "running" and target.read().note == ""


@pytest.mark.kernel
def test_worker_stop_and_worker_start_argv(box, store):
    box.start()
    target = CgroupWorkerTarget(WorkerCgroup(box.path, CGROUPFS), store, stop_argv=box.stop_argv(), start_argv=box.start_argv())
    target.apply(Desired("freed", level=2))
    settle(target, "freed")
    assert box.marker("stop") and box.marker("term") and not box.heartbeating()
    target.apply(Desired("running"))
    settle(target, "running")
    wait_for(lambda: box.heartbeating(0.3), 15, what="worker_start to bring the worker back, heartbeating")


@pytest.mark.kernel
def test_freed_waits_for_the_gpu_memory_of_its_processes(box, store):
    box.start()
    target = CgroupWorkerTarget(WorkerCgroup(box.path, CGROUPFS), store)
    worker_pid = box.pids()[0]
    listing = {worker_pid: 8 * 2**30}  # the last NVML listing (no GPU here): the worker's process holds 8 GiB
    target.gpu_processes = lambda: dict(listing)
    target.apply(Desired("freed", level=2))
    wait_for(lambda: not box.pids(), 15, what="the worker gone")
    time.sleep(0.3)
    assert target.read().state == "freeing", "freed reported while the GPU listing still shows the worker's memory"
    listing.clear()  # the next listing no longer has it
    assert target.read().state == "freed"


@pytest.mark.kernel
def test_a_new_guard_thaws_what_a_killed_one_froze_and_close_thaws(box, store):
    box.start()
    killed = CgroupWorkerTarget(WorkerCgroup(box.path, CGROUPFS), store)
    killed.apply(Desired("paused"))
    settle(killed, "paused")
    assert store.get(STORE_KEY)["frozen"], "the freeze was not recorded in the state store"
    CgroupWorkerTarget(WorkerCgroup(box.path, CGROUPFS), store)  # the guard starts again; `killed` never closed
    assert not box.frozen() and box.heartbeating()
    assert any("left frozen by a previous guard" in e["message"] for e in store.events(kind="action"))
    fresh = CgroupWorkerTarget(WorkerCgroup(box.path, CGROUPFS), store)
    fresh.apply(Desired("paused"))
    settle(fresh, "paused")
    fresh.close()
    assert not box.frozen() and not store.get(STORE_KEY)["frozen"]


@pytest.mark.kernel
def test_build_refuses_a_missing_cgroup_and_one_that_holds_headroom(box, store):
    with pytest.raises(HeadroomError, match="worker_cgroup = '/headroom-test-missing'.*no such cgroup"):
        build_cgroup_target(GuardSettings(worker_kind="cgroup", worker_cgroup="/headroom-test-missing"), store)
    with pytest.raises(HeadroomError, match="no such cgroup or systemd unit"):
        build_cgroup_target(GuardSettings(worker_kind="cgroup", worker_cgroup="headroom-test-missing.service"), store)
    box.start()
    cg = WorkerCgroup(box.path, CGROUPFS)
    assert holds_headroom(cg) is None
    assert "headroom itself" in holds_headroom(cg, own_pid=box.pids()[0])
    with pytest.raises(HeadroomError, match="holds headroom itself"):
        build_cgroup_target(GuardSettings(worker_kind="cgroup", worker_cgroup="/"), store)
    assert build_cgroup_target(GuardSettings(worker_kind="cgroup", worker_cgroup=box.path), store).cgroup.path == box.path


def test_a_guard_restarted_after_stopping_a_systemd_worker_accepts_its_vanished_cgroup(tmp_path, store):
    gone = "/system.slice/headroom-test-gone.service"  # systemd removes a stopped unit's cgroup
    store.set(STORE_KEY, {"name": "headroom-test-gone.service", "path": gone, "stopped": True, "known_pids": [], "frozen": []})
    settings = GuardSettings(worker_kind="cgroup", worker_cgroup="headroom-test-gone.service")
    target = build_cgroup_target(settings, store)
    state = target.read()
    assert target.cgroup.path == gone and state.state == "freed"
    assert "a person must restart it (headroom-test-gone.service)" in state.note
    store.set(STORE_KEY, {**store.get(STORE_KEY), "stopped": False})  # not stopped by the guard: a missing cgroup is an error
    with pytest.raises(HeadroomError, match="no such cgroup"):
        build_cgroup_target(settings, store)
