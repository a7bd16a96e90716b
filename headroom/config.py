"""One configuration for every part: a TOML file plus HEADROOM_* environment overrides, validated up front."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from exporter.settings import ExporterSettings
from guard.settings import GuardSettings
from worker.settings import WorkerSettings
from headroom.errors import EXIT_CONFIG, HeadroomError
from headroom.paths import default_state_dir
from headroom.settings_base import Section, parse_listen  # noqa: F401  (re-exported)

CONFIG_ENV = "HEADROOM_CONFIG"


class Settings(BaseSettings):
    """All of headroom's settings; each part reads its own section."""

    model_config = SettingsConfigDict(
        env_prefix="HEADROOM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    # Where leases, the job queue, the API token and other state live (mode 0700).
    state_dir: Path = Field(default_factory=default_state_dir)
    # Python logging level for every part: debug, info, warning, error.
    log_level: str = "info"
    exporter: ExporterSettings = Field(default_factory=ExporterSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("expected one of debug, info, warning, error")
        return value.lower()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments (the TOML file's content), then HEADROOM_* variables on top.
        return (env_settings, init_settings)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise HeadroomError(f"config file {path} does not exist", EXIT_CONFIG) from None
    except PermissionError:
        raise HeadroomError(f"config file {path} is not readable", EXIT_CONFIG) from None
    except tomllib.TOMLDecodeError as err:
        raise HeadroomError(f"config file {path} is not valid TOML: {err}", EXIT_CONFIG) from None


def _describe(err: dict[str, Any], source: str) -> str:
    key = ".".join(str(part) for part in err["loc"])
    env_name = "HEADROOM_" + "__".join(str(part) for part in err["loc"]).upper()
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (in {source} or ${env_name}); check the spelling against docs/configuration.md"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return f"{key}{shown}: {message}"


def load_settings(path: str | os.PathLike | None = None, **overrides: Any) -> Settings:
    """Settings from `path` (or $HEADROOM_CONFIG) plus the environment; HeadroomError names every bad key."""
    path = path or os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = _read_toml(Path(path)) if path else {}
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    source = str(path) if path else "the environment"
    try:
        return Settings(**data)
    except ValidationError as err:
        lines = [_describe(item, source) for item in err.errors()]
        raise HeadroomError("invalid configuration:\n  " + "\n  ".join(lines), EXIT_CONFIG) from None
