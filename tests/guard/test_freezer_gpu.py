"""The GPU freezer against the NVML fake: a process growing on a GPU is frozen (never the worker), then thawed."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from exporter.nvml import Nvml
from guard.app import build_gpu_watch
from guard.protect.gpufreeze import GpuFreezeWatch, poll_interval, threshold_bytes
from guard.common.settings import GuardSettings
from tests.fakes import fake_pynvml
from guard.core.protection import Protection
from tests.guard.freezing import counting, make_freezer, need_freezer_root, start_counter, stop

GIB = 1 << 30


def scenario(free_gib: float, processes: dict[int, float]) -> dict:
    total = 80 * GIB
    used = total - int(free_gib * GIB)
    return {"driver": "550.54.15", "gpus": [{
        "name": "NVIDIA H100", "uuid": "GPU-0", "bus_id": "00000000:01:00.0",
        "memory": {"total": total, "used": used, "free": total - used, "reserved": 0},
        "utilization": 50, "temperature": 60, "power_mw": 300000,
        "compute": [{"pid": pid, "used": int(gib * GIB)} for pid, gib in processes.items()], "graphics": []}]}


def set_device(data: dict) -> None:
    """What the device reports from now on (the fake keeps the scenario loaded at nvmlInit, as NVML keeps its handle)."""
    fake_pynvml._state["scenario"] = data


def test_poll_interval_shrinks_as_free_memory_nears_the_freeze_threshold():
    total, freeze_at = 80 * GIB, 2 * GIB
    calm = poll_interval(60 * GIB, freeze_at, total, 0.01, 0.5)
    near = poll_interval(6 * GIB, freeze_at, total, 0.01, 0.5)
    assert calm == 0.5 and 0.01 < near < calm and poll_interval(GIB, freeze_at, total, 0.01, 0.5) == 0.01
    assert threshold_bytes("5%", total) == 4 * GIB and threshold_bytes("2GiB", total) == 2 * GIB


def test_no_driver_means_no_gpu_and_the_slowest_poll(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADROOM_FAKE_NVML", str(tmp_path / "none.json"))
    (tmp_path / "none.json").write_text(json.dumps({"driver": None}))
    watch = GpuFreezeWatch(Nvml("tests.fakes.fake_pynvml"), make_freezer(tmp_path), "3%", "10%", slowest=0.5)
    assert watch.step() == ([], 0.5)


@pytest.mark.kernel
def test_the_biggest_unprotected_gpu_user_is_frozen_then_thawed_once_the_worker_sleeps(tmp_path, monkeypatch):
    need_freezer_root()
    worker, worker_out = start_counter(tmp_path, "worker")
    grower, grower_out = start_counter(tmp_path, "grower")
    small, small_out = start_counter(tmp_path, "small")
    try:
        path = tmp_path / "nvml.json"
        path.write_text(json.dumps(scenario(40, {worker.pid: 30, grower.pid: 5, small.pid: 1})))
        monkeypatch.setenv("HEADROOM_FAKE_NVML", str(path))
        seen = []
        watch = GpuFreezeWatch(Nvml("tests.fakes.fake_pynvml"), make_freezer(tmp_path, protected={worker.pid}),
                               "3%", "10%", fastest=0.01, slowest=0.5, on_event=seen.append)
        events, calm = watch.step()
        assert events == [] and calm > 0.1
        set_device(scenario(1.5, {worker.pid: 30, grower.pid: 43.5, small.pid: 1}))  # the grower loads weights
        events, interval = watch.step()
        assert [(e.action, e.process.pid) for e in events] == [("froze", grower.pid)] and seen == events
        assert interval == 0.01, "at the threshold the poll must be at its fastest"
        assert not counting(grower_out[0]) and counting(worker_out[0]) and counting(small_out[0])
        assert watch.step()[0] == [], "frozen once, not again while it stays frozen"
        set_device(scenario(31.5, {grower.pid: 43.5, small.pid: 1}))  # the worker slept: its 30 GiB are free
        events, _ = watch.step()
        assert [(e.action, e.process.pid) for e in events] == [("thawed", grower.pid)]
        assert counting(grower_out[0]) and watch.freezer.frozen() == ()
        assert [e["kind"] for e in watch.freezer.store.events()] == ["freeze", "thaw"]
    finally:
        for proc in (worker, grower, small):
            stop(proc)


@pytest.mark.kernel
def test_a_gpu_freeze_without_room_follows_on_no_room(tmp_path, monkeypatch):
    need_freezer_root()
    grower, grower_out = start_counter(tmp_path, "grower")
    try:
        path = tmp_path / "nvml.json"
        path.write_text(json.dumps(scenario(60, {grower.pid: 10})))
        monkeypatch.setenv("HEADROOM_FAKE_NVML", str(path))
        now = [100.0]
        freezer = make_freezer(tmp_path, clock=lambda: now[0], freeze_max_seconds=10, on_no_room="thaw")
        watch = GpuFreezeWatch(Nvml("tests.fakes.fake_pynvml"), freezer, "3%", "10%", clock=lambda: now[0])
        assert watch.step()[0] == []
        set_device(scenario(1, {grower.pid: 70}))  # it loads 60 GiB of weights
        assert [e.action for e in watch.step()[0]] == ["froze"] and not counting(grower_out[0])
        now[0] = 111.0  # nothing was freed: still 1 GiB free after freeze_max_seconds
        assert watch.step()[0] == [] and counting(grower_out[0]) and freezer.frozen() == ()
        assert freezer.outcomes["no_room_thawed"] == 1
        now[0] = 112.0
        assert watch.step()[0] == [] and counting(grower_out[0]), "released to the kernel, it must not be frozen again"
    finally:
        stop(grower)


@pytest.mark.kernel
def test_a_gpu_freeze_asks_the_manager_to_free_the_worker_until_the_process_is_gone(tmp_path, monkeypatch):
    need_freezer_root()
    grower, outs = start_counter(tmp_path, "grower")
    try:
        path = tmp_path / "nvml.json"
        path.write_text(json.dumps(scenario(60, {grower.pid: 10})))
        monkeypatch.setenv("HEADROOM_FAKE_NVML", str(path))
        freezer = make_freezer(tmp_path)
        wishes = []
        protection = Protection()

        def protect(desired, message, data, source):
            wishes.append((desired, source))
            protection.wish(source, desired, 0.0, data.get("pid"))

        manager = SimpleNamespace(protect=protect)
        settings = GuardSettings(gpu={"enter": {"warn": "3%", "freeze": "3%"}, "band": "7%"})
        watch = build_gpu_watch(settings, manager, freezer, nvml=Nvml("tests.fakes.fake_pynvml"))
        watch.step()
        set_device(scenario(1, {grower.pid: 70}))
        watch.step()
        assert [(w.state, w.level, source) for w, source in wishes] == [("freed", settings.free_level, "gpu")]
        assert protection.view().gpu_pids == {grower.pid}, "the worker stays freed until this process is gone"
        set_device(scenario(30, {grower.pid: 50}))
        watch.step()
        assert len(wishes) == 1 and counting(outs[0]), "thawed once the GPU has room; the free is not withdrawn"
    finally:
        stop(grower)


def test_the_gpu_freezer_starts_only_with_a_freeze_level_in_the_gpu_rule(tmp_path):
    freezer = make_freezer(tmp_path)
    assert build_gpu_watch(GuardSettings(), SimpleNamespace(), freezer, nvml=object()) is None, "the shipped gpu rule has no freeze level"
    polls = {"freeze_gpu_poll_min_seconds": 0.02, "freeze_gpu_poll_max_seconds": 1}
    settings = GuardSettings(gpu={"enter": {"warn": "9%", "pause": "8%", "freeze": "2%"}, "band": "2%"}, **polls)
    watch = GpuFreezeWatch.from_settings(settings, object(), freezer)
    total = 100 * 2**30
    assert (threshold_bytes(watch.freeze_below, total), threshold_bytes(watch.thaw_above, total)) == (total // 50, total * 8 // 100)
    assert (watch.fastest, watch.slowest) == (0.02, 1)
    settings = GuardSettings(gpu={"enter": {"warn": "3%", "freeze": "2%"}, "band": "2%"}, **polls)
    thaw = GpuFreezeWatch.from_settings(settings, object(), freezer).thaw_above
    assert thaw.share and thaw.value == pytest.approx(0.04), "freeze + band without pause"
    settings = GuardSettings(gpu={"enter": {"freeze": "2%"}}, freeze_enabled=False, **polls)
    assert GpuFreezeWatch.from_settings(settings, object(), freezer) is None
