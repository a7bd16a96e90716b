"""The control contract from both sides: the worker serves headroom.contract's WorkerStatus, the guard's reconciler parses
it and sends the contract's requests; the controller's clocks are injected."""

from __future__ import annotations

import itertools

import httpx
import pytest
from fastapi.testclient import TestClient

from guard.targets.actuator import ContractTarget, Reconciler
from guard.common.types import Desired
from headroom.config import load_settings
from headroom.contract import DESIRABLE, Maintenance, StateRequest, WorkerState, WorkerStatus
from tests.helpers import wait_for
from worker.app import create_app
from worker.control import to_desired
from worker.controller import Controller
from worker.engines import EchoEngine
from worker.store import DB_FILE, Store

TOKEN = "contract-test-token-0123"


@pytest.fixture
def worker(tmp_path):
    settings = load_settings(None, state_dir=str(tmp_path / "state"),
                             worker={"engine": "echo", "token": TOKEN, "control_wait_seconds": 2})
    with TestClient(create_app(settings, engine=EchoEngine(levels={1: "sleep", 2: "shutdown"}))) as client:
        wait_for(lambda: client.get("/control/state").json()["state"] != "starting", 10, what="the worker started")
        yield client


def reconciler_on(client: TestClient) -> Reconciler:
    """The guard's reconciler talking to the worker app over ASGI (the same bytes as over a socket)."""
    transport = httpx.MockTransport(lambda request: _forward(client, request))
    return Reconciler(ContractTarget("http://worker", TOKEN, 5.0, transport), False, 0.5, 4.0)


def _forward(client: TestClient, request: httpx.Request) -> httpx.Response:
    answer = client.request(request.method, request.url.path, content=request.content, headers=dict(request.headers))
    return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)


def test_the_guard_drives_the_worker_through_the_contract_types(worker):
    rec = reconciler_on(worker)
    assert rec.read() == WorkerState.RUNNING and isinstance(rec.observed, WorkerStatus)
    assert rec.observed.engine.kind == "echo" and rec.observed.engine.free_levels == {1: "sleep", 2: "shutdown"}
    events = rec.reconcile(Desired("freed", level=1, reason="gpu free"), Maintenance(), 0)
    assert [(e.action, e.result) for e in events] == [("set_freed", "ok")], events
    assert rec.read() == "freed" and rec.observed.free_level == 1 and rec.observed.desired.requested_by == "headroom-guard"
    assert rec.reconcile(Desired("freed", level=1), Maintenance(), 1) == []  # in sync: nothing sent again
    events = rec.reconcile(Desired("paused"), Maintenance(True, "driver upgrade", 120), 2)
    assert [e.action for e in events] == ["maintenance_on", "set_paused"]
    assert rec.read() == "paused" and rec.observed.maintenance.on and rec.observed.maintenance.reason == "driver upgrade"
    submit = worker.post("/v1/batches", content=b"{}\n", headers={"Authorization": f"Bearer {TOKEN}"})
    assert submit.status_code == 503 and submit.headers["retry-after"] == "120"  # what a client of the worker notices


def test_a_status_that_is_not_the_contracts_is_an_unreachable_worker():
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"state": "dancing"}))
    rec = Reconciler(ContractTarget("http://worker", TOKEN, 1.0, transport), False, 0.5, 4.0)
    assert rec.read() is None and "state" in rec.read_error and rec.observed is None


def test_the_request_types_refuse_what_the_worker_refuses():
    assert [s.value for s in DESIRABLE] == ["running", "throttled", "paused", "freed"]
    with pytest.raises(ValueError, match="throttled needs concurrency"):
        StateRequest(state="throttled")
    with pytest.raises(ValueError, match="freed needs level"):
        StateRequest(state="freed")
    assert Maintenance.from_dict({"on": True, "reason": "x", "extra": 1}) == Maintenance(True, "x")


def test_the_controller_publishes_its_injected_clock_and_times_with_its_timer(tmp_path):
    ticks = itertools.count(0, 10)  # each reading 10 s later: real time could never give these values
    store = Store(tmp_path / DB_FILE)
    controller = Controller(store, EchoEngine(), 2, clock=lambda: 1_000_000.0, timer=lambda: float(next(ticks)))
    controller.start()
    try:
        wait_for(lambda: controller.status().state == "running", 10, what="the controller running")
        status = controller.status()
        assert status.since == 1_000_000.0 and status.desired.at == 1_000_000.0
        controller.set_desired(to_desired(StateRequest(state="freed", level=2), controller.clock()))
        wait_for(lambda: controller.status().state == "freed", 10, what="freed")
        seconds = controller.status().last_free_seconds
        assert seconds is not None and seconds > 0 and seconds % 10 == 0, seconds
    finally:
        controller.stop()
        store.close()

