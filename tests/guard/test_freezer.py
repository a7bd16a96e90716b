"""The freezer against the real kernel: it freezes the process the kernel would kill, only that one, and thaws it."""

from __future__ import annotations

import os
import signal

import pytest

from guard import cgroupctl
from guard.freezer import Freezer
from guard.frozenfile import read_records
from guard.settings import GuardSettings
from guard.store import Store
from guard.procinfo import ProcInfo, Stat, parse_stat, read_stat
from guard.victim import is_headroom, protect_reason
from tests.helpers import need, wait_for
from tests.guard.freezing import (CGROUPFS, counting, make_freezer, need_freezer_root, owned_cgroup, roots, start_counter,
                                  stop)

STAT = "4242 (python3 (a) b) S 1000 4242 4242 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 1 0 777 1000 300 18446744073709551615"


def info(pid=4242, comm="python3", cmdline=("python3", "load.py"), cgroups=None, flags=0, ppid=1000):
    stat = Stat(comm, "S", ppid, pid, flags, 777, 300 * 4096)
    return ProcInfo(pid, stat, 900, tuple(cmdline), cgroups or {"": "/user.slice/session-1.scope"})


def test_parse_stat_keeps_a_command_with_spaces_and_parentheses():
    stat = parse_stat(STAT)
    assert stat.comm == "python3 (a) b" and stat.state == "S" and stat.ppid == 1000 and stat.pgid == 4242
    assert stat.start_ticks == 777 and stat.rss_bytes == 300 * os.sysconf("SC_PAGE_SIZE")


def test_headroom_processes_are_recognised_by_their_command_line():
    assert is_headroom(("/opt/venv/bin/python", "/opt/venv/bin/headroom", "guard"))
    assert is_headroom(("headroom", "worker"))
    assert is_headroom(("python3", "-m", "guard.cli"))
    assert not is_headroom(("python3", "test_olmo2_7b_single.py"))
    assert not is_headroom(("python3", "-m", "pytest"))


@pytest.mark.parametrize("proc, rules, why", [
    (info(pid=1), [], "PID 1"),
    (info(flags=0x00200000, cmdline=()), [], "kernel thread"),
    (info(pid=77), [], "protected pid"),
    (info(cmdline=("/usr/bin/headroom", "exporter")), [], "headroom"),
    (info(comm="sshd", cmdline=("/usr/sbin/sshd", "-D")), ["command:sshd"], "command:sshd"),
    (info(cgroups={"name=systemd": "/system.slice/postgresql.service"}), ["unit:postgresql.service"], "unit:"),
    (info(cgroups={"": "/prod/db/inner"}), ["cgroup:/prod/db"], "cgroup:/prod/db"),
])
def test_protected_processes_are_never_candidates(proc, rules, why):
    assert why in protect_reason(proc, rules, {77}, True)


def test_an_ordinary_process_is_not_protected():
    assert protect_reason(info(cgroups={"": "/prod/dbx"}), ["cgroup:/prod/db", "command:sshd"], {77}, True) is None


@pytest.mark.kernel
@pytest.mark.parametrize("version", [2, 1])
def test_freezes_the_highest_oom_score_by_its_own_cgroup_and_thaws_it(tmp_path, version):
    need_freezer_root()
    root = dict(roots()).get(version)
    need(root is not None, f"a cgroup v{version} freezer (this project's machines have both hierarchies)")
    worker, worker_out = start_counter(tmp_path, "worker", oom_score_adj=1000)
    decoy, decoy_out = start_counter(tmp_path, "decoy", oom_score_adj=100)
    try:
        with owned_cgroup(version, root) as (path, directory):
            grower, grower_out = start_counter(tmp_path, "grower", join=directory, oom_score_adj=600)
            try:
                freezer = make_freezer(tmp_path, protected={worker.pid})
                fp = freezer.freeze([worker.pid, decoy.pid, grower.pid], "ram below the freeze threshold")
                assert fp is not None and fp.pid == grower.pid, "not the highest unprotected oom_score"
                assert fp.method == f"cgroup-v{version}" and fp.cgroup == path
                cg = cgroupctl.freezer_of(CGROUPFS, path, version)
                assert cgroupctl.is_frozen(cg), "the kernel does not report the cgroup frozen"
                assert not counting(grower_out[0]) and counting(worker_out[0]) and counting(decoy_out[0])
                assert [f.pid for f in freezer.frozen()] == [grower.pid]
                assert read_records(freezer.records)[0]["pid"] == grower.pid
                assert freezer.thaw(grower.pid, "room made", "thawed")
                assert counting(grower_out[0]) and not cgroupctl.is_frozen(cg)
                assert read_records(freezer.records) == [] and freezer.frozen() == ()
                kinds = [e["kind"] for e in freezer.store.events()]
                assert kinds == ["freeze", "thaw"] and freezer.outcomes["thawed"] == 1
            finally:
                stop(grower)
    finally:
        stop(worker)
        stop(decoy)


@pytest.mark.kernel
def test_without_a_cgroup_of_its_own_the_whole_process_group_is_sigstopped(tmp_path):
    need_freezer_root()
    grower, outs = start_counter(tmp_path, "grower", child=True, oom_score_adj=600)
    try:
        freezer = make_freezer(tmp_path)
        fp = freezer.freeze([grower.pid], "ram below the freeze threshold")
        assert fp is not None and fp.method == "sigstop" and fp.pgid == grower.pid and len(fp.members) == 2
        wait_for(lambda: all(read_stat(pid).state == "T" for pid, _ in fp.members), timeout=5,
                 what="every process of the group stopped (state T)")
        assert not counting(outs[0]) and not counting(outs[1])
        freezer.close()
        assert counting(outs[0]) and counting(outs[1]) and freezer.outcomes["shutdown"] == 1
    finally:
        stop(grower)


@pytest.mark.kernel
def test_nothing_is_frozen_when_every_process_is_protected(tmp_path):
    need_freezer_root()
    worker, worker_out = start_counter(tmp_path, "worker", oom_score_adj=900)
    other, other_out = start_counter(tmp_path, "other", oom_score_adj=800)
    try:
        comm = read_stat(other.pid).comm
        freezer = make_freezer(tmp_path, protected={worker.pid}, freeze_protect=[f"command:{comm}"])
        assert freezer.freeze([worker.pid, other.pid], "ram below the freeze threshold") is None
        assert counting(worker_out[0]) and counting(other_out[0]) and freezer.frozen() == ()
        assert read_records(freezer.records) == []
    finally:
        stop(worker)
        stop(other)


@pytest.mark.kernel
def test_on_no_room_thaw_lets_it_run_after_freeze_max_seconds(tmp_path):
    need_freezer_root()
    now = [1000.0]
    grower, outs = start_counter(tmp_path, "grower")
    try:
        freezer = make_freezer(tmp_path, clock=lambda: now[0], freeze_max_seconds=20, on_no_room="thaw")
        assert freezer.freeze([grower.pid], "ram below the freeze threshold") is not None
        now[0] = 1019.0  # the freezer's clock (monotonic in the guard) runs freeze_max_seconds
        assert freezer.resolve_no_room() == [] and not counting(outs[0])
        now[0] = 1020.0
        assert [what for what, _ in freezer.resolve_no_room()] == ["thawed"]
        assert counting(outs[0]) and freezer.frozen() == () and freezer.outcomes["no_room_thawed"] == 1
        assert freezer.freeze([grower.pid], "still below") is None, "released to the kernel, never frozen again"
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
        assert freezer.freeze([grower.pid], "ram below the freeze threshold") is not None
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
        assert freezer.freeze([grower.pid], "ram below the freeze threshold") is not None
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
def test_a_cgroup_the_guard_may_not_write_falls_back_to_sigstop(tmp_path):
    """A cgroup delegated to a user is not writable by a guard without CAP_DAC_OVERRIDE: it must still stop the grower."""
    need_freezer_root()
    root = dict(roots()).get(2)
    need(root is not None, "a cgroup v2 freezer (cgroup.freeze)")
    with owned_cgroup(2, root) as (path, directory):
        grower, outs = start_counter(tmp_path, "grower", join=directory)
        try:
            fake = tmp_path / "cgroupfs"  # the same tree, except that cgroup.freeze cannot be written
            for name in ("cgroup.procs", "cgroup.controllers"):
                (fake / "unified").mkdir(parents=True, exist_ok=True)
                (fake / "unified" / name).write_text("")
            (fake / "unified" / path.lstrip("/") / "cgroup.freeze").mkdir(parents=True)
            (fake / "unified" / path.lstrip("/") / "cgroup.procs").write_text(f"{grower.pid}\n")
            freezer = Freezer(GuardSettings(), Store(tmp_path / "state"), cgroupfs=fake)
            fp = freezer.freeze([grower.pid], "ram below the freeze threshold")
            assert fp is not None and fp.method == "sigstop" and not counting(outs[0])
            assert read_records(freezer.records)[0]["method"] == "sigstop"
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
        fp = freezer.freeze([suspended.pid, grower.pid], "ram below the freeze threshold")
        assert fp is not None and fp.pid == grower.pid, "a stopped process frees nothing: the next one is frozen"
        freezer.close()
        assert counting(grower_out[0]) and not counting(suspended_out[0]), "the user's suspended job was resumed"
    finally:
        stop(suspended)
        stop(grower)
