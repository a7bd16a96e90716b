"""The configuration reference (docs/configuration.md), generated from the settings classes' Field descriptions."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from headroom.paths import default_state_dir

HEADER = """# Configuration reference

Generated from the settings classes by `headroom config reference` (a test fails when this file is stale).
One TOML file (`--config FILE` or `$HEADROOM_CONFIG`); any key can be overridden by an environment variable
named after its path: `[guard] listen` is `HEADROOM_GUARD__LISTEN`; lists and tables are given as JSON.
"""


def _type_name(annotation) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    return re.sub(r"\b(typing|pathlib|guard\.\w+|worker\.\w+|exporter\.\w+)\.", "", text).replace("NoneType", "None")


def _value(field):
    """A field's default value: its default, or what its factory builds; None when the factory needs arguments."""
    if field.default_factory is None:
        return field.default
    try:
        return field.default_factory()
    except TypeError:
        return None


def _show(value) -> str:
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, Path) and value == default_state_dir():
        return "`$XDG_STATE_HOME/headroom`"
    if isinstance(value, Path):
        return f'`"{value}"`'
    return f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def _table(model: type[BaseModel], title: str, defaults: BaseModel | None = None
           ) -> tuple[list[str], list[tuple[str, type[BaseModel], BaseModel | None]]]:
    """One section's rows; `defaults` is the section as its parent builds it (the guard's RAM rule is not Rule())."""
    rows = [f"\n## {title}\n", "| key | type | default | meaning |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        value = getattr(defaults, name) if defaults is not None else _value(field)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, annotation, value if isinstance(value, BaseModel) else None))
            continue
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {_type_name(annotation).replace('|', 'or')} | {_show(value)} | {meaning} |")
    return rows, nested


def reference(settings_class: type[BaseModel]) -> str:
    lines = [HEADER]
    queue: list[tuple[str, type[BaseModel], BaseModel | None]] = [("top level", settings_class, None)]
    moved: list[str] = []
    while queue:
        title, model, defaults = queue.pop(0)
        rows, nested = _table(model, title if title == "top level" else f"[{title}]", defaults)
        lines.extend(rows)
        moved += [f"| `{title}.{old}` | `[{title}.{table}] {key}` |"
                  for old, (table, key) in getattr(model, "MOVED", {}).items()]
        # a section's sub-tables right after it: [guard], [guard.ram], ..., then [worker]
        queue[:0] = [(name if title == "top level" else f"{title}.{name}", sub, value) for name, sub, value in nested]
    if moved:
        lines += ["\n## Moved keys\n", "Still read (from the file, the environment and flags), with one deprecation "
                  "line each at start; write them in their sub-table instead.\n", "| was | is now |", "|---|---|",
                  *moved]
    return "\n".join(lines) + "\n"
