"""Hostile bodies against the guard's API: each one is a 4xx naming the field (each of these was a 500 once)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from guard.app import Deps, create_app
from tests.guard.support import GiB

TOKEN = "hostile-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
def api(make_manager, source):
    manager = make_manager(ram_margin=0, gpu_margin=0, ram={"enter": {}}, predict={"enter": {}})
    source.set(ram_available_bytes=16 * GiB)
    manager.tick()
    with TestClient(create_app(None, Deps(manager, TOKEN, run_scheduler=False)), raise_server_exceptions=False) as client:
        yield client


def lease(api, raw: str):
    return api.post("/v1/leases", content=raw.encode(), headers=AUTH)


def fields(response) -> set[str]:
    return {".".join(str(p) for p in e["loc"][1:]) for e in response.json()["detail"]}


@pytest.mark.parametrize("field", ["ram_bytes", "gpu_bytes", "ttl_seconds", "poll_seconds", "wait_seconds"])
@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN", "Infinity"])
def test_inf_and_nan_are_a_422_naming_the_field(api, field, value):
    response = lease(api, f'{{"holder": "h", "{field}": {value}}}')
    assert response.status_code == 422, response.text
    assert field in fields(response)
    json.loads(response.text)  # standard JSON: no bare NaN or Infinity


@pytest.mark.parametrize("value", ['"' + "9" * 400 + '"', '"' + "9" * 400 + 'GiB"', "true", "false", '"1.5"', '"1e9"',
                                   "1.5", '"14 gigs"', '"\\u0663GiB"'])
def test_bad_sizes_are_a_422_naming_the_field(api, value):
    response = lease(api, f'{{"holder": "h", "ram_bytes": {value}}}')
    assert response.status_code == 422, response.text
    assert "ram_bytes" in fields(response)


@pytest.mark.parametrize("value, expected", [('"14GiB"', 14 * GiB), ("1073741824", GiB), ("1073741824.0", GiB),
                                             ('" 1 GiB "', GiB)])
def test_good_sizes_still_pass(api, value, expected):
    response = lease(api, f'{{"holder": "h", "ram_bytes": {value}, "dry_run": true}}')
    assert response.status_code in (200, 409), response.text
    assert api.post("/v1/leases", json={"holder": "h", "ram_bytes": expected, "dry_run": True}, headers=AUTH).status_code \
        == response.status_code


def test_limits_are_the_settings(api):
    """The guard enforces guard.max_ttl_seconds and max_wait_seconds, and publishes exactly those limits."""
    assert fields(lease(api, '{"holder": "h", "ttl_seconds": 86401}')) == {"ttl_seconds"}
    props = api.get("/openapi.json").json()["components"]["schemas"]["LeaseRequest"]["properties"]
    settings = api.app.state.manager.settings
    assert props["ttl_seconds"]["maximum"] == settings.max_ttl_seconds
    assert props["wait_seconds"]["maximum"] == settings.max_wait_seconds
    assert lease(api, f'{{"holder": "h", "wait_seconds": {settings.max_wait_seconds + 1}}}').status_code == 422
    sizes = props["ram_bytes"]["anyOf"]
    assert {s["type"] for s in sizes} == {"integer", "string"} and "pattern" in sizes[1]


@pytest.mark.parametrize("path, raw, field", [
    ("/v1/leases", '{"holder": "\\ud800"}', "holder"),
    ("/v1/maintenance", '{"reason": "x\\udfff"}', "reason"),
    ("/v1/alerts", '{"alerts": [{"labels": {"team": "\\ud800"}}]}', "alerts[0].labels.team"),
    ("/v1/alerts", '{"alerts": [{"startsAt": "\\ud800"}]}', "alerts[0].startsAt"),
])
def test_a_lone_surrogate_is_a_422_naming_the_field(api, path, raw, field):
    method = api.put if path == "/v1/maintenance" else api.post
    response = method(path, content=raw.encode(), headers=AUTH)
    assert response.status_code == 422, response.text
    assert field in response.text and "surrogate" in response.text


def test_a_422_does_not_echo_a_huge_input(api):
    big = "x" * (8 * 2**20)
    response = api.post("/v1/leases", json={"holder": big}, headers=AUTH)
    assert response.status_code == 413  # past the 4 MiB cap for JSON bodies: not even parsed
    response = api.post("/v1/leases", json={"holder": "x" * (3 * 2**20)}, headers=AUTH)
    assert response.status_code == 422 and "holder" in fields(response)
    assert len(response.content) < 4096, len(response.content)


def test_unauthenticated_writes_and_event_reads_are_401(api):
    for method, path in [("POST", "/v1/leases"), ("PUT", "/v1/maintenance"), ("DELETE", "/v1/maintenance"),
                         ("POST", "/v1/alerts"), ("GET", "/v1/events")]:
        for header in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer  {TOKEN}"},
                       {"Authorization": f"Bearer {TOKEN}\u00a0".encode()}):
            response = api.request(method, path, content=b"{}", headers=header)
            assert response.status_code == 401, (method, path, header, response.status_code)
            assert response.headers["www-authenticate"] == "Bearer"
    assert api.get("/v1/events", headers=AUTH).status_code == 200
    assert api.get("/v1/headroom").status_code == 200  # reads of the state stay open


def test_events_can_be_opened_by_a_setting(make_manager, source):
    manager = make_manager(events_need_token=False)
    with TestClient(create_app(None, Deps(manager, TOKEN, run_scheduler=False))) as client:
        assert client.get("/v1/events").status_code == 200
        assert client.put("/v1/maintenance", json={"reason": "x"}).status_code == 401
