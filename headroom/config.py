"""One configuration for every part: a TOML file plus HEADROOM_* environment overrides, validated up front.

Environment variables name a key by its path with double underscores: HEADROOM_EXPORTER__LISTEN sets
[exporter] listen, HEADROOM_LOG_LEVEL sets log_level; lists and tables are given as JSON. They override the
file. (pydantic-settings does the same, but costs the exporter 9 MB of RSS; measured, see docs/exporter.md.)
"""

from __future__ import annotations

import difflib
import json
import math
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from exporter.settings import ExporterSettings
from guard.common.settings import GuardSettings
from guard.common.settings_checks import host_problems
from headroom.config_moved import moved_field, upgrade
from headroom.errors import EXIT_CONFIG, HeadroomError
from headroom.paths import default_state_dir
from headroom.client.settings import RunSettings
from worker.settings import WorkerSettings

CONFIG_ENV = "HEADROOM_CONFIG"
ENV_PREFIX = "HEADROOM_"
# HEADROOM_* variables that are not settings (read elsewhere, or set by headroom for the commands it runs).
NOT_SETTINGS = frozenset(
    {
        "TOKEN",
        "TOKEN_FILE",
        "CONFIG",
        "LEASE_ID",
        "FAKE_NVML",
        "UPDATE_GOLDEN",
        "WORKER_TEST_KILL_AT",
        "CHROMIUM",
        "BENCH_DIR",
    }
)


class Settings(BaseModel):
    """All of headroom's settings; each part reads its own section."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Where leases, the job queue, the API token and other state live (mode 0700).",
    )
    log_level: str = Field(
        default="info", description="Python logging level for every part: debug, info, warning, error."
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
    kinds = (
        typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
        else (field.annotation,)
    )
    for kind in kinds:
        origin = typing.get_origin(kind) or kind
        if origin in (list, dict, tuple, set) or (isinstance(origin, type) and issubclass(origin, BaseModel)):
            return True
    return False


def closest(name: str, choices: typing.Iterable[str]) -> str | None:
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def _unknown_variable(name: str, path: list[str], depth: int, model: type[BaseModel]) -> HeadroomError:
    """$name has no setting at path[depth]: an error naming the closest existing variable."""
    moved = [f"{table}__{key}" for table, key in getattr(model, "MOVED", {}).values()]  # their new names
    choices = [*model.model_fields, *moved] if depth else [*model.model_fields, *(n.lower() for n in NOT_SETTINGS)]
    guess = closest(path[depth], choices)
    hint = (
        f"; did you mean ${ENV_PREFIX}{'__'.join([*path[:depth], guess, *path[depth + 1 :]]).upper()}?" if guess else ""
    )
    return HeadroomError(
        f"${name}: unknown variable (no setting {'.'.join(path[: depth + 1])}){hint} Settings are "
        f"{ENV_PREFIX}SECTION__KEY, see docs/configuration.md",
        EXIT_CONFIG,
    )


def _model_at(model: type[BaseModel], part: str) -> type[BaseModel] | None:
    """The section model a key names, or None when its value is a plain table (a dict: any key goes)."""
    sub = model.model_fields[part]
    return sub.annotation if isinstance(sub.annotation, type) and issubclass(sub.annotation, BaseModel) else None


def env_overrides(environ: typing.Mapping[str, str]) -> dict[str, Any]:
    """HEADROOM_SECTION__KEY=value variables as a nested dict; an unknown HEADROOM_* name is an error naming the closest
    one (a misspelled variable must not be silently ignored); NOT_SETTINGS are left alone."""
    data: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name[len(ENV_PREFIX) :] in NOT_SETTINGS:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] | None = Settings
        target = data
        for depth, part in enumerate(path):
            moved = moved_field(model, part) if model is not None and depth == len(path) - 1 else None
            if model is not None and part not in model.model_fields and moved is None:
                raise _unknown_variable(name, path, depth, model)
            if depth == len(path) - 1:
                break
            model = _model_at(model, part) if model is not None else None
            target = target.setdefault(part, {})
        model, key = moved or (model or BaseModel, path[-1])
        value: Any = raw
        if _wants_json(model, key):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                raise HeadroomError(
                    f'${name} must be JSON (a list such as ["a", "b"] or a table such as '
                    f'{{"enter": {{"warn": "25%"}}}}), got {raw[:200]!r}',
                    EXIT_CONFIG,
                ) from None
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
        guess = closest(str(err["loc"][-1]), _fields_at(err["loc"][:-1]))
        hint = f"; did you mean {'.'.join([*map(str, err['loc'][:-1]), guess])}?" if guess else ""
        return f"{key}: unknown key (in {source} or ${env_name}){hint} See docs/configuration.md for the keys"
    if message.startswith(key + ".") or message.startswith(key + " "):  # a section's check names its own key
        return message
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return f"{key}{shown}: {message}"


def _fields_at(loc: tuple) -> list[str]:
    model: type[BaseModel] | None = Settings
    for part in loc:
        if model is None or part not in model.model_fields:
            return []
        model = _model_at(model, part)
    return list(model.model_fields) if model is not None else []


def nonfinite(value: Any, key: str = "") -> list[str]:
    """Keys whose value is NaN or infinite, anywhere in a loaded configuration ('inf' keeps a level entered for
    good)."""
    if isinstance(value, BaseModel):
        return [
            bad
            for name in type(value).model_fields
            for bad in nonfinite(getattr(value, name), f"{key}.{name}".lstrip("."))
        ]
    if isinstance(value, dict):
        return [bad for name, item in value.items() for bad in nonfinite(item, f"{key}.{name}")]
    if isinstance(value, (list, tuple)):
        return [bad for index, item in enumerate(value) for bad in nonfinite(item, f"{key}[{index}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{key} = {value!r}: expected a finite number"]
    return []


def upgraded(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """One layer (file, environment, flags) with each section's moved flat keys in their sub-tables, one deprecation
    line per key naming where it was written; done per layer so that a later layer still overrides an earlier one."""
    data = dict(data)
    for section, field in Settings.model_fields.items():
        moved = getattr(field.annotation, "MOVED", None)
        if moved and isinstance(data.get(section), dict):
            data[section] = upgrade(data[section], moved, section, origin=origin)
    return data


def load_settings(
    path: str | os.PathLike | None = None,
    environ: typing.Mapping[str, str] | None = None,
    check_host: bool = False,
    **overrides: Any,
) -> Settings:
    """Settings from `path` (or $HEADROOM_CONFIG), then HEADROOM_* variables, then `overrides` (command-line flags).
    `check_host`: also what this host must have for them (the guard's memory domain cgroup, worker programs)."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV)
    source = str(path) if path else "the built-in defaults"
    try:
        layers = [
            upgraded(_read_toml(Path(path)) if path else {}, source),
            upgraded(env_overrides(environ), f"${ENV_PREFIX}* variables"),
            upgraded(overrides, "the command line"),
        ]
        data = _merge(_merge(layers[0], layers[1]), layers[2])
        settings = Settings(**data)
    except ValidationError as err:
        raise invalid([_describe(item, source) for item in err.errors()]) from None
    except ValueError as err:  # a key given both flat and in its sub-table
        raise invalid([str(err)]) from None
    problems = nonfinite(settings) + (host_problems(settings) if check_host else [])
    if problems:
        raise invalid(problems)
    return settings


def invalid(problems: list[str]) -> HeadroomError:
    """One line per problem (one problem: one line in all)."""
    if len(problems) == 1:
        return HeadroomError(f"invalid configuration: {problems[0]}", EXIT_CONFIG)
    return HeadroomError("invalid configuration:\n  " + "\n  ".join(problems), EXIT_CONFIG)
