"""The reason in an HTTP error answer from the guard or the worker, as one line a person can read."""

from __future__ import annotations


def describe_detail(response) -> str:
    """FastAPI's `detail` (a string, or a validation list naming each field), else the first 200 characters of the
    body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:200]
    if isinstance(detail, list):  # [{"loc": ["body", "gpu_bytes"], "msg": ...}]
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'request'}: {d.get('msg')}" for d in detail
        )
    return str(detail)
