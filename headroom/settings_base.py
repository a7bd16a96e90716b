"""Pieces every settings section uses: strict sections and the HOST:PORT parser."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def parse_listen(value: str) -> tuple[str, int]:
    """'127.0.0.1:9840' / '[::1]:9840' -> (host, port); raises ValueError with what was expected."""
    text = str(value).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9840, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    return host.strip("[]"), port


def listen_validator(value: str) -> str:
    parse_listen(value)
    return value
