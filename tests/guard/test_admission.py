"""Fair admission: what can never fit is refused at once, backfill never delays an earlier waiting request's expected
start, a request passed over too long stops backfill, --free-worker frees only when that helps, a silent client loses
its place, and `wait_seconds: 0` never queues."""

from __future__ import annotations

import os

from guard.targets.actuator import ContractTarget, Reconciler
from tests.guard.contract_worker import ContractWorker, mock_transport
from tests.guard.support import GiB, gpu
from tests.guard.test_leases import CALM, fields


def statuses(manager) -> dict[str, str]:
    return {lease.holder: lease.status for lease in manager.leases()}


def test_more_than_the_domain_holds_is_refused_at_once_saying_the_most(make_manager, source):
    manager = make_manager(ram_margin="1GiB", **CALM)
    source.set(ram_total_bytes=24 * GiB, ram_available_bytes=20 * GiB)
    manager.tick()
    lease, admission, _ = manager.request(fields(40 * GiB, holder="huge"), 600)
    assert lease is None and "can never fit" in admission.reason and "at most 23.0 GiB" in admission.reason
    _, gpu_admission, _ = manager.request(fields(gpu_bytes=17 * GiB, holder="huge-gpu"), 600)
    assert "can never fit" in gpu_admission.reason and manager.leases() == []
    assert "can never fit" in manager.check(fields(40 * GiB)).reason


def test_a_small_request_is_backfilled_only_into_what_the_blocked_one_does_not_need(make_manager, source, clock):
    manager = make_manager(ram_margin=0, **CALM)
    source.set(ram_available_bytes=10 * GiB)
    manager.tick()
    held, _, _ = manager.request(fields(4 * GiB, holder="held", ttl_seconds=30), 0)  # room left: 6 GiB
    big, _, _ = manager.request(fields(8 * GiB, holder="big"), 60)  # starts when `held` ends: 10 GiB, 2 spare
    assert big.status == "waiting" and "expected start in ~30 s" in big.reason
    small, _, _ = manager.request(fields(1 * GiB, holder="small"), 0)
    assert small is not None and small.status == "granted"  # 1 GiB of the 2 spare
    refused, admission, _ = manager.request(fields(3 * GiB, holder="medium"), 0)
    assert refused is None and "would delay" in admission.reason  # fits now (5 GiB), but big would start later
    assert "would delay" in manager.check(fields(3 * GiB)).reason
    medium, _, position = manager.request(fields(3 * GiB, holder="medium"), 60)
    assert (medium.status, position) == ("waiting", 2)


def test_backfill_past_an_unplannable_request_stops_after_the_pass_over_limit(make_manager, source, clock):
    manager = make_manager(ram_margin=0, backfill_max_pass_seconds=20, **CALM)
    source.set(ram_available_bytes=10 * GiB)  # the rest is held outside the leases: no lease end makes room for 12
    manager.tick()
    big, _, _ = manager.request(fields(12 * GiB, holder="big"), 120)
    assert "no lease end makes room" in big.reason
    first, _, _ = manager.request(fields(1 * GiB, holder="first"), 0)
    assert first.status == "granted"
    clock.advance(21)
    manager.touch(big.id)
    manager.tick()
    late, admission, _ = manager.request(fields(1 * GiB, holder="late"), 0)
    assert late is None and "queued ahead" in admission.reason


def test_priorities_still_order_the_queue(make_manager, source, clock):
    manager = make_manager(ram_margin=0, **CALM)
    source.set(ram_available_bytes=10 * GiB)
    manager.tick()
    manager.request(fields(4 * GiB, holder="held", ttl_seconds=30), 0)
    manager.request(fields(8 * GiB, holder="low"), 60)
    urgent, _, position = manager.request(fields(8 * GiB, holder="urgent", priority=5), 60)
    assert position == 1
    manager.release(next(l.id for l in manager.leases() if l.holder == "held"))
    for lease in manager.leases():
        manager.touch(lease.id)
    manager.tick()
    assert statuses(manager) == {"urgent": "granted", "low": "waiting"}


def test_a_waiting_request_whose_client_stops_polling_is_withdrawn_and_releases_the_worker(make_manager, source, clock):
    worker = ContractWorker("tok", transition_seconds=60, clock=clock)  # still freeing while the client goes away
    rec = Reconciler(ContractTarget("http://w", "tok", 1.0, mock_transport(worker)), False, 0.5, 4.0)
    manager = make_manager(reconciler=rec, gpu_margin=0)
    source.set(gpus=(gpu("0", free=4 * GiB),))
    manager.tick()
    lease, _, _ = manager.request(fields(gpu_bytes=10 * GiB, free_worker=True, holder="gone"), 600)
    manager.tick()
    assert worker.desired["state"] == "freed"
    for _ in range(3):  # a heartbeat (or a poll) keeps it; heartbeats never extend its wait
        clock.advance(3)
        manager.heartbeat(lease.id)
        manager.tick()
    assert manager.get_lease(lease.id).status == "waiting"
    clock.advance(7)  # the client was SIGKILLed: no more polls
    manager.tick()
    ended = manager.get_lease(lease.id)
    assert ended.status == "refused" and "stopped polling" in ended.reason
    manager.tick()
    assert worker.desired == {"state": "running"}


def test_free_worker_frees_only_when_freeing_would_make_room(make_manager, source, clock):
    worker = ContractWorker("tok", clock=clock)
    rec = Reconciler(ContractTarget("http://w", "tok", 1.0, mock_transport(worker)), False, 0.5, 4.0)
    manager = make_manager(reconciler=rec, gpu_margin=0)
    me = os.getpid()  # stands in for the worker's process: it holds 6 GiB of the GPU
    manager.worker_pids.pids = frozenset({me})
    source.set(gpus=(gpu("0", free=4 * GiB, total=16 * GiB, procs={me: 6 * GiB}),))
    manager.tick()
    lease, admission, _ = manager.request(fields(gpu_bytes=12 * GiB, free_worker=True, holder="too-big"), 600)
    assert lease is None and "more than freeing the worker could make" in admission.reason
    manager.tick()
    assert worker.desired["state"] == "running", "never freed for a request freeing cannot satisfy"
    fits, _, _ = manager.request(fields(gpu_bytes=9 * GiB, free_worker=True, holder="fits"), 600)
    assert fits.frees_worker
    manager.tick()
    assert worker.desired["state"] == "freed"


def test_a_request_the_freed_worker_did_not_make_room_for_is_refused_saying_what_fits(make_manager, source, clock):
    worker = ContractWorker("tok", clock=clock)
    rec = Reconciler(ContractTarget("http://w", "tok", 1.0, mock_transport(worker)), False, 0.5, 4.0)
    manager = make_manager(reconciler=rec, gpu_margin=0)
    source.set(gpus=(gpu("0", free=4 * GiB),))
    manager.tick()
    lease, _, _ = manager.request(fields(gpu_bytes=14 * GiB, free_worker=True, holder="olmo"), 600)
    for _ in range(4):
        clock.advance(1)
        manager.touch(lease.id)
        manager.tick()  # the worker frees, but only 6 GiB come back
        source.set(gpus=(gpu("0", free=10 * GiB),))
    ended = manager.get_lease(lease.id)
    assert ended.status == "refused" and "more than freeing the worker made room for" in ended.reason
    assert "at most GPU 0 10.0 GiB" in ended.reason, ended.reason
    manager.tick()
    assert worker.desired == {"state": "running"}


def test_wait_zero_is_refused_when_it_would_queue(make_manager, source):
    manager = make_manager(ram_margin=0, **CALM)
    source.set(ram_available_bytes=2 * GiB)
    manager.tick()
    lease, admission, _ = manager.request(fields(4 * GiB, holder="now"), 0)
    assert lease is None and admission.outcome == "refused"


def test_a_refusal_after_the_wait_says_why_and_what_would_work(make_manager, source, clock):
    manager = make_manager(ram_margin=0, **CALM)
    source.set(ram_available_bytes=10 * GiB)
    manager.tick()
    manager.request(fields(4 * GiB, holder="held", ttl_seconds=300), 0)
    big, _, _ = manager.request(fields(8 * GiB, holder="big"), 10)
    for _ in range(6):
        clock.advance(2)
        manager.touch(big.id)
        manager.heartbeat(next(l.id for l in manager.leases() if l.holder == "held"))
        manager.tick()
    ended = manager.get_lease(big.id)
    assert ended.status == "refused" and ended.reason.startswith("gave up waiting after 10 s: not enough memory"), ended.reason
    assert "fits now: at most ram 6.0 GiB" in ended.reason and "expected start in ~" in ended.reason
