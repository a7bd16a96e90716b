"""Readers see only the published view: no reader module imports the Manager, and the routes reach the guard only
through the facade (guard/core/facade.py)."""

from __future__ import annotations

import ast

from tests.helpers import REPO
from tests.test_layers import imported

READERS = ("http/api", "http/routes_freeze", "http/views", "http/metrics", "http/fastmetrics", "core/history",
           "core/published")


def test_no_reader_imports_the_manager():
    readers = [f"guard/{name}.py" for name in READERS] + [str(p.relative_to(REPO)) for p in (REPO / "guard" / "http").glob("*.py")]
    for name in sorted(set(readers)):
        path = REPO / name
        found = imported(path, name.removesuffix(".py").replace("/", "."), REPO)
        assert not {m for m in found if m.startswith("guard.core.manager")}, f"{name} imports the manager: {found}"


def test_the_routes_never_touch_app_state_manager():
    for name in ("http/api", "http/routes_freeze"):
        tree = ast.parse((REPO / "guard" / f"{name}.py").read_text())
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert "manager" not in names, f"guard/{name}.py reads a manager attribute"
