"""Keys that moved into a sub-table: an old flat key is still read, into its new place, with one deprecation line."""

from __future__ import annotations

import logging
from typing import Any, Mapping

log = logging.getLogger("headroom.config")

Moved = Mapping[str, tuple[str, str]]  # old flat key -> (sub-table, key in it)


def upgrade(data: Any, moved: Moved, where: str, origin: str = "") -> Any:
    """`data` (one section's raw table) with each old flat key moved into its sub-table; a key given both ways is a
    ValueError naming both. A sub-table's own name given a plain value (`fast_path = false`) is its first key's."""
    if not isinstance(data, dict) or not any(key in moved for key in data):
        return data
    data = dict(data)
    for old in [key for key in data if key in moved]:
        table, key = moved[old]
        if old == table and isinstance(data[old], dict):  # already the sub-table
            continue
        value = data.pop(old)
        sub = dict(data.get(table) or {})
        if key in sub:
            raise ValueError(f"{where}.{old} and {where}.{table}.{key} are both set; keep [{where}.{table}] {key} only")
        log.warning("%s.%s%s is deprecated: write it as [%s.%s] %s", where, old, f" (in {origin})" if origin else "",
                    where, table, key)
        sub[key] = value
        data[table] = sub
    return data


def moved_field(model, name: str) -> tuple[Any, str] | None:
    """(the sub-table's model, its key) for an old flat key of `model`, else None (environment variables use it)."""
    moved: Moved = getattr(model, "MOVED", {})
    if name not in moved or name in model.model_fields:
        return None
    table, key = moved[name]
    return model.model_fields[table].annotation, key
