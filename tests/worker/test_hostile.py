"""Hostile input against the worker's API: a 422 naming the line or field, never a 500; results need the token."""

from __future__ import annotations

import json

import pytest

from tests.helpers import wait_for
from tests.worker.conftest import echo_clients

TOKEN = "worker-hostile-token-0123"
H = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def make_client(tmp_path):
    yield from echo_clients(tmp_path, TOKEN, 0.2, fresh_state=True, environ={}, raise_server_exceptions=False)


def line(custom_id: str = "a", **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/completions",
                       "body": {"prompt": "hi", "max_tokens": 2, **body}})


@pytest.mark.parametrize("raw, field", [
    ('{"custom_id": "\\ud800", "url": "/v1/completions", "body": {"prompt": "hi"}}', "custom_id"),
    ('{"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "x\\udfff"}}', "body.prompt"),
    ('{"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "\\ud800"}]}}',
     "body.messages[0].content"),
    ('{"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "hi", "seed": ' + "9" * 5000 + "}}", None),
    ("[" * 100_000 + "]" * 100_000, None),
    ('{"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "hi", "stop": ' + "[" * 100 + "]" * 100 + "}}", None),
    ('{"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "hi", "temperature": NaN}}', None),
    ('{"custom_id": "a", "url": "/v1/completions", "body": {"prompt": "hi", "repetition_penalty": 1e400}}', None),
])
def test_a_hostile_batch_line_is_a_422_naming_the_line(make_client, raw, field):
    client = make_client()
    response = client.post("/v1/batches", content=(line("ok") + "\n" + raw + "\n").encode(), headers=H)
    assert response.status_code == 422, response.text[:300]
    error = response.json()["errors"][0]
    assert error["line"] == 2 and (field is None or error["field"] == field), error
    assert len(response.content) < 4096
    assert client.get("/v1/batches", headers=H).json()["data"] == []  # nothing of it was stored


@pytest.mark.parametrize("body", [{"state": "paused", "reason": "\ud800"}, {"state": "paused", "requested_by": "\udfff"}])
def test_a_lone_surrogate_in_a_control_put_is_a_422(make_client, body):
    client = make_client()
    raw = json.dumps(body)  # ensure_ascii: sent as the \\ud800 escape, exactly as a hostile client would
    response = client.put("/control/state", content=raw.encode(), headers={**H, "Content-Type": "application/json"})
    assert response.status_code == 422 and "surrogate" in response.text, response.text
    assert client.get("/control/state").status_code == 200


@pytest.mark.parametrize("raw", ['{"state": "throttled", "concurrency": 1e400}', '{"state": "throttled", "concurrency": NaN}',
                                 '{"on": true, "retry_after_seconds": Infinity}'])
def test_inf_and_nan_in_control_puts_are_a_422(make_client, raw):
    client = make_client()
    path = "/control/maintenance" if '"on"' in raw else "/control/state"
    response = client.put(path, content=raw.encode(), headers={**H, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    json.loads(response.text)


def test_results_need_the_token_unless_opened(make_client):
    closed = make_client()
    batch_id = closed.post("/v1/batches", content=line().encode(), headers=H).json()["id"]
    wait_for(lambda: closed.get(f"/v1/batches/{batch_id}").json()["status"] == "completed", 10)
    for path in (f"/v1/batches/{batch_id}/output", f"/v1/batches/{batch_id}/requests"):
        assert closed.get(path).status_code == 401
        assert closed.get(path, headers={"Authorization": "Bearer "}).status_code == 401
        assert closed.get(path, headers=H).status_code == 200
    assert closed.get(f"/v1/batches/{batch_id}").status_code == 200  # the status (counts, no text) stays open

    opened = make_client(results_need_token=False)
    batch_id = opened.post("/v1/batches", content=line().encode(), headers=H).json()["id"]
    wait_for(lambda: opened.get(f"/v1/batches/{batch_id}").json()["status"] == "completed", 10)
    assert opened.get(f"/v1/batches/{batch_id}/output").status_code == 200
    assert opened.post(f"/v1/batches/{batch_id}/cancel").status_code == 401


def test_an_upload_past_max_upload_bytes_is_413_and_small_json_bodies_are_capped(make_client):
    client = make_client(max_upload_bytes="1KiB")
    response = client.post("/v1/batches", content=(line() + "\n") * 40, headers=H)
    assert response.status_code == 413, response.text
    response = client.put("/control/state", content=b'{"state": "paused", "reason": "' + b"x" * (5 * 2**20) + b'"}',
                          headers={**H, "Content-Type": "application/json"})
    assert response.status_code == 413
