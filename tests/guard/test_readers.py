"""Readers see only the published view: no reader module imports the Manager, and the routes reach the guard only
through the facade (guard/facade.py)."""

from __future__ import annotations

import ast

from tests.helpers import REPO
from tests.test_layers import imported

READERS = ("api", "routes_freeze", "views", "metrics", "fastmetrics", "history", "published")


def test_no_reader_imports_the_manager():
    for name in READERS:
        path = REPO / "guard" / f"{name}.py"
        found = imported(path, f"guard.{name}", REPO)
        assert not {m for m in found if m.startswith("guard.manager")}, f"guard/{name}.py imports the manager: {found}"


def test_the_routes_never_touch_app_state_manager():
    for name in ("api", "routes_freeze"):
        tree = ast.parse((REPO / "guard" / f"{name}.py").read_text())
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert "manager" not in names, f"guard/{name}.py reads a manager attribute"
