"""The freeze tried as an adversary would: only the grower's own tree is frozen, by a cgroup freezer, never a bystander.

Real processes in a memory cgroup each test makes (1 GiB), real cgroup freezers, growth measured as the fast path does.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

from guard import cgroupctl
from guard.domain import DomainReader
from guard.freezer import STORE_KEY
from guard.growth import domain_shmem
from guard.procinfo import descendants, parents, read_proc
from tests.guard.adversary import end, frozen_now, measure, start_actor, stopped
from tests.guard.freezing import CGROUPFS, counting, make_freezer, need_freezer_root, owned_cgroup, roots
from tests.guard.realstack import domain_cgroup
from tests.helpers import need, wait_for

pytestmark = pytest.mark.kernel
GiB = 2**30
GROW = {"step_mib": 8, "cap_mib": 320}  # 160 MiB/s for 2 s: a loader, slowed down


@contextlib.contextmanager
def domain():
    need_freezer_root()
    need(cgroupctl.v1_freezer_root(CGROUPFS) is not None, "the v1 freezer hierarchy (the guard makes its cgroups there)")
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
        live = [info for pid in tree if (info := read_proc(pid)) is not None and info.stat.state != "Z"]  # a zombie runs no more
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
        assert [what for what, _ in freezer.resolve_no_room(1020.0)] == ["thawed"] and counting(out)
        for _ in range(3):  # the domain keeps falling: the released grower is the kernel's now, the idle db is no grower
            assert freezer.freeze(pids, "further below", now=now[0], growth=measure(pids)) is None
        assert counting(out) and counting(idle_out) and freezer.store.get(STORE_KEY) == []
        assert any("on_no_room" in p.why or "by hand" in p.why for p in freezer.last_passed)
