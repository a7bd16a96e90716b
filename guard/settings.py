"""The [guard] section of the configuration."""

from __future__ import annotations

from pydantic import field_validator

from headroom.settings_base import Section, listen_validator


class GuardSettings(Section):
    # Address of the lease API, status page and /metrics.
    listen: str = "127.0.0.1:9841"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return listen_validator(value)
