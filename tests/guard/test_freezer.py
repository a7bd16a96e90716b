"""The freezer against the real kernel: it freezes the process the kernel would kill, only that one, and thaws it."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import pytest

from guard.protect import cgroupctl
from guard.protect.freezer import Freezer
from guard.protect.frozenfile import read_records
from guard.common.settings import GuardSettings
from guard.common.store import Store
from guard.protect.growth import Sample, Usage, grown
from guard.protect.procinfo import ProcInfo, Stat, parse_stat, parse_status, read_stat, tty_path
from guard.protect.victim import Protected, protect_reason
from tests.helpers import need, wait_for
from tests.guard.adversary import end, measure, start_actor
from tests.guard.freezing import (CGROUPFS, GREW, counting, grew, make_freezer, need_freezer_root, owned_cgroup, roots,
                                  start_counter, stop)
from tests.guard.realstack import domain_cgroup

GiB = 2**30
STAT = ("4242 (python3 (a) b) S 1000 4242 4242 34817 -1 4194560 1 0 0 0 5 6 0 0 20 0 1 0 777 1000 300 "
        "18446744073709551615")


def info(pid=4242, comm="python3", cgroups=None, flags=0, ppid=1000, state="S", adj=0, tracer=0):
    stat = Stat(comm, state, ppid, pid, flags, 777, 300 * 4096)
    return ProcInfo(pid, stat, adj, tracer, cgroups or {"": "/user.slice/session-1.scope"})


def test_parse_stat_keeps_a_command_with_spaces_and_parentheses():
    stat = parse_stat(STAT)
    assert stat.comm == "python3 (a) b" and stat.state == "S" and stat.ppid == 1000 and stat.pgid == 4242
    assert stat.start_ticks == 777 and stat.rss_bytes == 300 * os.sysconf("SC_PAGE_SIZE") and stat.tty_nr == 34817
    assert str(tty_path(stat.tty_nr)) == "/dev/pts/1"


def test_parse_status_counts_anonymous_and_shmem_pages():
    status = parse_status("Name:\tx\nTracerPid:\t77\nRssAnon:\t  1024 kB\nRssFile:\t 99 kB\nRssShmem:\t 2048 kB\n")
    assert status.charged_bytes == 3 * 2**20 and status.tracer_pid == 77


FACTS = Protected({77: "the worker (its own report)"}, {}, {"/lease/run": "lease L1"})


@pytest.mark.parametrize("proc, rules, why", [
    (info(pid=1), [], "PID 1"),
    (info(flags=0x00200000), [], "kernel thread"),
    (info(pid=77), [], "the worker"),
    (info(adj=-1000), [], "oom_score_adj -1000"),
    (info(state="T"), [], "already stopped"),
    (info(tracer=5), [], "traced"),
    (info(state="Z"), [], "zombie"),
    (info(cgroups={"memory": "/lease/run/x"}), [], "lease L1"),
    (info(comm="sshd"), ["command:sshd"], "command:sshd"),
    (info(cgroups={"name=systemd": "/system.slice/postgresql.service"}), ["unit:postgresql.service"], "unit:"),
    (info(cgroups={"": "/system.slice/cron.service"}), GuardSettings().freeze_protect, "cgroup:/system.slice"),
    (info(cgroups={"": "/prod/db/inner"}), ["cgroup:/prod/db"], "cgroup:/prod/db"),
])
def test_protected_processes_are_never_candidates(proc, rules, why):
    assert why in protect_reason(proc, Protected(FACTS.pids, {}, FACTS.cgroups, tuple(rules)))


def test_an_ordinary_process_is_not_protected_and_a_zombie_is_no_kernel_thread():
    facts = Protected(FACTS.pids, {}, FACTS.cgroups, ("cgroup:/prod/db", "command:sshd"))
    assert protect_reason(info(cgroups={"": "/prod/dbx"}), facts) is None
    assert protect_reason(info(cgroups={"": "/user.slice/user-1000.slice/session-2.scope"}),
                          Protected(rules=tuple(GuardSettings().freeze_protect))) is None
    assert not info(state="Z", flags=0x4).kernel_thread


def test_growth_counts_newcomers_whole_and_writes_only_as_far_as_tmpfs_grew():
    base = Sample(0.0, {1: Usage(10, 100, 0), 2: Usage(20, 500, 1000)}, shmem_bytes=0)
    cur = Sample(1.0, {1: Usage(10, 150, 0), 2: Usage(20, 500, 9000), 3: Usage(30, 70, None)}, shmem_bytes=3000)
    assert grown(base, cur) == {1: 50, 2: 3000, 3: 70}
    assert grown(replace(base, shmem_bytes=None), cur)[2] == 0, "without the domain's shmem, writes count for nothing"
    assert grown(base, replace(cur, usage={1: Usage(11, 40, 0)}, shmem_bytes=0)) == {1: 40}, "a reused pid is new"


@pytest.mark.kernel
@pytest.mark.parametrize("version", [2, 1])
def test_freezes_the_grower_by_its_own_cgroup_and_thaws_it(tmp_path, version):
    need_freezer_root()
    root = dict(roots()).get(version)
    need(root is not None, f"a cgroup v{version} freezer (this project's machines have both hierarchies)")
    with domain_cgroup(GiB) as cg, owned_cgroup(version, root) as (path, directory):
        def join():
            cg.join()
            (directory / "cgroup.procs").write_text(str(os.getpid()))

        decoy, decoy_out = start_actor(tmp_path, "decoy", join=cg.join, hold_mib=100, adj=1000)
        grower, grower_out = start_actor(tmp_path, "grower", join=join, step_mib=8, cap_mib=320)
        freezer = make_freezer(tmp_path)
        try:
            pids = [decoy.pid, grower.pid]
            fp = freezer.freeze(pids, "ram below the freeze threshold", growth=measure(pids))
            assert fp is not None and fp.pid == grower.pid, "not the grower"
            assert fp.method == f"cgroup-v{version}" and fp.cgroup == path and fp.moved_from is None
            cg_ = cgroupctl.freezer_of(CGROUPFS, path, version)
            assert cgroupctl.is_frozen(cg_), "the kernel does not report the cgroup frozen"
            assert not counting(grower_out) and counting(decoy_out)
            assert [f.pid for f in freezer.frozen()] == [grower.pid]
            assert read_records(freezer.records)[0]["pid"] == grower.pid
            assert freezer.thaw(grower.pid, "room made", "thawed")
            assert counting(grower_out) and not cgroupctl.is_frozen(cg_)
            assert read_records(freezer.records) == [] and freezer.frozen() == ()
            kinds = [e["kind"] for e in freezer.store.events()]
            assert kinds == ["freeze", "thaw"] and freezer.outcomes["thawed"] == 1
        finally:
            freezer.close()
            end(grower)
            end(decoy)


@pytest.mark.kernel
def test_nothing_is_frozen_when_every_grower_is_protected(tmp_path):
    need_freezer_root()
    with domain_cgroup(GiB) as cg:
        worker, worker_out = start_actor(tmp_path, "worker", join=cg.join, step_mib=4, cap_mib=200)
        other, other_out = start_actor(tmp_path, "other", join=cg.join, step_mib=4, cap_mib=200)
        try:
            freezer = make_freezer(tmp_path, protected={worker.pid}, freeze_protect=[f"cgroup:{cg.name}"])
            pids = [worker.pid, other.pid]
            assert freezer.freeze(pids, "ram below the freeze threshold", growth=measure(pids)) is None
            assert counting(worker_out) and counting(other_out) and freezer.frozen() == ()
            assert read_records(freezer.records) == []
            assert {p.pid for p in freezer.last_passed} == {worker.pid, other.pid}
        finally:
            end(worker)
            end(other)


@pytest.mark.kernel
def test_on_no_room_thaw_lets_it_run_after_freeze_max_seconds(tmp_path):
    need_freezer_root()
    now = [1000.0]
    grower, outs = start_counter(tmp_path, "grower")
    try:
        freezer = make_freezer(tmp_path, clock=lambda: now[0], freeze_max_seconds=20, on_no_room="thaw")
        assert freezer.freeze([grower.pid], "ram below the freeze threshold", growth=grew(grower.pid)) is not None
        now[0] = 1019.0  # the freezer's clock (monotonic in the guard) runs freeze_max_seconds
        assert freezer.resolve_no_room() == [] and not counting(outs[0])
        now[0] = 1020.0
        assert [what for what, _ in freezer.resolve_no_room()] == ["thawed"]
        assert counting(outs[0]) and freezer.frozen() == () and freezer.outcomes["no_room_thawed"] == 1
        assert freezer.freeze([grower.pid], "still below", growth=grew(grower.pid)) is None, "the kernel's now"
    finally:
        stop(grower)


@pytest.mark.kernel
def test_freeze_max_seconds_runs_on_the_monotonic_clock_not_the_wall_clock(tmp_path):
    """An NTP step of an hour ends no freeze early; 20 s on the monotonic clock do."""
    need_freezer_root()
    wall, mono = [1000.0], [50.0]
    grower, outs = start_counter(tmp_path, "grower")
    try:
        freezer = make_freezer(tmp_path, clock=lambda: wall[0], monotonic=lambda: mono[0], freeze_max_seconds=20)
        assert freezer.freeze([grower.pid], "ram below the freeze threshold", growth=grew(grower.pid)) is not None
        wall[0] += 3600.0
        mono[0] += 1.0
        assert freezer.resolve_no_room() == [] and not counting(outs[0]), "a wall-clock step ended the freeze"
        assert 0.9 < freezer.frozen_seconds(freezer.frozen()[0]) < 1.1
        mono[0] += 19.0
        assert [what for what, _ in freezer.resolve_no_room()] == ["thawed"] and counting(outs[0])
    finally:
        stop(grower)


@pytest.mark.kernel
@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_on_no_room_terminate_sends_sigterm_then_sigkill(tmp_path, ignores_sigterm):
    need_freezer_root()
    grower, outs = start_counter(tmp_path, "grower", ignores_sigterm=ignores_sigterm)
    try:
        now = [100.0]
        freezer = make_freezer(tmp_path, clock=lambda: now[0], freeze_max_seconds=5, on_no_room="terminate",
                               freeze_terminate_grace_seconds=3)
        assert freezer.freeze([grower.pid], "ram below", growth=grew(grower.pid)) is not None
        now[0] = 105.0
        assert [what for what, _ in freezer.resolve_no_room()] == ["sigterm"] and freezer.frozen() == ()
        if ignores_sigterm:
            assert counting(outs[0]), "thawed after SIGTERM, it should run (and ignore it) until the grace ends"
        else:
            assert grower.wait(timeout=10) == -signal.SIGTERM
        now[0] = 108.0
        final = [what for what, _ in freezer.resolve_no_room()]
        assert final == (["sigkill"] if ignores_sigterm else ["exited"])
        assert grower.wait(timeout=10) == (-signal.SIGKILL if ignores_sigterm else -signal.SIGTERM)
        assert freezer.outcomes["terminated"] == 1
    finally:
        if grower.poll() is None:
            stop(grower)


@pytest.mark.kernel
def test_a_cgroup_the_guard_may_not_write_falls_back_to_one_it_makes(tmp_path):
    """A cgroup delegated to a user is not writable by a guard without CAP_DAC_OVERRIDE: the guard freezes the tree in
    a v1 freezer cgroup of its own instead."""
    need_freezer_root()
    root = dict(roots()).get(2)
    need(root is not None and dict(roots()).get(1) is not None, "both freezers (cgroup.freeze and the v1 freezer)")
    with owned_cgroup(2, root) as (path, directory):
        grower, outs = start_counter(tmp_path, "grower", join=directory)
        try:
            fake = tmp_path / "cgroupfs"  # the same tree, except that cgroup.freeze cannot be written
            for name in ("cgroup.procs", "cgroup.controllers"):
                (fake / "unified").mkdir(parents=True, exist_ok=True)
                (fake / "unified" / name).write_text("")
            (fake / "unified" / path.lstrip("/") / "cgroup.freeze").mkdir(parents=True)
            (fake / "unified" / path.lstrip("/") / "cgroup.procs").write_text(f"{grower.pid}\n")
            (fake / "freezer").symlink_to(CGROUPFS / "freezer")
            freezer = Freezer(GuardSettings(), Store(tmp_path / "state"), cgroupfs=fake)
            fp = freezer.freeze([grower.pid], "ram below the freeze threshold", growth=grew(grower.pid))
            assert fp is not None and fp.method == "cgroup-v1" and fp.moved_from == "/" and not counting(outs[0])
            assert read_records(freezer.records)[0]["method"] == "cgroup-v1"
            assert freezer.thaw(grower.pid, "room made", "thawed") and counting(outs[0])
        finally:
            stop(grower)


@pytest.mark.kernel
def test_a_process_someone_else_stopped_is_neither_chosen_nor_resumed(tmp_path):
    need_freezer_root()
    suspended, suspended_out = start_counter(tmp_path, "suspended", oom_score_adj=900)
    grower, grower_out = start_counter(tmp_path, "grower", oom_score_adj=300)
    try:
        os.kill(suspended.pid, signal.SIGSTOP)  # a job its user suspended with Ctrl-Z
        wait_for(lambda: read_stat(suspended.pid).state == "T", timeout=5, what="the suspended job stopped")
        freezer = make_freezer(tmp_path)
        growth = {suspended.pid: 2 * GREW, grower.pid: GREW}  # it grew most before its user suspended it
        try:
            fp = freezer.freeze([suspended.pid, grower.pid], "ram below", growth=growth)
            assert fp is not None and fp.pid == grower.pid, "a stopped process frees nothing: the next one is frozen"
            assert "already stopped" in freezer.last_passed[0].why
        finally:
            freezer.close()
        assert counting(grower_out[0]) and not counting(suspended_out[0]), "the user's suspended job was resumed"
    finally:
        stop(suspended)
        stop(grower)
