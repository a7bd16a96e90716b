"""The manager's parts after the split: the signal table resolved at load, pure policy steps, the lease book's atomic
writes and the published view."""

from __future__ import annotations


import pytest
from pydantic import ValidationError

from guard.core.policy import evaluate
from guard.common.signals import SIGNALS, Resource
from guard.common.types import GuardState, LeaseStatus, Level
from tests.guard.support import GiB, MiB, settings, snap

CALM = {"psi": {"enter": {}}, "swap": {"enter": {}}, "predict": {"enter": {}}, "gpu": {"enter": {}}}


def lease_fields(ram=0, **extra) -> dict:
    return {"holder": "test", "ram_bytes": ram, "gpu_bytes": 0, "gpu": "any", "ttl_seconds": 60, "pid": None,
            "free_worker": False, "priority": 0, **extra}


def test_every_signal_has_a_row_and_every_rule_is_numbers_after_load():
    config = settings(ram={"enter": {"pause": "15%", "free": "1GiB"}, "band": "5%"}, ram_margin="64MiB", gpu_margin=1024)
    assert set(SIGNALS) == set(Resource)
    assert (config.ram_margin, config.gpu_margin, type(config.fast_path_max_rate)) == (64 * MiB, 1024, int)
    th = config.rules[Resource.RAM].at(100 * GiB)
    assert th.enter == {Level.PAUSE: 15 * GiB, Level.FREE: 1 * GiB} and th.band == 5 * GiB and not th.higher_is_worse
    assert config.rules[Resource.SWAP].at().higher_is_worse  # a higher swap-in rate is worse


@pytest.mark.parametrize("rule, key", [({"psi": {"enter": {"warn": "5%"}}}, "guard.psi.enter.warn"),
                                       ({"swap": {"band": "lots"}}, "guard.swap.band"),
                                       ({"ram": {"enter": {"pause": "150%"}}}, "guard.ram.enter.pause")])
def test_a_bad_threshold_fails_at_load_naming_its_key(rule, key):
    with pytest.raises(ValidationError, match=key.replace(".", r"\.")):
        settings(**rule)


def test_evaluate_returns_a_new_state_and_leaves_the_previous_one_as_it_was():
    config = settings(ram={"enter": {"pause": "50%"}, "grace_seconds": 0}, **CALM)
    previous = GuardState(samples=[(0.5, 20 * GiB)])
    state, decision = evaluate(snap(1.0, available=8 * GiB, swap_in_bytes_total=10.0), previous, [], 1.0, config)
    assert previous == GuardState(samples=[(0.5, 20 * GiB)])  # samples, swap counter and levels untouched
    assert (state.level, decision.desired.state, state.last_swap) == (Level.PAUSE, "paused", (1.0, 10.0))
    assert len(state.samples) == 2


def test_a_grant_and_its_event_are_written_together_or_not_at_all(make_manager, source):
    manager = make_manager(ram_margin=0, **CALM)
    source.set(ram_available_bytes=10 * GiB)
    manager.tick()
    queued, _, _ = manager.request(lease_fields(20 * GiB), 60)  # waits for room
    db = manager.store.db
    db.execute("CREATE TRIGGER no_lease_events BEFORE INSERT ON events WHEN NEW.kind = 'lease' "
               "BEGIN SELECT RAISE(ABORT, 'events refused'); END")
    source.set(ram_available_bytes=30 * GiB)
    manager.tick()  # the queue is served: the grant's event fails, so the grant is not on disk either
    on_disk = db.execute("SELECT status FROM leases WHERE id = ?", (queued.id,)).fetchone()[0]
    assert on_disk == "waiting" and manager.get_lease(queued.id).status == LeaseStatus.GRANTED
    assert manager.store.unrecorded() >= 2  # the lease and its event wait in memory, together
    db.execute("DROP TRIGGER no_lease_events")
    assert manager.store.retry()
    assert db.execute("SELECT status FROM leases WHERE id = ?", (queued.id,)).fetchone()[0] == "granted"
    assert any(e["kind"] == "lease" and f"lease {queued.id} (test) granted" in e["message"] for e in manager.store.events(20))


def test_the_published_view_is_frozen_and_follows_lease_changes(make_manager, source, clock):
    manager = make_manager(ram_margin=0, **CALM)
    source.set(ram_available_bytes=10 * GiB)
    manager.tick()
    lease, _, _ = manager.request(lease_fields(1 * GiB), 0)
    view = manager.view
    assert [l.id for l in view.leases] == [lease.id] and view.ticks == 1
    clock.advance(30)
    manager.heartbeat(lease.id, pid=4242)
    assert view.leases[0].pid is None  # a view once published never changes
    assert manager.view.leases[0].pid == 4242  # the next one shows the heartbeat
    with pytest.raises(AttributeError):
        view.decision = None
    manager.release(lease.id)
    assert manager.view.leases == ()


def test_the_charts_sample_the_published_view(make_manager, source, clock):
    manager = make_manager(ram_margin=0, **CALM)
    source.set(ram_available_bytes=10 * GiB)
    manager.tick()
    lease, _, _ = manager.request(lease_fields(1 * GiB), 0)
    clock.advance(manager.history.step_seconds)
    source.set(ram_available_bytes=6 * GiB)
    manager.tick()
    first, second = manager.history.since(clock())[-2:]
    assert second.t == manager.view.snapshot.taken_at and second.level == manager.view.decision.level.label
    assert first.ram_reserved_bytes == 0 and second.ram_reserved_bytes == 1 * GiB  # the lease granted between the ticks
    assert second.ram_used_bytes - first.ram_used_bytes == 4 * GiB


def test_protection_has_one_owner_and_readers_see_whole_copies():
    """The fast path and the GPU watch write through Protection; a reader's view is never half of one change."""
    import threading
    import time

    from guard.core.protection import Protection
    from guard.common.types import Desired

    protection, stop, seen = Protection(), threading.Event(), []

    def writer(source: str, pid: int) -> None:
        while not stop.is_set():
            protection.wish(source, Desired("freed", level=2, reason=source), 1.0, pid)
            protection.gpu_cause_gone(lambda p: False)
            protection.wish(source, None, 2.0)

    threads = [threading.Thread(target=writer, args=(s, n)) for s, n in (("ram", None), ("gpu", 42))]
    for t in threads:
        t.start()
    try:
        deadline, wished = time.monotonic() + 10, 0
        while len(seen) < 20000 or (wished < 100 and time.monotonic() < deadline):
            view = protection.view()
            seen.append(view)
            wished += view.override is not None
            assert (view.override is None) == (view.sources == ()), view
            assert not view.gpu_pids or "gpu" in view.sources or view.gpu_pids == frozenset({42})
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert any(v.override is not None for v in seen) and protection.downtime.down_since == 1.0
