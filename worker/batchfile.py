"""Parses and validates an OpenAI batch JSONL upload; every error names its line number and field."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from headroom.bodies import MAX_DEPTH, find_surrogate, nesting_depth
from headroom.echo import clip_text
from worker.types import CHAT_URL, COMPLETIONS_URL

MAX_ERRORS = 50  # errors listed in one answer; the rest are counted

_NUMBER = (int, float)
# field -> (accepted python types, check, what is expected); shared by both URLs.
_SAMPLING: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "model": ((str,), None, "a string"),
    "max_tokens": ((int,), lambda v: v >= 1, "an integer >= 1"),
    "max_completion_tokens": ((int,), lambda v: v >= 1, "an integer >= 1"),
    "min_tokens": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "temperature": (_NUMBER, lambda v: 0 <= v <= 2, "a number from 0 to 2"),
    "top_p": (_NUMBER, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "top_k": ((int,), lambda v: v == -1 or v >= 1, "-1 or an integer >= 1"),
    "n": ((int,), lambda v: 1 <= v <= 16, "an integer from 1 to 16"),
    "seed": ((int,), None, "an integer"),
    "stop": (
        (str, list),
        lambda v: isinstance(v, str) or all(isinstance(s, str) for s in v),
        "a string or a list of strings",
    ),
    "presence_penalty": (_NUMBER, lambda v: -2 <= v <= 2, "a number from -2 to 2"),
    "frequency_penalty": (_NUMBER, lambda v: -2 <= v <= 2, "a number from -2 to 2"),
    "repetition_penalty": (_NUMBER, lambda v: v > 0, "a number > 0"),
    "ignore_eos": ((bool,), None, "true or false"),
    "stream": ((bool,), lambda v: v is False, "false (streaming is not supported in batches)"),
    "user": ((str,), None, "a string"),
}
_ROLES = {"system", "user", "assistant", "developer", "tool"}


@dataclass(frozen=True)
class BatchLine:
    """One valid request line."""

    line: int  # 1-based line number in the upload
    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


class BatchInvalid(ValueError):
    """The upload is rejected as a whole; `errors` are {"line", "field", "message"} dicts."""

    def __init__(self, errors: list[dict[str, Any]], total: int | None = None):
        self.errors = errors[:MAX_ERRORS]
        self.total = total if total is not None else len(errors)
        first = errors[0]
        where = f"line {first['line']}" if first.get("line") else "the upload"
        field = f", field {first['field']}" if first.get("field") else ""
        super().__init__(
            f"{where}{field}: {first['message']}" + (f" (and {self.total - 1} more)" if self.total > 1 else "")
        )


def _is_type(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def check_body(url: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) problems of one request body; [] when it is valid."""
    problems: list[tuple[str, str]] = []
    if url == COMPLETIONS_URL:
        if not isinstance(body.get("prompt"), str):
            problems.append(("body.prompt", "required: a string"))
        allowed = set(_SAMPLING) | {"prompt"}
    else:
        problems += _check_messages(body.get("messages"))
        allowed = set(_SAMPLING) | {"messages"}
    for name, value in body.items():
        if name not in allowed:
            problems.append((f"body.{name}", "unsupported field"))
            continue
        if name in _SAMPLING:
            types, check, expected = _SAMPLING[name]
            if not _is_type(value, types) or (check is not None and not check(value)):
                problems.append((f"body.{name}", f"expected {expected}, got {json.dumps(value)[:60]}"))
    return problems


def _check_messages(messages: Any) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        return [("body.messages", "required: a non-empty list of {role, content}")]
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return [(f"body.messages[{i}]", "expected an object with role and content")]
        if message.get("role") not in _ROLES:
            return [(f"body.messages[{i}].role", f"expected one of {sorted(_ROLES)}")]
        if not isinstance(message.get("content"), str):
            return [(f"body.messages[{i}].content", "required: a string")]
    return []


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {clip_text(text, 40)} is too large")
    return value


def _check_line(number: int, text: str, seen: dict[str, int]) -> tuple[BatchLine | None, list[dict[str, Any]]]:
    def err(field: str | None, message: str) -> tuple[None, list[dict[str, Any]]]:
        return None, [{"line": number, "field": field, "message": message}]

    try:
        item = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        return err(None, f"not valid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return err(None, f"nested deeper than {MAX_DEPTH} levels")
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        return err(None, f"not usable JSON: {clip_text(str(exc), 120)}")
    if not isinstance(item, dict):
        return err(None, "expected a JSON object with custom_id, method, url and body")
    if nesting_depth(item) > MAX_DEPTH:
        return err(None, f"nested deeper than {MAX_DEPTH} levels")
    where = find_surrogate(item)
    if where is not None:
        return err(where, "holds a lone UTF-16 surrogate (such as \\ud800), which is no text; send valid Unicode")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return err("custom_id", "required: a non-empty string")
    if custom_id in seen:
        return err(
            "custom_id", f"duplicate custom_id {clip_text(repr(custom_id), 80)} (first on line {seen[custom_id]})"
        )
    seen[custom_id] = number
    extra = set(item) - {"custom_id", "method", "url", "body"}
    if extra:
        return err(sorted(extra)[0], "unknown field (expected custom_id, method, url, body)")
    if item.get("method", "POST") != "POST":
        return err("method", f"expected POST, got {clip_text(repr(item.get('method')), 80)}")
    if item.get("url") not in (COMPLETIONS_URL, CHAT_URL):
        return err("url", f"expected {COMPLETIONS_URL} or {CHAT_URL}, got {clip_text(repr(item.get('url')), 80)}")
    if not isinstance(item.get("body"), dict):
        return err("body", "required: a JSON object")
    problems = check_body(item["url"], item["body"])
    if problems:
        return None, [{"line": number, "field": field, "message": message} for field, message in problems]
    return BatchLine(number, custom_id, "POST", item["url"], item["body"]), []


def parse_batch(data: bytes, max_requests: int) -> list[BatchLine]:
    """Valid lines of a JSONL upload, or BatchInvalid listing every problem (blank lines are skipped)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchInvalid(
            [{"line": data[: exc.start].count(b"\n") + 1, "field": None, "message": "not UTF-8"}]
        ) from None
    lines: list[BatchLine] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        line, problems = _check_line(number, raw, seen)
        errors += problems
        if line is not None:
            lines.append(line)
        if len(lines) > max_requests:
            errors.append({"line": number, "field": None, "message": f"more than {max_requests} requests in one batch"})
            break
    if not lines and not errors:
        errors.append({"line": None, "field": None, "message": "the batch has no requests"})
    if errors:
        raise BatchInvalid(errors)
    return lines
