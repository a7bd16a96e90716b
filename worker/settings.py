"""The [worker] section of the configuration."""

from __future__ import annotations

from pydantic import field_validator

from headroom.settings_base import Section, listen_validator


class WorkerSettings(Section):
    # `headroom up` starts the worker only when enabled.
    enabled: bool = False
    # Address of the job API, the control endpoint and /metrics.
    listen: str = "127.0.0.1:9842"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return listen_validator(value)
