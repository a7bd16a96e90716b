"""The configuration reference (docs/configuration.md), generated from the settings classes and their comments."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

from pydantic import BaseModel

HEADER = """# Configuration reference

Generated from the settings classes by `headroom config reference` (a test fails when this file is stale).
One TOML file (`--config FILE` or `$HEADROOM_CONFIG`); any key can be overridden by an environment variable
named after its path: `[guard] listen` is `HEADROOM_GUARD__LISTEN`; lists and tables are given as JSON.
"""


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """The `# ...` lines just above each field in the class body (the project's one-line-per-field habit)."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for klass in reversed(model.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, BaseModel)) or klass is BaseModel:
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("#"):
                pending.append(stripped.lstrip("# ").strip())
                continue
            match = re.match(r"^(\w+)\s*:", stripped)
            if match and pending:
                comments[match.group(1)] = " ".join(pending)
            pending = [] if stripped or not pending else pending
    return comments


def _type_name(annotation) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    return re.sub(r"\b(typing|pathlib|guard\.\w+|worker\.\w+|exporter\.\w+)\.", "", text).replace("NoneType", "None")


def _default(field) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, Path) and "state" in str(value) and str(value).startswith(str(Path.home())):
        return "`$XDG_STATE_HOME/headroom`"
    if isinstance(value, Path):
        return f'`"{value}"`'
    return f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def _table(model: type[BaseModel], title: str) -> tuple[list[str], list[tuple[str, type[BaseModel]]]]:
    comments = _comments(model)
    rows = [f"\n## {title}\n", "| key | type | default | meaning |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, annotation))
            continue
        meaning = (field.description or comments.get(name, "")).replace("|", "\\|")
        rows.append(f"| `{name}` | {_type_name(annotation).replace('|', 'or')} | {_default(field)} | {meaning} |")
    return rows, nested


def reference(settings_class: type[BaseModel]) -> str:
    lines = [HEADER]
    queue: list[tuple[str, type[BaseModel]]] = [("top level", settings_class)]
    while queue:
        title, model = queue.pop(0)
        rows, nested = _table(model, title if title == "top level" else f"[{title}]")
        lines.extend(rows)
        queue.extend((name if title == "top level" else f"{title}.{name}", sub) for name, sub in nested)
    return "\n".join(lines) + "\n"
