"""OpenAI shapes: completion and chat response bodies, and lines of the batch output file."""

from __future__ import annotations

import secrets
import time
from typing import Any

from worker.types import CHAT_URL, EngineResult


def response_body(url: str, model: str, choices: list[tuple[str, str | None]], prompt_tokens: int,
                  completion_tokens: int) -> dict[str, Any]:
    """A /v1/completions or /v1/chat/completions response for (text, finish_reason) choices."""
    created = int(time.time())
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if url == CHAT_URL:
        return {
            "id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": reason} for i, (text, reason) in enumerate(choices)],
            "usage": usage,
        }
    return {
        "id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                    for i, (text, reason) in enumerate(choices)],
        "usage": usage,
    }


def output_line(custom_id: str, result: EngineResult) -> dict[str, Any]:
    """One line of the batch output file: {id, custom_id, response{status_code, request_id, body}, error}."""
    line_id = f"batch_req_{result.key:010d}"
    if result.ok:
        response = {
            "status_code": result.status_code,
            "request_id": "req_" + secrets.token_hex(12),
            "body": result.body,
        }
        return {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
    response = None
    if result.status_code and result.body is not None:
        response = {
            "status_code": result.status_code,
            "request_id": "req_" + secrets.token_hex(12),
            "body": result.body,
        }
    return {"id": line_id, "custom_id": custom_id, "response": response, "error": result.error}


def cancelled_line(key: int, custom_id: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{key:010d}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": "batch_cancelled", "message": "the batch was cancelled before this request ran"},
    }


def sampling_max_tokens(body: dict, default: int) -> int:
    """The request's token budget: max_tokens, else max_completion_tokens (chat), else the worker's default."""
    return body.get("max_tokens") or body.get("max_completion_tokens") or default
