"""Batch JSONL validation: every problem names its line and field (pure function, table-driven)."""

from __future__ import annotations

import json

import pytest

from worker.batchfile import BatchInvalid, parse_batch


def line(custom_id="a", url="/v1/completions", **body):
    body = body or {"prompt": "hi"}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def test_valid_lines_keep_numbers_and_skip_blank_lines():
    data = (line("a") + "\n\n" + line("b", "/v1/chat/completions", messages=[{"role": "user", "content": "x"}]) + "\n").encode()
    lines = parse_batch(data, 100)
    assert [(x.line, x.custom_id, x.url) for x in lines] == [(1, "a", "/v1/completions"), (3, "b", "/v1/chat/completions")]


@pytest.mark.parametrize("text, field, words", [
    ('{"custom_id": "x"', None, "not valid JSON"),
    ('"just a string"', None, "JSON object"),
    (json.dumps({"custom_id": "", "url": "/v1/completions", "body": {"prompt": "x"}}), "custom_id", "non-empty"),
    (json.dumps({"custom_id": "x", "method": "GET", "url": "/v1/completions", "body": {}}), "method", "POST"),
    (json.dumps({"custom_id": "x", "url": "/v1/files", "body": {}}), "url", "/v1/chat/completions"),
    (json.dumps({"custom_id": "x", "url": "/v1/completions", "body": "hi"}), "body", "JSON object"),
    (json.dumps({"custom_id": "x", "url": "/v1/completions", "body": {"prompt": "x"}, "extra": 1}), "extra", "unknown"),
    (line(prompt="x", max_tokens=0), "body.max_tokens", ">= 1"),
    (line(prompt="x", n=99), "body.n", "1 to 16"),
    (line(prompt="x", stream=True), "body.stream", "streaming"),
    (line(prompt="x", max_tokens=True), "body.max_tokens", "integer"),
    (line(prompt="x", logit_bias={}), "body.logit_bias", "unsupported"),
    (line(url="/v1/chat/completions", messages=[{"role": "robot", "content": "x"}]), "body.messages[0].role", "one of"),
    (line(url="/v1/chat/completions", messages=[{"role": "user"}]), "body.messages[0].content", "string"),
])
def test_bad_line_names_line_and_field(text, field, words):
    with pytest.raises(BatchInvalid) as caught:
        parse_batch((line("ok") + "\n" + text).encode(), 100)
    error = caught.value.errors[0]
    assert error["line"] == 2 and error["field"] == field and words in error["message"], error
    assert str(caught.value).startswith("line 2")


def test_duplicate_custom_id_names_the_first_line():
    with pytest.raises(BatchInvalid) as caught:
        parse_batch("\n".join([line("a"), line("b"), line("a")]).encode(), 100)
    assert caught.value.errors == [{"line": 3, "field": "custom_id", "message": "duplicate custom_id 'a' (first on line 1)"}]


def test_every_error_is_listed_and_limits_hold():
    with pytest.raises(BatchInvalid) as caught:
        parse_batch(b"{\n[]\n" + line("a").encode(), 100)
    assert [e["line"] for e in caught.value.errors] == [1, 2]
    with pytest.raises(BatchInvalid, match="more than 2 requests"):
        parse_batch("\n".join(line(f"r{i}") for i in range(3)).encode(), 2)
    with pytest.raises(BatchInvalid, match="no requests"):
        parse_batch(b"\n\n", 100)
    with pytest.raises(BatchInvalid, match="UTF-8"):
        parse_batch(line("a").encode() + b"\n\xff\xfe", 100)
