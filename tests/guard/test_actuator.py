"""Acting on the worker: idempotent reconcile, 202/409 handling, backoff, dry run, the `vllm serve` mapping."""

from __future__ import annotations

import httpx

from guard.targets.actuator import ContractTarget, Reconciler, VllmServeTarget, in_sync
from guard.common.types import Desired
from headroom.contract import Maintenance, WorkerStatus
from tests.guard.contract_worker import ContractWorker, mock_transport

OFF = Maintenance()


def reconciler(worker: ContractWorker, dry_run=False, token="tok") -> Reconciler:
    return Reconciler(ContractTarget("http://worker", token, 1.0, mock_transport(worker)), dry_run, 0.5, 4.0)


def puts(worker: ContractWorker) -> list[dict]:
    return [c["body"] for c in worker.calls if c["method"] == "PUT"]


def test_reconcile_is_idempotent():
    worker, rec = ContractWorker("tok"), None
    rec = reconciler(worker)
    rec.read()
    assert rec.reconcile(Desired("running"), OFF, 0) == []  # already running: nothing sent
    events = rec.reconcile(Desired("throttled", concurrency=2, reason="ram throttle"), OFF, 1)
    assert [(e.action, e.result) for e in events] == [("set_throttled", "ok")]
    rec.read()
    assert rec.reconcile(Desired("throttled", concurrency=2), OFF, 2) == []
    assert puts(worker) == [{"state": "throttled", "concurrency": 2, "reason": "ram throttle", "requested_by": "headroom-guard"}]


def test_slow_free_is_accepted_once_and_not_repeated():
    clock = [0.0]
    worker = ContractWorker("tok", transition_seconds=5, clock=lambda: clock[0])
    rec = reconciler(worker)
    rec.read()
    events = rec.reconcile(Desired("freed", level=2), OFF, 0)
    assert events[0].result == "accepted" and rec.read() == "freeing"
    assert rec.reconcile(Desired("freed", level=2), OFF, 1) == []
    clock[0] = 6
    assert rec.read() == "freed"


def test_refusal_409_backs_off_exponentially():
    worker = ContractWorker("tok", level1=False)
    rec = reconciler(worker)
    rec.read()
    want = Desired("freed", level=1)
    assert rec.reconcile(want, OFF, 0)[0].result == "refused"
    assert rec.reconcile(want, OFF, 0.4) == []          # within 0.5 s backoff
    assert rec.reconcile(want, OFF, 0.5)[0].result == "refused"
    assert rec.next_attempt_at == 1.5                   # doubled: 1 s
    for t in (2, 4, 8, 16):
        rec.reconcile(want, OFF, t)
    assert rec.next_attempt_at - 16 == 4.0              # capped at backoff_max


def test_unreachable_worker_is_an_error_event_and_backoff():
    def down(request):
        raise httpx.ConnectError("connection refused")

    rec = Reconciler(ContractTarget("http://worker", "tok", 1.0, httpx.MockTransport(down)), False, 0.5, 4.0)
    assert rec.read() is None and "ConnectError" in rec.read_error
    events = rec.reconcile(Desired("paused"), OFF, 0)
    assert events[0].result == "error" and rec.failures == 1


def test_wrong_token_is_a_refusal_not_a_crash():
    worker = ContractWorker("right")
    rec = reconciler(worker, token="wrong")
    events = rec.reconcile(Desired("paused"), OFF, 0)
    assert events[0].result == "error" and "401" in events[0].message
    assert worker.desired == {"state": "running"}


def test_maintenance_is_sent_and_then_in_sync():
    worker = ContractWorker("tok")
    rec = reconciler(worker)
    rec.read()
    maint = Maintenance(True, "driver upgrade", 120)
    actions = [e.action for e in rec.reconcile(Desired("paused"), maint, 0)]
    assert actions == ["maintenance_on", "set_paused"]
    assert worker.maintenance == {"on": True, "reason": "driver upgrade"}
    rec.read()
    assert rec.reconcile(Desired("paused"), maint, 1) == []


def test_dry_run_logs_once_per_change_and_never_calls():
    worker = ContractWorker("tok")
    rec = reconciler(worker, dry_run=True)
    rec.read()
    first = rec.reconcile(Desired("paused", reason="ram pause"), OFF, 0)
    assert first[0].result == "dry_run" and "would set the worker to paused" in first[0].message
    assert rec.reconcile(Desired("paused"), OFF, 1) == []
    assert puts(worker) == []


def test_in_sync_compares_only_relevant_fields():
    def seen(desired: dict) -> WorkerStatus:
        return WorkerStatus.model_validate({"state": "running", "desired": desired})

    assert in_sync(seen({"state": "freed", "level": 2, "concurrency": 4}), Desired("freed", level=2))
    assert not in_sync(seen({"state": "freed", "level": 1}), Desired("freed", level=2))
    assert not in_sync(seen({}), Desired("running"))
    assert not in_sync(None, Desired("running"))


def test_vllm_serve_mapping():
    calls: list[str] = []
    sleeping = {"value": False}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}{'?' + request.url.query.decode() if request.url.query else ''}")
        if request.url.path == "/sleep":
            sleeping["value"] = True
        if request.url.path == "/wake_up":
            sleeping["value"] = False
        if request.url.path == "/is_sleeping":
            return httpx.Response(200, json={"is_sleeping": sleeping["value"]})
        if request.url.path == "/is_paused":
            return httpx.Response(200, json={"is_paused": False})
        return httpx.Response(200)

    rec = Reconciler(VllmServeTarget("http://vllm", "tok", 1.0, httpx.MockTransport(handler)), False, 0.5, 4.0)
    assert rec.read() == "running"
    rec.reconcile(Desired("freed", level=2), OFF, 0)
    assert rec.read() == "freed"
    rec.reconcile(Desired("paused"), OFF, 1)
    rec.reconcile(Desired("running"), OFF, 2)
    throttle = rec.reconcile(Desired("throttled", concurrency=1), OFF, 10)
    assert throttle[0].result == "refused"
    sent = [c for c in calls if c.startswith("POST")]
    assert sent == ["POST /sleep?level=2", "POST /pause", "POST /wake_up", "POST /resume"]


def test_a_desired_state_the_contract_cannot_carry_is_an_error_event_not_a_crash():
    worker = ContractWorker("tok")
    rec = reconciler(worker)
    events = rec.reconcile(Desired("throttled", concurrency=None, reason="bug upstream"), OFF, 0)
    assert events[0].result == "error" and "throttled needs concurrency" in events[0].message
    assert puts(worker) == [] and rec.failures == 1
