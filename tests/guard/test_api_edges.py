"""Edges of the lease API a client meets: 405 lists what is allowed, 2.0 is an integer, `wait_seconds: 0` never
queues, a waiting answer asks to be polled back before the guard would withdraw it."""

from __future__ import annotations

import pytest

from tests.guard.support import GiB
from tests.guard.test_api import AUTH, api, ready  # noqa: F401 (the fixture)


@pytest.mark.parametrize("method, path, allowed", [("PATCH", "/v1/leases", {"GET", "POST"}),
                                                    ("PUT", "/readyz", {"GET"}),
                                                    ("POST", "/v1/maintenance", {"GET", "PUT", "DELETE"})])
def test_a_405_carries_allow(api, method, path, allowed):  # noqa: F811
    answer = api.request(method, path, headers=AUTH)
    assert answer.status_code == 405
    assert set(answer.headers["allow"].replace(" ", "").split(",")) >= allowed, answer.headers


def test_whole_number_floats_are_integers(api):  # noqa: F811
    ready(api)
    body = {"holder": "t", "ram_bytes": GiB, "ttl_seconds": 60.0, "wait_seconds": 0.0, "priority": 1.0}
    answer = api.post("/v1/leases", json=body, headers=AUTH)
    assert answer.status_code == 201 and answer.json()["lease"]["ttl_seconds"] == 60, answer.text
    fraction = api.post("/v1/leases", json={**body, "ttl_seconds": 60.5}, headers=AUTH)
    assert fraction.status_code == 422 and fraction.json()["detail"][0]["loc"] == ["body", "ttl_seconds"]


def test_wait_zero_answers_409_when_anything_is_queued_and_a_wait_asks_to_poll_back(api):  # noqa: F811
    ready(api)
    api.post("/v1/leases", json={"holder": "held", "ram_bytes": 10 * GiB, "ttl_seconds": 30}, headers=AUTH)
    queued = api.post("/v1/leases", json={"holder": "big", "ram_bytes": 12 * GiB, "wait_seconds": 60, "poll_seconds": 0},
                      headers=AUTH)
    assert queued.status_code == 202 and int(queued.headers["Retry-After"]) <= 3, queued.headers
    assert "expected start in ~30 s" in queued.json()["reason"]
    now = api.post("/v1/leases", json={"holder": "now", "ram_bytes": 5 * GiB, "wait_seconds": 0}, headers=AUTH)
    assert now.status_code == 409 and "queued ahead" in now.json()["reason"], now.text
