"""Pieces every settings section uses: strict sections, the HOST:PORT type and parser, and the URL a client dials."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


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


# A `listen` setting: HOST:PORT, checked at load (a bad one names the key and exits 2 before anything starts).
ListenAddress = Annotated[str, AfterValidator(listen_validator)]

# Hosts that mean "every address" when a server binds them; a client on the same box dials loopback instead.
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def base_url(listen: str, override: str | None = None) -> str:
    """The http:// URL a local client uses to reach a server listening on `listen` (`override` wins when given).

    '0.0.0.0:9841' -> http://127.0.0.1:9841, '[::]:9841' -> http://[::1]:9841, '[::1]:9841' -> http://[::1]:9841.
    """
    if override:
        return override.rstrip("/")
    host, port = parse_listen(listen)
    host = WILDCARD_HOSTS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
