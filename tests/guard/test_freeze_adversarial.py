"""The freeze tried as an adversary would: only the grower's own tree is frozen, by a cgroup freezer, never a bystander.

Real processes in a memory cgroup each test makes (1 GiB), real cgroup freezers, growth measured as the fast path does.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from guard.protect import cgroupctl
from guard.protect.domain import DomainReader
from guard.protect.frozenfile import read_records
from guard.protect.growth import domain_shmem
from guard.protect.procinfo import descendants, parents, read_proc
from tests.guard.adversary import ACTOR, end, frozen_now, measure, start_actor, stopped
from tests.guard.freezing import CGROUPFS, count, counting, make_freezer, need_freezer_root, owned_cgroup, roots
from tests.guard.realstack import domain_cgroup
from tests.helpers import need, need_binary, wait_for

pytestmark = pytest.mark.kernel
GiB = 2**30
GROW = {"step_mib": 8, "cap_mib": 320}  # 160 MiB/s for 2 s: a loader, slowed down


@contextlib.contextmanager
def domain():
    need_freezer_root()
    need(cgroupctl.v1_freezer_root(CGROUPFS) is not None, "the v1 freezer hierarchy (the guard's cgroups live there)")
    with domain_cgroup(GiB) as cg:
        started, freezers = [], []
        try:
            yield cg, started, freezers
        finally:
            for freezer in freezers:  # a failed assertion must not leave anything frozen (v1: not even killable)
                freezer.close()
            for proc in started:
                end(proc)


def own(freezers, freezer):
    freezers.append(freezer)
    return freezer


def actor(tmp, started, cg, name, **cfg):
    proc, out = start_actor(tmp, name, join=cg.join, **cfg)
    started.append(proc)
    return proc, out


def test_bystanders_with_large_rss_and_oom_score_adj_1000_are_never_frozen(tmp_path):
    with domain() as (cg, started, freezers):
        big, big_out = actor(tmp_path, started, cg, "browser", hold_mib=250, adj=1000)
        pod, pod_out = actor(tmp_path, started, cg, "besteffort", hold_mib=150, adj=1000)
        grower, grower_out = actor(tmp_path, started, cg, "loader", **GROW)
        pids = [big.pid, pod.pid, grower.pid]
        freezer = own(freezers, make_freezer(tmp_path))
        fp = freezer.freeze(pids, "ram below the freeze threshold", growth=measure(pids))
        assert fp is not None and fp.pid == grower.pid, "not the grower"
        assert fp.method == "cgroup-v1" and fp.moved_from == "/" and frozen_now(grower.pid)
        assert not counting(grower_out) and counting(big_out) and counting(pod_out)
        assert freezer.freeze(pids, "still below", growth=measure(pids)) is None, "a non-grower was frozen"
        event = freezer.store.events(5, kind="freeze")[0]["message"]
        assert f"({grower.pid}): grew" in event and "grew" in event and "cgroup the guard made" in event
        freezer.close()
        assert counting(grower_out) and not frozen_now(grower.pid) and read_proc(grower.pid).cgroups["freezer"] == "/"
        assert not cgroupctl.made_for(CGROUPFS, grower.pid, read_proc(grower.pid).stat.start_ticks).directory.exists()


def test_a_helper_in_the_growers_process_group_keeps_running(tmp_path):
    with domain() as (cg, started, freezers):
        grower, grower_out = actor(tmp_path, started, cg, "loader", session=False, group=0, **GROW)

        def same_group():
            cg.join()
            os.setpgid(0, grower.pid)  # started beside it by a supervisor, without setsid: its group, not its tree

        helper, helper_out = start_actor(tmp_path, "helper", join=same_group, session=False, hold_mib=50)
        started.append(helper)
        assert os.getpgid(helper.pid) == grower.pid
        freezer = own(freezers, make_freezer(tmp_path))
        fp = freezer.freeze([grower.pid, helper.pid], "below", growth=measure([grower.pid, helper.pid]))
        assert fp is not None and fp.pid == grower.pid and [p for p, _ in fp.members] == [grower.pid]
        assert not counting(grower_out) and counting(helper_out) and not stopped(helper.pid)
        freezer.close()
        assert counting(grower_out)


def test_a_grower_forking_every_10_ms_is_frozen_whole_and_every_child_resumes(tmp_path):
    with domain() as (cg, started, freezers):
        grower, out = actor(tmp_path, started, cg, "forker", fork_ms=10, **GROW)
        freezer = own(freezers, make_freezer(tmp_path))
        pids = list(descendants(grower.pid, parents()))
        fp = freezer.freeze(pids, "below", growth=measure(pids))
        assert fp is not None and fp.pid == grower.pid
        tree = descendants(grower.pid, parents())
        assert len(tree) > 1, "no child alive at the freeze"
        # a zombie runs no more: it stays where it died
        live = [info for pid in tree if (info := read_proc(pid)) is not None and info.stat.state != "Z"]
        outside = [info.pid for info in live if info.cgroups.get("freezer") != fp.cgroup]
        assert outside == [], f"children born during the stop escaped: {outside}"
        assert all(frozen_now(info.pid) for info in live) and not counting(out)
        assert {pid for pid, _ in fp.members} >= {info.pid for info in live}
        freezer.close()
        assert counting(out)
        wait_for(lambda: all(not frozen_now(p) and not stopped(p) for p in descendants(grower.pid, parents())), 5,
                 what="every process of the tree running")
        assert not (CGROUPFS / "freezer" / fp.cgroup.lstrip("/")).exists()


def test_several_growers_are_frozen_one_tree_each_and_no_bystander(tmp_path):
    with domain() as (cg, started, freezers):
        one, one_out = actor(tmp_path, started, cg, "one", **GROW)
        two, two_out = actor(tmp_path, started, cg, "two", step_mib=4, cap_mib=200)
        idle, idle_out = actor(tmp_path, started, cg, "idle", hold_mib=200, adj=1000)
        pids = [one.pid, two.pid, idle.pid]
        freezer = own(freezers, make_freezer(tmp_path))
        growth = measure(pids)
        first = freezer.freeze(pids, "below", growth=growth)
        second = freezer.freeze(pids, "further below", growth=measure(pids))
        assert (first.pid, second.pid) == (one.pid, two.pid), "not ranked by growth"
        assert freezer.freeze(pids, "lower still", growth=measure(pids)) is None and counting(idle_out)
        assert not counting(one_out) and not counting(two_out)
        freezer.close()
        assert counting(one_out) and counting(two_out)


@pytest.mark.parametrize("version", [2, 1])
def test_a_cgroup_frozen_beforehand_stays_frozen_and_is_never_thawed(tmp_path, version):
    with domain() as (cg, started, freezers):
        root = dict(roots()).get(version)
        need(root is not None, f"a cgroup v{version} freezer")
        with owned_cgroup(version, root) as (path, directory):
            def paused_join():
                cg.join()
                (directory / "cgroup.procs").write_text(str(os.getpid()))

            paused, paused_out = start_actor(tmp_path, "paused", join=paused_join, hold_mib=200, adj=1000)
            started.append(paused)
            pre = cgroupctl.freezer_of(CGROUPFS, path, version)
            assert cgroupctl.freeze(pre, timeout=5)  # `docker pause`, `systemctl freeze`, a paused cgroup worker
            grower, _ = actor(tmp_path, started, cg, "loader", **GROW)
            freezer = own(freezers, make_freezer(tmp_path))
            pids = [paused.pid, grower.pid]
            fp = freezer.freeze(pids, "below", growth=measure(pids))
            assert fp is not None and fp.pid == grower.pid
            freezer.close()
            assert cgroupctl.is_frozen(pre) and not counting(paused_out), "the guard thawed what someone else froze"
            cgroupctl.thaw(pre)
            end(paused)


def test_a_zombie_in_the_growers_group_is_no_kernel_thread(tmp_path):
    with domain() as (cg, started, freezers):
        grower, out = actor(tmp_path, started, cg, "loader", zombie=True, **GROW)
        tree = descendants(grower.pid, parents())
        zombie = next(pid for pid in tree if pid != grower.pid)
        wait_for(lambda: read_proc(zombie).stat.state == "Z", 5, what="the unreaped child a zombie")
        freezer = own(freezers, make_freezer(tmp_path))
        fp = freezer.freeze(list(tree), "below", growth=measure(list(tree)))
        assert fp is not None and fp.pid == grower.pid and fp.method == "cgroup-v1"
        assert frozen_now(grower.pid) and not counting(out)
        freezer.close()
        assert counting(out) and not stopped(grower.pid)


def test_growth_in_dev_shm_is_seen_and_its_writer_frozen(tmp_path):
    shm = Path("/dev/shm") / f"headroom-test-{uuid.uuid4().hex[:8]}"
    try:
        with domain() as (cg, started, freezers):
            idle, idle_out = actor(tmp_path, started, cg, "idle", hold_mib=200, adj=1000)
            writer, writer_out = actor(tmp_path, started, cg, "writer", shm=str(shm), shm_mib=8, cap_mib=300)
            pids = [idle.pid, writer.pid]
            growth = measure(pids, shmem=domain_shmem(DomainReader(cg.name)))
            assert shm.stat().st_size > 16 << 20
            freezer = own(freezers, make_freezer(tmp_path))
            fp = freezer.freeze(pids, "below", growth=growth)
            assert fp is not None and fp.pid == writer.pid, f"tmpfs writes not counted: {growth}"
            assert not counting(writer_out) and counting(idle_out)
            freezer.close()
    finally:
        shm.unlink(missing_ok=True)


def test_after_on_no_room_continued_growth_freezes_nothing_else(tmp_path):
    now = [1000.0]
    with domain() as (cg, started, freezers):
        grower, out = actor(tmp_path, started, cg, "loader", step_mib=4, cap_mib=600)
        idle, idle_out = actor(tmp_path, started, cg, "db", hold_mib=200, adj=1000)
        pids = [grower.pid, idle.pid]
        freezer = own(freezers, make_freezer(tmp_path, clock=lambda: now[0], freeze_max_seconds=20, on_no_room="thaw"))
        assert freezer.freeze(pids, "below", now=now[0], growth=measure(pids)).pid == grower.pid
        now[0] = 1020.0  # freeze_max_seconds later, on the clock that drives the freezer's durations
        assert [what for what, _ in freezer.resolve_no_room()] == ["thawed"] and counting(out)
        for _ in range(3):  # the domain keeps falling: the released grower is the kernel's, the idle db no grower
            assert freezer.freeze(pids, "further below", now=now[0], growth=measure(pids)) is None
        assert counting(out) and counting(idle_out) and read_records(freezer.records) == []
        assert any("on_no_room" in p.why or "by hand" in p.why for p in freezer.last_passed)


def read_pty(fd: int, seconds: float, until: str | None = None) -> str:
    """What the terminal showed within `seconds` (stops early once `until` appears)."""
    got, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline and (until is None or until.encode() not in got):
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                got += os.read(fd, 65536)
            except OSError:
                break
    return got.decode(errors="replace")


def test_a_foreground_job_on_a_terminal_stays_the_foreground_job(tmp_path):
    """`python load.py` run from an interactive bash: frozen and thawed, it still owns the terminal and reads it."""
    need(shutil.which("bash") is not None, "bash")
    job = tmp_path / "load.py"
    job.write_text(f"import json, sys\nsys.argv[1:] = [json.dumps({{'out': {str(tmp_path / 'job.count')!r}, "
                   f"'step_mib': 8, 'cap_mib': 200, 'read_line': True}})]\nexec({ACTOR!r})\n")
    with domain() as (cg, started, freezers):
        pid, fd = pty.fork()
        if pid == 0:  # the child: a login-less interactive shell on the new terminal, inside the test's cgroup
            try:
                cg.join()
                os.execvp("bash", ["bash", "--norc", "-i"])
            finally:
                os._exit(127)
        try:
            read_pty(fd, 2)
            os.write(fd, f"{sys.executable} {job}; echo EXIT:$?\n".encode())
            wait_for(lambda: count(tmp_path / "job.count") > 0, 15, what="the job running")
            loader = next(p for p in descendants(pid, parents()) if p != pid)
            freezer = own(freezers, make_freezer(tmp_path))
            fp = freezer.freeze([pid, loader], "below", growth=measure([pid, loader]))
            assert fp is not None and fp.pid == loader and fp.tty is not None
            shown = read_pty(fd, 1.0)
            assert "Stopped" not in shown and not re.search(r"EXIT:\d", shown), f"the shell saw the job stop: {shown!r}"
            assert f"[headroom] froze python ({loader})" in shown
            assert freezer.thaw(loader, "room made", "thawed")
            shown = read_pty(fd, 5, until="[headroom] resumed")
            assert "[headroom] resumed" in shown
            wait_for(lambda: not counting(tmp_path / "job.count", 0.2), 15, what="the job waiting for a line")
            os.write(fd, b"hello\n")
            shown = read_pty(fd, 10, until="EXIT:0")
            assert "GOT hello" in shown and "EXIT:0" in shown, f"the job lost its terminal: {shown!r}"
        finally:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(fd)


def test_a_leased_command_and_its_cgroup_are_never_frozen(tmp_path, make_manager, source):
    """A granted lease (the pid `headroom run` registers) and the cgroup `headroom run` made for it: the command grows
    within what it was granted, so freezing it would stop the very test the guard admitted."""
    with domain() as (cg, started, freezers):
        run_cgroup = cg.path / f"headroom-run-test-{uuid.uuid4().hex[:6]}"
        run_cgroup.mkdir()
        try:
            def in_run_cgroup():
                (run_cgroup / "cgroup.procs").write_text(str(os.getpid()))

            leased, leased_out = start_actor(tmp_path, "leased", join=in_run_cgroup, **GROW)
            started.append(leased)
            helper, helper_out = start_actor(tmp_path, "leased-helper", join=in_run_cgroup, step_mib=4, cap_mib=200)
            started.append(helper)  # a process the command detached (setsid): only its cgroup says it is the lease's
            manager = make_manager(ram={"enter": {}}, predict={"enter": {}})
            source.set(ram_available_bytes=10 * GiB)
            manager.tick()
            fields = {"holder": "olmo-test", "ram_bytes": GiB, "gpu_bytes": 0, "gpu": "any", "ttl_seconds": 60,
                      "pid": leased.pid, "free_worker": False, "priority": 0}
            lease, admission, _ = manager.request(fields, 0)
            assert lease is not None and lease.status == "granted", admission
            freezer = own(freezers, make_freezer(tmp_path, facts=manager.freeze_facts))
            pids = [leased.pid, helper.pid]
            assert freezer.freeze(pids, "below", growth=measure(pids)) is None
            assert counting(leased_out) and counting(helper_out)
            whys = {p.pid: p.why for p in freezer.last_passed}
            assert "lease" in whys[leased.pid] and "lease" in whys[helper.pid] and "headroom-run-" in whys[helper.pid]
        finally:
            for proc in started:
                end(proc)
            wait_for(lambda: not (run_cgroup / "cgroup.procs").read_text().strip(), 10, what="the run cgroup empty")
            run_cgroup.rmdir()


def test_the_guard_under_the_units_bounding_set_never_freezes_the_worker(tmp_path):
    """The shipped unit's capabilities (CAP_KILL only): the worker's sockets cannot be mapped to its pid, so the worker
    is known by its own report. It is the one that grows (an engine waking): nothing is frozen, the worker is freed."""
    from tests.guard.realstack import Allocator, Stack, TOKEN
    from tests.guard.test_protect_real import guard_config

    setpriv = need_binary("setpriv")
    need_freezer_root()
    with domain_cgroup(768 * 2**20) as cg:
        stack = Stack(tmp_path, cg, guard_config(), worker_hold_mib=100, worker_in_cgroup=True,
                      guard_prefix=(setpriv, "--bounding-set", "-all,+kill", "--inh-caps", "-all", "--"))
        bystander = Allocator(cg)
        try:
            bystander.hold(250)
            Path(f"/proc/{bystander.proc.pid}/oom_score_adj").write_text("1000")
            worker = stack.procs["worker"].pid
            wait_for(lambda: stack.worker.get("/control/state").json().get("pids") == [worker], 5, what="the report")
            time.sleep(2.5)  # the bystander's own growth is older than the growth window: it is idle now
            grow = ((cg.limit - cg.usage()) >> 20) - 16
            auth = {"Authorization": f"Bearer {TOKEN}"}
            stack.worker.put("/_test/grow", json={"mib": grow}, headers=auth, timeout=30)

            def protected() -> list[dict]:
                found = stack.guard.get("/v1/events", params={"limit": 200, "kind": "protect"}).json()["events"]
                return [e for e in found if e["message"].startswith("fast path: ")]

            first = wait_for(protected, 15, what="the fast path to act")[-1]["message"]
            assert "nothing frozen" in first and "the worker (its own report)" in first, first
            assert not stack.guard.get("/v1/frozen").json()["processes"]
            assert not stopped(worker) and not frozen_now(worker) and not frozen_now(bystander.proc.pid)
            assert stack.worker.get("/control/state").status_code == 200
        finally:
            bystander.stop()
            stack.stop()
