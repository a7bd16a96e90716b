"""The configuration reference (docs/configuration.md), generated from the settings classes' Field descriptions."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

HEADER = """# Configuration reference

Generated from the settings classes by `headroom config reference` (a test fails when this file is stale).
One TOML file (`--config FILE` or `$HEADROOM_CONFIG`); any key can be overridden by an environment variable
named after its path: `[guard] listen` is `HEADROOM_GUARD__LISTEN`; lists and tables are given as JSON.
"""


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
    rows = [f"\n## {title}\n", "| key | type | default | meaning |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, annotation))
            continue
        meaning = (field.description or "").replace("|", "\\|")
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
