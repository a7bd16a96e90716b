"""The fast path: its pure rules, the kernel-file reader on fixture trees, and its loop against real frozen processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from guard.protect.domain import DomainObs, DomainReader, cgroup_available
from guard.protect.fastpath import Episode, FastPath, FastThresholds, cause_gone, crossing_time, next_interval, thresholds_for
from guard.common.settings import GuardSettings
from tests.guard.freezing import counting, make_freezer, need_freezer_root, start_counter, stop
from tests.guard.support import GiB, MiB
from tests.helpers import need

MEMINFO = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\nCached: 100 kB\n"


def test_the_interval_shrinks_with_the_headroom_left_above_the_freeze_threshold():
    rate, shortest, longest = 3 * GiB, 0.01, 0.25
    assert next_interval(10 * GiB, 1 * GiB, rate, shortest, longest) == longest
    assert next_interval(1 * GiB + 300 * MiB, 1 * GiB, rate, shortest, longest) == pytest.approx(0.0977, abs=1e-3)
    assert next_interval(1 * GiB + 10 * MiB, 1 * GiB, rate, shortest, longest) == shortest
    assert next_interval(0.5 * GiB, 1 * GiB, rate, shortest, longest) == shortest  # below it: as fast as allowed


def test_the_crossing_is_interpolated_between_the_last_look_above_and_the_first_below():
    prev, cur = DomainObs(10.0, 2 * GiB, 300 * MiB), DomainObs(10.1, 2 * GiB, 100 * MiB)
    assert crossing_time(prev, cur, 200 * MiB) == pytest.approx(10.05)
    assert crossing_time(None, cur, 200 * MiB) == 10.1
    assert crossing_time(DomainObs(9.0, 2 * GiB, 150 * MiB), cur, 200 * MiB) == 10.1  # was already below


def test_thresholds_come_from_the_ram_rule_freeze_and_pause_levels():
    th = thresholds_for(GuardSettings(), 2 * GiB)
    assert (th.freeze, th.pause, th.band) == pytest.approx((0.05 * 2 * GiB, 0.15 * 2 * GiB, 0.05 * 2 * GiB))
    assert thresholds_for(GuardSettings(ram={"enter": {"pause": "15%"}}), 2 * GiB).freeze is None


def test_the_cause_is_gone_when_the_frozen_processes_exited_or_the_worker_fits_back():
    th = FastThresholds(freeze=100 * MiB, pause=300 * MiB, band=100 * MiB)
    ep = Episode(started_at=0, crossed_at=0, available_at_start=100 * MiB, pids={4242}, max_available=1100 * MiB)
    assert ep.footprint == 1000 * MiB
    low = DomainObs(1, 2 * GiB, 1000 * MiB)  # the grower still holds its memory: waking the worker would not fit
    assert not cause_gone(ep, low, th, alive=lambda pid: True, frozen=0)
    assert cause_gone(ep, low, th, alive=lambda pid: False, frozen=0)  # it exited
    assert cause_gone(ep, DomainObs(1, 2 * GiB, 1500 * MiB), th, alive=lambda pid: True, frozen=0)
    assert not cause_gone(ep, DomainObs(1, 2 * GiB, 1900 * MiB), th, alive=lambda pid: False, frozen=1)  # still frozen


def test_a_thawed_grower_that_still_grows_keeps_the_worker_freed():
    """The room a thawed grower goes on taking is not room for the worker's wake: both counting on it is a kill."""
    th = FastThresholds(freeze=100 * MiB, pause=300 * MiB, band=100 * MiB)
    ep = Episode(started_at=0, crossed_at=0, available_at_start=100 * MiB, pids={4242}, max_available=1100 * MiB,
                 thawed_at=10.0)
    roomy = DomainObs(11.0, 2 * GiB, 1500 * MiB)  # the worker fits back by the numbers, 1 s after the thaw
    assert not cause_gone(ep, roomy, th, alive=lambda pid: True, frozen=0)
    later = DomainObs(12.5, 2 * GiB, 1500 * MiB)
    assert not cause_gone(ep, later, th, alive=lambda pid: True, frozen=0, growing=lambda pids: 4242 in pids)
    assert cause_gone(ep, later, th, alive=lambda pid: True, frozen=0, growing=lambda pids: False)  # quiet: it may
    assert cause_gone(ep, roomy, th, alive=lambda pid: False, frozen=0)  # it exited: its room is back at once


def test_cgroup_available_is_limit_minus_usage_plus_reclaimable_capped_by_the_host():
    assert cgroup_available(2 * GiB, 1 * GiB, 100 * MiB, None) == 1 * GiB + 100 * MiB
    assert cgroup_available(2 * GiB, 1 * GiB, None, 500 * MiB) == 500 * MiB
    assert cgroup_available(2 * GiB, 3 * GiB, 0, None) == 0


def _tree(tmp_path: Path, version: int) -> tuple[Path, Path]:
    procfs, cgroupfs = tmp_path / "proc", tmp_path / "cgroup"
    procfs.mkdir()
    (procfs / "meminfo").write_text(MEMINFO)
    for pid in ("1", "77"):
        (procfs / pid).mkdir()
    if version == 1:
        group = cgroupfs / "memory" / "dom"
        group.mkdir(parents=True)
        (cgroupfs / "memory" / "memory.usage_in_bytes").write_text("1\n")
        (group / "memory.usage_in_bytes").write_text(str(1536 * MiB))
        (group / "memory.limit_in_bytes").write_text(str(2 * GiB))
        (group / "memory.stat").write_text(f"total_inactive_file {64 * MiB}\n")
    else:
        group = cgroupfs / "dom"
        group.mkdir(parents=True)
        (cgroupfs / "cgroup.controllers").write_text("cpu memory\n")
        (group / "memory.current").write_text(str(1536 * MiB))
        (group / "memory.max").write_text(str(2 * GiB))
        (group / "memory.stat").write_text(f"inactive_file {64 * MiB}\n")
    (group / "cgroup.procs").write_text("77\n")
    (group / "child").mkdir()
    (group / "child" / "cgroup.procs").write_text("78\n")
    return procfs, cgroupfs


@pytest.mark.parametrize("version", [1, 2])
def test_the_reader_reads_a_cgroup_domain_with_the_exporters_parsers(tmp_path, version):
    procfs, cgroupfs = _tree(tmp_path, version)
    reader = DomainReader("/dom", procfs, cgroupfs, clock=lambda: 5.0)
    obs = reader.read()
    assert (obs.taken_at, obs.total_bytes, obs.available_bytes) == (5.0, 2 * GiB, 512 * MiB + 64 * MiB)
    assert reader.pids() == [77, 78]
    assert DomainReader("/gone", procfs, cgroupfs).read() is None


def test_the_reader_reads_the_host_from_meminfo(tmp_path):
    procfs, cgroupfs = _tree(tmp_path, 1)
    obs = DomainReader("host", procfs, cgroupfs).read()
    assert (obs.total_bytes, obs.available_bytes) == (16000000 * 1024, 8000000 * 1024)
    assert DomainReader("host", procfs, cgroupfs).pids() == [1, 77]


class Recorder:
    """The manager side of the fast path: what it asked for, in order."""

    def __init__(self):
        self.calls: list = []

    def protect(self, desired, message, data=None):
        self.calls.append((desired.state if desired else None, message, data or {}))


class Script:
    """A reader whose looks the test sets one by one (the real reader is tested above and in the real-kernel proof)."""

    def __init__(self, pids):
        self.obs, self._pids, self.directory, self.root = None, pids, None, None

    def read(self):
        return self.obs

    def pids(self):
        return list(self._pids)


def test_without_a_freezer_the_freeze_level_frees_the_worker_once_per_crossing():
    manager, reader, now = Recorder(), Script([]), [100.0]
    fast = FastPath(GuardSettings(), reader, manager, freezer=None, clock=lambda: now[0], alive=lambda pid: False)
    for t, avail in ((100.0, 1500), (100.01, 90), (100.02, 85), (100.03, 80)):
        now[0], reader.obs = t + 0.002, DomainObs(t, 2 * GiB, avail * MiB)
        fast.step()
    assert [c[0] for c in manager.calls] == ["freed"]
    assert fast.interval == GuardSettings().fast_path_min_interval_seconds
    now[0], reader.obs = 101.0, DomainObs(101.0, 2 * GiB, 1900 * MiB)  # the worker's memory came back, nothing frozen
    fast.step()
    assert [c[0] for c in manager.calls] == ["freed", None] and fast.episode is None


def test_the_fast_path_freezes_a_real_process_frees_the_worker_and_thaws_it_above_pause(tmp_path):
    from tests.guard.adversary import end, start_actor
    from tests.guard.realstack import domain_cgroup

    need_freezer_root()
    with domain_cgroup(GiB) as cg:
        proc, out = start_actor(tmp_path, "grower", join=cg.join, step_mib=4, cap_mib=600)  # 80 MiB/s
        try:
            manager, reader = Recorder(), Script([proc.pid])
            freezer = make_freezer(tmp_path)
            fast = FastPath(GuardSettings(), reader, manager, freezer=freezer, clock=lambda: reader.obs.taken_at + 0.003)
            reader.obs = DomainObs(100.0, 2 * GiB, 1500 * MiB)
            fast.step()
            time.sleep(0.4)  # it grows meanwhile (the fast path's samples are what the choice ranks by)
            reader.obs = DomainObs(100.02, 2 * GiB, 90 * MiB)  # below 5 % of 2 GiB
            fast.step()
            assert [fp.pid for fp in freezer.frozen()] == [proc.pid] and not counting(out)
            assert manager.calls[0][0] == "freed" and manager.calls[0][2]["pid"] == proc.pid
            crossed = 100.0 + (1500 - 102.4) / (1500 - 90) * 0.02  # interpolated between the two looks
            assert fast.reactions.recent == [pytest.approx(100.023 - crossed)]
            reader.obs = DomainObs(101.5, 2 * GiB, 1200 * MiB)  # the worker gave back its memory: above pause
            fast.step()
            assert freezer.frozen() == () and counting(out)
            assert manager.calls[-1][0] == "freed"  # it still runs and holds memory: the worker would not fit back yet
            time.sleep(0.4)
            reader.obs = DomainObs(103.0, 2 * GiB, 100 * MiB)  # it grows again to the freeze level: frozen again
            fast.step()
            assert [fp.pid for fp in freezer.frozen()] == [proc.pid]
            fast.close()  # the guard stops: nothing stays frozen
            assert freezer.frozen() == () and counting(out)
        finally:
            freezer.close()
            end(proc)


def test_a_gpu_freeze_frees_the_worker_until_the_frozen_process_exits(tmp_path, monkeypatch, make_manager):
    import json

    from exporter.nvml import Nvml
    from guard.app import build_gpu_watch
    from tests.guard.test_freezer_gpu import scenario, set_device

    need_freezer_root()
    grower, outs = start_counter(tmp_path, "gpu-grower")
    try:
        path = tmp_path / "nvml.json"
        path.write_text(json.dumps(scenario(40, {grower.pid: 5})))
        monkeypatch.setenv("HEADROOM_FAKE_NVML", str(path))
        manager = make_manager(gpu={"enter": {"warn": "12%", "pause": "10%", "freeze": "2%"}})
        freezer = make_freezer(tmp_path / "f", gpu={"enter": {"freeze": "2%"}})
        watch = build_gpu_watch(manager.settings, manager, freezer, Nvml("tests.fakes.fake_pynvml"))
        watch.step()
        assert manager.override is None
        set_device(scenario(1, {grower.pid: 44}))  # it loads weights: 1 of 80 GiB free, below 2 %
        watch.step()
        assert manager.override.state == "freed" and not counting(outs[0])
        manager.tick()
        assert manager.decision.desired.state == "freed"
        manager.end_gpu_episode()
        assert manager.override is not None, "the frozen process still lives: the worker stays freed"
        set_device(scenario(31, {grower.pid: 44}))  # the worker slept: thawed
        watch.step()
        assert counting(outs[0])
    finally:
        stop(grower)
    manager.end_gpu_episode()
    assert manager.override is None and [e["kind"] for e in manager.store.events(10, kind="protect")] == ["protect"] * 2


def test_the_kernel_wakes_the_fast_path_when_usage_crosses_a_threshold(tmp_path):
    from guard.protect.domain import Waker
    from tests.guard.realstack import Allocator, domain_cgroup

    with domain_cgroup(512 * MiB) as group:
        need(group.version == 1, "cgroup v1 memory thresholds (v2 has no notification for memory.current)")
        reader = DomainReader(group.name)
        waker = Waker(reader)
        waker.arm([group.usage() + 64 * MiB])
        allocator = Allocator(group)
        try:
            assert not waker.wait(0.2), "woken with nothing crossed"
            holding = threading.Thread(target=allocator.hold, args=(128,), daemon=True)
            holding.start()
            assert waker.wait(10), "the kernel did not signal the crossing"
            holding.join(timeout=30)
            assert reader.read().available_bytes < 512 * MiB - 64 * MiB
        finally:
            allocator.stop()
            waker.close()
