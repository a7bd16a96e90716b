"""One configuration for every part: a TOML file plus HEADROOM_* environment overrides, validated up front.

Environment variables name a key by its path with double underscores: HEADROOM_EXPORTER__LISTEN sets
[exporter] listen, HEADROOM_LOG_LEVEL sets log_level; lists and tables are given as JSON. They override the
file. (pydantic-settings does the same, but costs the exporter 9 MB of RSS; measured, see docs/exporter.md.)
"""

from __future__ import annotations

import json
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from exporter.settings import ExporterSettings
from guard.settings import GuardSettings
from headroom.errors import EXIT_CONFIG, HeadroomError
from headroom.paths import default_state_dir
from headroom.client.settings import RunSettings
from worker.settings import WorkerSettings

CONFIG_ENV = "HEADROOM_CONFIG"
ENV_PREFIX = "HEADROOM_"


class Settings(BaseModel):
    """All of headroom's settings; each part reads its own section."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Where leases, the job queue, the API token and other state live (mode 0700).",
    )
    log_level: str = Field(
        default="info",
        description="Python logging level for every part: debug, info, warning, error.",
    )
    exporter: ExporterSettings = Field(default_factory=ExporterSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    run: RunSettings = Field(default_factory=RunSettings)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("expected one of debug, info, warning, error")
        return value.lower()


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


def _wants_json(model: type[BaseModel], key: str) -> bool:
    """Whether the setting at `key` is a list, a table (dict or section) or an optional one: then its value is JSON."""
    field = model.model_fields.get(key)
    if field is None:
        return False
    kinds = typing.get_args(field.annotation) if typing.get_origin(field.annotation) in (typing.Union, types.UnionType) \
        else (field.annotation,)
    for kind in kinds:
        origin = typing.get_origin(kind) or kind
        if origin in (list, dict, tuple, set) or (isinstance(origin, type) and issubclass(origin, BaseModel)):
            return True
    return False


def env_overrides(environ: typing.Mapping[str, str]) -> dict[str, Any]:
    """HEADROOM_SECTION__KEY=value variables as a nested dict; names that are no setting are left alone."""
    data: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        if path[0] not in Settings.model_fields:
            continue  # e.g. HEADROOM_TOKEN, HEADROOM_CONFIG: not settings
        model: type[BaseModel] = Settings
        target = data
        for part in path[:-1]:
            sub = model.model_fields.get(part)
            model = sub.annotation if sub and isinstance(sub.annotation, type) and issubclass(sub.annotation, BaseModel) else BaseModel
            target = target.setdefault(part, {})
        value: Any = raw
        if _wants_json(model, path[-1]):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                raise HeadroomError(f"${name} must be JSON (a list such as [\"a\", \"b\"] or a table such as "
                                    f"{{\"enter\": {{\"warn\": \"25%\"}}}}), got {raw[:200]!r}", EXIT_CONFIG) from None
        target[path[-1]] = value
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(err: dict[str, Any], source: str) -> str:
    key = ".".join(str(part) for part in err["loc"])
    env_name = ENV_PREFIX + "__".join(str(part) for part in err["loc"][:2]).upper()
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (in {source} or ${env_name}); see docs/configuration.md for the keys"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return f"{key}{shown}: {message}"


def load_settings(path: str | os.PathLike | None = None, environ: typing.Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from `path` (or $HEADROOM_CONFIG), then HEADROOM_* variables, then `overrides` (command-line flags)."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV)
    data = _read_toml(Path(path)) if path else {}
    data = _merge(_merge(data, env_overrides(environ)), overrides)
    source = str(path) if path else "the built-in defaults"
    try:
        return Settings(**data)
    except ValidationError as err:
        lines = [_describe(item, source) for item in err.errors()]
        raise HeadroomError("invalid configuration:\n  " + "\n  ".join(lines), EXIT_CONFIG) from None
