"""Every HTTP endpoint of the guard, with good and bad input: 4xx names the field and why, never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from guard.app import Deps, create_app
from tests.guard.support import GiB

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CALM = {"ram": {"enter": {}}, "predict": {"enter": {}}}


@pytest.fixture
def api(make_manager, source):
    manager = make_manager(ram_margin=0, gpu_margin=0, **CALM)
    source.set(ram_available_bytes=16 * GiB)
    app = create_app(None, Deps(manager, TOKEN, run_scheduler=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.manager = manager
        yield client


def ready(api):
    api.manager.tick()
    return api


def test_health_ready_docs_metrics_page(api):
    assert api.get("/healthz").json() == {"ok": True}
    not_ready = api.get("/readyz")
    assert not_ready.status_code == 503 and "not observed yet" in not_ready.json()["reason"]
    ready(api)
    assert api.get("/readyz").json() == {"ready": True}
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/v1/leases", "/v1/leases/{lease_id}/heartbeat", "/v1/headroom", "/v1/maintenance", "/v1/alerts", "/v1/events"} <= set(paths)
    text = api.get("/metrics").text
    for name in ("headroom_guard_level{resource=\"ram\"}", "headroom_guard_actions_total", "headroom_guard_leases{status=\"granted\"}",
                 "headroom_guard_reserved_bytes{resource=\"ram\"}", "headroom_guard_admissions_total{result=\"granted\"}",
                 "headroom_guard_source_up 1.0", "headroom_guard_snapshot_age_seconds", "headroom_guard_tick_seconds_bucket",
                 "headroom_guard_frozen 0.0", 'headroom_guard_freezes_total{outcome="thawed"} 0.0'):  # freezing off: zeros
        assert name in text, name
    assert "headroom guard: ok" in api.get("/").text


def test_headroom_view(api):
    ready(api)
    body = api.get("/v1/headroom").json()
    assert body["level"] == "ok" and body["admissions_open"] and not body["stale"]
    assert body["ram"]["admissible_bytes"] == 16 * GiB
    assert body["gpus"][0]["gpu"] == "0" and body["gpus"][0]["admissible_bytes"] == 10 * GiB


def test_lease_lifecycle(api):
    ready(api)
    created = api.post("/v1/leases", json={"holder": "olmo", "ram_bytes": "2GiB", "gpu_bytes": 4 * GiB, "gpu": 0}, headers=AUTH)
    assert created.status_code == 201, created.text
    lease = created.json()["lease"]
    assert (lease["status"], lease["gpu_chosen"], lease["ram_bytes"]) == ("granted", "0", 2 * GiB)
    lid = lease["id"]
    assert [l["id"] for l in api.get("/v1/leases").json()["leases"]] == [lid]
    assert api.get(f"/v1/leases/{lid}").json()["status"] == "granted"
    assert api.post(f"/v1/leases/{lid}/heartbeat", headers=AUTH).status_code == 200
    assert api.get("/v1/headroom").json()["ram"]["reserved_bytes"] == 2 * GiB
    assert api.delete(f"/v1/leases/{lid}", headers=AUTH).json()["status"] == "released"
    gone = api.post(f"/v1/leases/{lid}/heartbeat", headers=AUTH)
    assert gone.status_code == 410 and "released" in gone.json()["detail"]
    assert api.get("/v1/leases/abcdef").status_code == 404
    assert api.delete("/v1/leases/abcdef", headers=AUTH).status_code == 404
    assert api.post("/v1/leases/abcdef/heartbeat", headers=AUTH).status_code == 404


def test_refusal_has_reason_shortfall_and_retry_after(api):
    ready(api)
    refused = api.post("/v1/leases", json={"holder": "big", "ram_bytes": 20 * GiB}, headers=AUTH)
    assert refused.status_code == 409 and refused.headers["retry-after"] == "5"
    body = refused.json()
    assert body["shortfall"] == {"ram_bytes": 4 * GiB} and "ram short by 4.0 GiB" in body["reason"]


def test_stale_signals_refuse_with_503(api, source):
    source.set(ok=False, error="exporter down")
    ready(api)
    refused = api.post("/v1/leases", json={"holder": "x", "ram_bytes": 1}, headers=AUTH)
    assert refused.status_code == 503 and "signals stale since" in refused.json()["reason"]
    assert "exporter down" in refused.json()["reason"]


def test_queued_request_long_polls_then_answers_202(api):
    ready(api)
    queued = api.post("/v1/leases", json={"holder": "q", "ram_bytes": 20 * GiB, "wait_seconds": 1}, headers=AUTH)
    assert queued.status_code == 202 and queued.json()["position"] == 1 and queued.json()["status"] == "waiting"
    lid = queued.json()["lease"]["id"]
    assert api.get(f"/v1/leases/{lid}", params={"wait": 0.2}).status_code == 202


@pytest.mark.parametrize("body, field", [
    ({"holder": "x", "ram_bytes": -1}, "ram_bytes"),
    ({"holder": "x", "ram_bytes": 2**60}, "ram_bytes"),
    ({"holder": "x", "gpu_bytes": "lots"}, "gpu_bytes"),
    ({"holder": "", "ram_bytes": 1}, "holder"),
    ({"ram_bytes": 1}, "holder"),
    ({"holder": "x", "ttl_seconds": 0}, "ttl_seconds"),
    ({"holder": "x", "ttl_seconds": 100000}, "ttl_seconds"),
    ({"holder": "x", "pid": -3}, "pid"),
    ({"holder": "x", "colour": "red"}, "colour"),
    ({"holder": "x", "gpu_bytes": GiB, "gpu": "7"}, "gpu"),
    ({"holder": "x", "wait_seconds": 10**6}, "wait_seconds"),
    ({"holder": "x", "free_worker": "perhaps"}, "free_worker"),
])
def test_bad_lease_requests_name_the_field(api, body, field):
    ready(api)
    response = api.post("/v1/leases", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(field in item["loc"] for item in detail), detail
    assert all(item["msg"] for item in detail)


def test_unknown_gpu_message_lists_known(api):
    ready(api)
    detail = api.post("/v1/leases", json={"holder": "x", "gpu_bytes": 1, "gpu": "GPU-nope"}, headers=AUTH).json()["detail"]
    assert "unknown GPU 'GPU-nope'; known: 0" in detail[0]["msg"]


def test_malformed_json_and_wrong_types_are_422(api):
    response = api.post("/v1/leases", content=b"{not json", headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"
    assert api.post("/v1/leases", json=[1, 2], headers=AUTH).status_code == 422


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/leases", {"holder": "x", "ram_bytes": 1}), ("POST", "/v1/leases/ab/heartbeat", None),
    ("DELETE", "/v1/leases/ab", None), ("PUT", "/v1/maintenance", {"reason": "x"}), ("DELETE", "/v1/maintenance", None),
    ("POST", "/v1/alerts", {"alerts": []}),
])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_every_mutating_endpoint_needs_the_token(api, method, path, body, headers):
    response = api.request(method, path, json=body, headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_maintenance(api):
    ready(api)
    assert api.get("/v1/maintenance").json()["on"] is False
    assert api.put("/v1/maintenance", json={}, headers=AUTH).json()["detail"][0]["loc"] == ["body", "reason"]
    on = api.put("/v1/maintenance", json={"reason": "driver upgrade", "retry_after_seconds": 120}, headers=AUTH)
    assert on.json()["on"] and on.json()["reason"] == "driver upgrade"
    api.manager.tick()
    assert api.get("/v1/headroom").json()["worker"]["desired"]["state"] == "paused"
    assert api.delete("/v1/maintenance", headers=AUTH).json()["on"] is False
    api.manager.tick()
    assert api.get("/v1/headroom").json()["worker"]["desired"]["state"] == "running"


def test_alertmanager_webhook_becomes_events_and_evaluates(api):
    ticks = api.manager.ticks
    payload = {"version": "4", "status": "firing", "receiver": "guard", "groupKey": "{}", "alerts": [
        {"status": "firing", "labels": {"alertname": "HeadroomOOMPredicted", "severity": "warning"},
         "annotations": {"summary": "RAM runs out in 60 s"}, "startsAt": "2026-11-26T23:00:00Z"}]}
    assert api.post("/v1/alerts", json=payload, headers=AUTH).json() == {"received": 1}
    assert api.manager.ticks == ticks + 1
    events = api.get("/v1/events", params={"kind": "alert"}, headers=AUTH).json()["events"]
    assert events[-1]["message"] == "firing: HeadroomOOMPredicted RAM runs out in 60 s"
    assert api.post("/v1/alerts", json={"alerts": "nope"}, headers=AUTH).status_code == 422


def test_events_paging_and_bounds(api):
    ready(api)
    api.put("/v1/maintenance", json={"reason": "a"}, headers=AUTH)
    api.delete("/v1/maintenance", headers=AUTH)
    events = api.get("/v1/events", headers=AUTH).json()["events"]
    assert [e["kind"] for e in events][-2:] == ["maintenance", "maintenance"]
    after = api.get("/v1/events", params={"after": events[-2]["id"]}, headers=AUTH).json()["events"]
    assert [e["id"] for e in after] == [events[-1]["id"]]
    assert len(api.get("/v1/events", params={"limit": 1}, headers=AUTH).json()["events"]) == 1
    bad = api.get("/v1/events", params={"limit": 0}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]


def test_readyz_notices_when_ticks_stop(api, clock):
    ready(api)
    clock.advance(10)  # no tick ran: the last observation is 10 s old
    response = api.get("/readyz")
    assert response.status_code == 503 and "10.0 s old" in response.json()["reason"]
