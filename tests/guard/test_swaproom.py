"""Room is RAM + usable swap (host, v1 memsw, v2 swap.max, zram discounted, less the reserve); a freed worker wakes only
where it fits, after swap-in has quietened, and repeated cycles back off (pure functions and the manager, fake clock)."""

from __future__ import annotations

from pathlib import Path

from exporter.cgroupfs import read_cgroup
from exporter.meminfo import parse_swaps, ram_backed_free
from guard.protect.domain import DomainObs, DomainReader
from guard.sources.metrics_source import parse_exporter_text
from guard.sources.observer import merge_fast_room
from guard.common.settings import GuardSettings
from guard.common.swaproom import cgroup_swap_free, host_swap_free, room_bytes
from guard.common.types import Decision, Desired, GuardState, Level, ResourceState, Snapshot
from guard.core.wakegate import WakeState, backoff_seconds, gate, held_event
from headroom.contract import WorkerState

MiB, GiB = 2**20, 2**30
SWAPS = """Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/swapfile                               file\t\t4194300\t\t1048576\t\t-2
/dev/zram0                              partition\t2097148\t\t0\t\t100
"""


def test_zram_free_swap_counts_at_half_and_a_cgroup_is_bounded_by_its_allowance_and_the_host():
    swaps = parse_swaps(SWAPS)
    assert swaps[0] == ("/swapfile", 4194300 * 1024, 1048576 * 1024)
    zram = ram_backed_free(swaps)
    assert zram == 2097148 * 1024
    assert host_swap_free(5 * GiB, zram) == 5 * GiB - zram / 2
    assert cgroup_swap_free(1 * GiB, 256 * MiB, 8 * GiB) == 768 * MiB  # its allowance less what it swapped
    assert cgroup_swap_free(1 * GiB, 0, 100 * MiB) == 100 * MiB  # never more than the host has
    assert cgroup_swap_free(None, 0, 3 * GiB) == 3 * GiB  # unbounded: the host alone
    assert room_bytes(1 * GiB, 2 * GiB, 256 * MiB) == 3 * GiB - 256 * MiB
    assert room_bytes(1 * GiB, 100 * MiB, 256 * MiB) == 1 * GiB  # the reserve is never negative room
    assert room_bytes(None, 2 * GiB, 0) is None


def v1_cgroup(root: Path, memsw_limit: str) -> Path:
    d = root / "memory" / "dom"
    d.mkdir(parents=True)
    files = {"memory.usage_in_bytes": 1800 * MiB, "memory.limit_in_bytes": 2 * GiB, "memory.stat": "total_inactive_file 0",
             "memory.memsw.usage_in_bytes": 2100 * MiB, "memory.memsw.limit_in_bytes": memsw_limit}
    for name, value in files.items():
        (d / name).write_text(f"{value}\n")
    return d


def test_the_fast_path_and_the_tick_see_the_same_room_on_a_v1_domain_with_swap(tmp_path):
    v1_cgroup(tmp_path / "cg", str(3 * GiB))
    memory = read_cgroup(tmp_path / "cg" / "memory", 1, "/dom")
    assert (memory.swap_bytes, memory.swap_limit_bytes) == (300 * MiB, 1 * GiB)
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal: 16777216 kB\nMemAvailable: 8388608 kB\nSwapTotal: 4194304 kB\n"
                                  "SwapFree: 3145728 kB\n")
    (proc / "swaps").write_text(SWAPS.splitlines()[0] + "\n")
    (tmp_path / "cg" / "memory" / "memory.usage_in_bytes").write_text("0")
    obs = DomainReader("/dom", proc, tmp_path / "cg", clock=lambda: 10.0, swap_reserve=256 * MiB).read()
    assert obs.ram_available_bytes == 248 * MiB and obs.swap_free_bytes == 724 * MiB
    assert obs.available_bytes == 248 * MiB + 468 * MiB  # RAM + (allowance left - reserve)
    text = (f"headroom_memory_total_bytes {16 * GiB}\nheadroom_memory_available_bytes {8 * GiB}\n"
            f"headroom_swap_free_bytes {3 * GiB}\n"
            f'headroom_cgroup_memory_usage_bytes{{cgroup="/dom"}} {1800 * MiB}\n'
            f'headroom_cgroup_memory_limit_bytes{{cgroup="/dom"}} {2 * GiB}\n'
            f'headroom_cgroup_memory_swap_bytes{{cgroup="/dom"}} {300 * MiB}\n'
            f'headroom_cgroup_memory_swap_limit_bytes{{cgroup="/dom"}} {1 * GiB}\n')
    snap = parse_exporter_text(text, "/dom", 9.0)
    assert snap.swap_free_bytes == obs.swap_free_bytes and snap.ram_available_bytes == obs.ram_available_bytes
    merged = merge_fast_room(snap, DomainObs(10.0, 2 * GiB, 900 * MiB, 400 * MiB, 700 * MiB))
    assert merged.ram_available_bytes == 400 * MiB and merged.swap_free_bytes == 700 * MiB  # leases see RAM alone


def settings(**extra) -> GuardSettings:
    return GuardSettings(recovery_hold_seconds=2.0, **extra)


def snap(ram_available: float, worker: WorkerState = WorkerState.FREED) -> Snapshot:
    return Snapshot(taken_at=0.0, ok=True, ram_total_bytes=2 * GiB, ram_available_bytes=ram_available, worker_state=worker)


def wake(ws: WakeState, available: float, now: float, swap_in: float | None = None, config=None):
    config = config or settings()
    state = GuardState(resources={"swap": ResourceState(Level.OK, value=swap_in)})
    running = Desired(WorkerState.RUNNING, reason="all clear")
    decision = Decision(Level.OK, running, (), stale=False, admissions_open=True)
    return gate(ws, snap(available), Desired(WorkerState.FREED, level=2), state, decision, config, now, 0.0)


def test_a_freed_worker_wakes_only_when_its_footprint_and_the_band_fit_and_swap_in_is_quiet():
    ws = WakeState(footprint_bytes=900 * MiB, frees=(0.0,), seen=WorkerState.FREED)
    _, decision, ws2 = wake(ws, 1 * GiB, 10.0)  # 900 MiB + pause 15 % + band 5 % of 2 GiB = 1.3 GiB > 1 GiB
    assert decision.desired.state == WorkerState.FREED and "needs 1.3 GiB" in decision.desired.reason
    assert "1.0 GiB RAM available" in ws2.held and held_event(WakeState(), ws2).startswith("the worker stays freed")
    _, decision, ws3 = wake(ws, 1.5 * GiB, 10.0, swap_in=20 * MiB)
    assert decision.desired.state == WorkerState.FREED and "swap-in 20.0 MiB/s" in ws3.held
    _, decision, ws4 = wake(ws, 1.5 * GiB, 10.0, swap_in=2 * MiB)  # light swap-in is not a thrash
    assert decision.desired.state == WorkerState.RUNNING and ws4.held is None  # the first cycle: no extra wait
    configured = settings(worker_footprint=200 * MiB)
    assert wake(ws, 1 * GiB, 10.0, config=configured)[1].desired.state == WorkerState.RUNNING


def test_repeated_cycles_double_the_wait_up_to_the_cap():
    assert [backoff_seconds(n, 2.0, 20.0) for n in (1, 2, 3, 4, 5)] == [0.0, 4.0, 8.0, 16.0, 20.0]
    ws = WakeState(footprint_bytes=100 * MiB, frees=(0.0, 30.0, 60.0), seen=WorkerState.FREED)
    _, decision, ws = wake(ws, 1.5 * GiB, 100.0)
    assert decision.desired.state == WorkerState.FREED and "cycle 3" in ws.held and "waits 8 s" in ws.held
    _, decision, ws = wake(ws, 1.5 * GiB, 107.0)
    assert decision.desired.state == WorkerState.FREED
    _, decision, ws = wake(ws, 1.5 * GiB, 108.5)
    assert decision.desired.state == WorkerState.RUNNING


def test_a_worker_someone_else_restarted_is_not_held_and_a_free_is_counted_when_it_goes_down():
    ws = WakeState(footprint_bytes=900 * MiB, frees=(0.0,), seen=WorkerState.FREED)
    state = GuardState()
    running = Decision(Level.OK, Desired(WorkerState.PAUSED), (), stale=False, admissions_open=True)
    _, decision, _ = gate(ws, snap(100 * MiB, WorkerState.RUNNING), Desired(WorkerState.FREED, level=2), state, running,
                          settings(), 5.0, 900 * MiB)
    assert decision.desired.state == WorkerState.PAUSED  # it is up already: nothing to hold back
    up = WakeState(seen=WorkerState.RUNNING)
    _, _, up = gate(up, snap(1 * GiB, WorkerState.RUNNING), Desired(), state, running, settings(), 1.0, 700 * MiB)
    assert up.footprint_bytes == 700 * MiB
    _, _, down = gate(up, snap(1 * GiB, WorkerState.FREEING), Desired(WorkerState.FREED, level=2), state, running,
                      settings(), 2.0, 0.0)
    assert down.frees == (2.0,) and down.footprint_bytes == 700 * MiB


def test_a_v2_domain_is_judged_by_its_own_memory_pressure_and_the_host_by_the_hosts():
    text = (f"headroom_memory_total_bytes {16 * GiB}\nheadroom_memory_available_bytes {8 * GiB}\n"
            'headroom_pressure_memory_ratio{kind="full",window="10s"} 0.01\n'
            f'headroom_cgroup_memory_usage_bytes{{cgroup="/dom"}} {1 * GiB}\n'
            'headroom_cgroup_pressure_memory_ratio{cgroup="/dom",kind="full",window="10s"} 0.3\n')
    assert parse_exporter_text(text, "/dom", 0).psi_full_ratio == 0.3
    assert parse_exporter_text(text, "host", 0).psi_full_ratio == 0.01
    assert parse_exporter_text(text.replace("cgroup_pressure", "x_cgroup_pressure"), "/dom", 0).psi_full_ratio == 0.01


def test_headroom_status_shows_the_swap_room_and_why_the_worker_is_held_back():
    from guard.cli import render

    ram = {"admissible_bytes": 0, "available_bytes": 100 * MiB, "reserved_bytes": 0, "margin_bytes": 0}
    worker = {"driven": True, "observed": "freed", "desired": {"state": "freed"}, "note": None,
              "held_back": "needs 1.3 GiB (its 900.0 MiB + the pause threshold and band), 1.0 GiB RAM available"}
    status = {"headroom": {"level": "ok", "stale": False, "domain": "/dom", "ram": ram, "gpus": [], "worker": worker,
                           "swap": {"free_bytes": 1 * GiB, "reserve_bytes": 256 * MiB, "room_bytes": 868 * MiB},
                           "maintenance": {"on": False}, "reasons": [], "leases": {}, "frozen": {"processes": []}},
              "leases": [], "events": []}
    text = render(status)
    assert "swap room: 1.0 GiB the domain may still use (256.0 MiB reserve); room before a kill 868.0 MiB" in text
    assert "worker held back: needs 1.3 GiB" in text


def test_the_cgroup_workers_footprint_leaves_its_page_cache_out():
    from guard.core.wakegate import worker_bytes
    from headroom.contract import WorkerStatus

    status = WorkerStatus(state=WorkerState.RUNNING, cgroup={"memory_bytes": 9 * GiB, "anon_bytes": 2 * GiB,
                                                             "shmem_bytes": 1 * GiB})
    assert worker_bytes(status, 5 * GiB) == 3 * GiB
    assert worker_bytes(WorkerStatus(state=WorkerState.RUNNING), 5 * GiB) == 5 * GiB


def test_a_burst_that_ended_stops_steering_the_exhaustion_slope():
    from guard.core.policy import evaluate

    config = GuardSettings(recovery_hold_seconds=2.0, gpu={"enter": {}})
    state, now, levels = GuardState(), 1000.0, []
    falling = [6 * GiB - i * 0.25 * GiB for i in range(13)]  # 1 GiB/s for 3 s, down to 3 GiB of 8
    for available in falling + [3 * GiB] * 16:  # then flat for 4 s
        now += 0.25
        snapshot = Snapshot(taken_at=now, ok=True, ram_total_bytes=8 * GiB, ram_available_bytes=available)
        state, decision = evaluate(snapshot, state, [], now, config)
        levels.append(decision.level)
    assert Level.PAUSE in levels[:13], "a fall at 1 GiB/s with 3 GiB left is a trend to act on"
    assert levels[-1] == Level.OK, "3 GiB of 8 steady for 4 s: the burst is over"


def test_a_known_worker_keeps_its_footprint_when_another_process_exits_during_its_free():
    """RAM also rises when a grower exits while the worker frees: that is not the worker's size (it held the next wake
    back for good in the protection benchmark: "needs 2.2 GiB (its 1.8 GiB ...)" in a 2 GiB domain)."""
    state = GuardState()
    hold = Decision(Level.OK, Desired(WorkerState.FREED, level=2), (), stale=False, admissions_open=True)
    ws = WakeState(seen=WorkerState.RUNNING)
    _, _, ws = gate(ws, snap(1 * GiB, WorkerState.RUNNING), Desired(), state, hold, settings(), 0.0, 900 * MiB)
    steps = [(WorkerState.FREEING, 100 * MiB), (WorkerState.FREED, 1900 * MiB)]  # the grower exited meanwhile
    for t, (worker_state, ram) in enumerate(steps, start=1):
        _, _, ws = gate(ws, snap(ram, worker_state), Desired(WorkerState.FREED, level=2), state, hold, settings(), t, 0.0)
    assert ws.footprint_bytes == 900 * MiB
    _, decision, ws = wake(ws, 1900 * MiB, 5.0)
    assert decision.desired.state != WorkerState.FREED and ws.held is None


def test_without_its_processes_the_footprint_is_what_the_free_gave_back():
    state = GuardState()
    hold = Decision(Level.OK, Desired(WorkerState.FREED, level=2), (), stale=False, admissions_open=True)
    ws = WakeState(seen=WorkerState.RUNNING)  # its RSS unknown (0): a remote worker, or pids not found yet
    steps = [(WorkerState.FREEING, 150 * MiB), (WorkerState.FREEING, 160 * MiB), (WorkerState.FREED, 1060 * MiB)]
    for t, (worker_state, ram) in enumerate(steps):
        _, _, ws = gate(ws, snap(ram, worker_state), Desired(WorkerState.FREED, level=2), state, hold, settings(), t, 0.0)
    assert ws.footprint_bytes == 910 * MiB and ws.frees == (0,)
    _, decision, ws = wake(ws, 1060 * MiB, 5.0)
    assert decision.desired.state == WorkerState.FREED and "needs" in ws.held
