"""A guard SIGKILLed while a process is frozen leaves a record, and the next guard thaws the process at start."""

from __future__ import annotations

import pytest

from guard.protect import cgroupctl
from tests.guard.freezing import (CGROUPFS, counting, need_freezer_root, owned_cgroup, roots, run_guard, start_counter,
                                  stop)
from tests.helpers import wait_for


def sigkilled_guard_then_restart(tmp_path, grower, out, method):
    guard = run_guard(tmp_path / "state", grower.pid)
    try:
        assert guard.stdout.readline().strip() == f"frozen {method}"
        assert not counting(out)
    finally:
        guard.kill()  # SIGKILL: no exit handler runs
        guard.wait(timeout=10)
    assert not counting(out), "the process should still be frozen right after the guard died"
    restarted = run_guard(tmp_path / "state", "recover")
    line, _ = restarted.communicate(timeout=60)
    assert restarted.returncode == 0 and line.strip() == f"{grower.pid}:{method}"
    wait_for(lambda: counting(out, 0.2), timeout=5, what="the process running again after the restart")
    again = run_guard(tmp_path / "state", "recover")
    assert again.communicate(timeout=60)[0].strip() == "", "a second start found a stale record"


@pytest.mark.kernel
def test_sigkilled_guard_leaves_nothing_frozen_in_the_cgroup_it_made_once_restarted(tmp_path):
    need_freezer_root()
    grower, outs = start_counter(tmp_path, "grower", child=True)
    try:
        sigkilled_guard_then_restart(tmp_path, grower, outs[0], "cgroup-v1")
        assert counting(outs[1]), "the child frozen with its parent was not resumed"
        assert not list((CGROUPFS / "freezer" / "headroom-guard").glob(f"{grower.pid}-*")), "the cgroup it made is left"
    finally:
        stop(grower)


@pytest.mark.kernel
def test_sigkilled_guard_leaves_no_cgroup_frozen_once_restarted(tmp_path):
    need_freezer_root()
    version, root = roots()[0]
    with owned_cgroup(version, root) as (path, directory):
        grower, outs = start_counter(tmp_path, "grower", join=directory)
        try:
            sigkilled_guard_then_restart(tmp_path, grower, outs[0], f"cgroup-v{version}")
            assert not cgroupctl.is_frozen(cgroupctl.freezer_of(CGROUPFS, path, version))
        finally:
            stop(grower)
