"""Safe 422 answers: what a validation error echoes is bounded and always renders (no inf, NaN or lone surrogates).

Starlette's JSONResponse refuses inf/NaN and UTF-8 refuses lone surrogates, so a plain 422 holding them became a 500;
and echoing a 100 MiB input took seconds. Here every echoed value is clipped to a few hundred characters.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse

MAX_ECHO_CHARS = 200  # characters of one echoed string
MAX_ECHO_ITEMS = 10  # items of one echoed list or object
MAX_ERRORS = 50  # errors listed in one answer


def clip_text(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` cut to `limit` characters (with a note of the length) and made encodable as UTF-8."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_value(value: Any, depth: int = 0) -> Any:
    """A small, JSON-renderable stand-in for `value`: finite numbers kept, the rest clipped or described."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 63 else f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return clip_text(value)
    if isinstance(value, bytes):
        return clip_text(value[: MAX_ECHO_CHARS * 4].decode("utf-8", "replace"))
    if depth >= 2:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())
        shown = {clip_text(str(k), 60): safe_value(v, depth + 1) for k, v in items[:MAX_ECHO_ITEMS]}
        if len(items) > MAX_ECHO_ITEMS:
            shown["..."] = f"{len(items) - MAX_ECHO_ITEMS} more"
        return shown
    if isinstance(value, (list, tuple)):
        shown_list = [safe_value(v, depth + 1) for v in list(value[:MAX_ECHO_ITEMS])]
        if len(value) > MAX_ECHO_ITEMS:
            shown_list.append(f"... {len(value) - MAX_ECHO_ITEMS} more")
        return shown_list
    return clip_text(type(value).__name__)


def safe_error(error: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error as JSON: loc, msg and type kept (clipped), input and ctx made safe."""
    out = {"loc": [part if isinstance(part, int) else clip_text(str(part), 100) for part in error.get("loc", ())],
           "msg": clip_text(str(error.get("msg", "")), 500), "type": clip_text(str(error.get("type", "")), 60)}
    if "input" in error:
        out["input"] = safe_value(error["input"])
    ctx = error.get("ctx")
    if ctx:
        out["ctx"] = {
            clip_text(str(k), 60): safe_value(v) if isinstance(v, (int, float, str, type(None))) else clip_text(str(v))
            for k, v in list(ctx.items())[:MAX_ECHO_ITEMS]
        }
    return out


async def validation_response(request, exc) -> JSONResponse:
    """The exception handler for RequestValidationError: FastAPI's 422 shape, made safe."""
    errors = list(exc.errors())
    detail = [safe_error(e) for e in errors[:MAX_ERRORS]]
    body: dict[str, Any] = {"detail": detail}
    if len(errors) > MAX_ERRORS:
        body["error_count"] = len(errors)
    return JSONResponse(body, status_code=422)
