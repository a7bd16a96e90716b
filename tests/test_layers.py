"""No module imports a layer above its own: the imports of every module, checked against docs/architecture.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.helpers import REPO

PACKAGES = ("headroom", "exporter", "guard", "worker")


def read_layers(text: str, package: str = "") -> list[list[list[str]]]:
    """The ```layers block (```layers PACKAGE for the layers inside one package), top first: each layer a list of peer
    groups, each group a list of module patterns."""
    block = re.search(r"```layers" + (" " + re.escape(package) if package else "") + r"\n(.*?)```", text, re.S)
    assert block, f"docs/architecture.md has no ```layers{' ' + package if package else ''} block"
    layers = []
    for line in block.group(1).strip().splitlines():
        _name, _, patterns = line.partition(":")
        layers.append([group.split() for group in patterns.split("|")])
    return layers


def place(module: str, layers: list[list[list[str]]]) -> tuple[int, int] | None:
    """(layer, peer group) of the most specific pattern naming `module` or a package above it; None when none does."""
    best: tuple[int, int, int] | None = None
    for layer, groups in enumerate(layers):
        for group, patterns in enumerate(groups):
            for pattern in patterns:
                if (module == pattern or module.startswith(pattern + ".")) and (best is None or len(pattern) > best[2]):
                    best = (layer, group, len(pattern))
    return None if best is None else best[:2]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module: str, root: Path) -> set[str]:
    """Every module of ours that `path` imports, at the top or inside a function; `from a import b` counts a.b
    when b is a module."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = (root / candidate.replace(".", "/")).with_suffix(".py").exists() or \
                    (root / candidate.replace(".", "/") / "__init__.py").exists()
                found.add(candidate if is_module else base)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def inside(module: str, package: str | None) -> bool:
    return package is None or module == package or module.startswith(package + ".")


def violations(layers, root: Path = REPO, within: str | None = None) -> list[str]:
    """Imports that point upward or sideways; `within` checks one package's own layers, among its own modules."""
    wrong = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            source = module_name(path, root)
            if not inside(source, within):
                continue
            here = place(source, layers)
            assert here is not None, f"{source} is in no layer of docs/architecture.md"
            for target in sorted(imported(path, source, root)):
                if within is not None and (target == within or not inside(target, within)):
                    continue
                there = place(target, layers)
                if there is None or there[0] > here[0]:
                    continue  # a lower layer
                if there[0] < here[0]:
                    wrong.append(f"{source} imports {target}, a layer above it")
                elif there[1] != here[1]:
                    wrong.append(f"{source} imports {target}, a peer it must not know")
    return wrong


def test_no_module_imports_a_layer_above_it_or_a_peer():
    layers = read_layers((REPO / "docs" / "architecture.md").read_text())
    assert violations(layers) == []


def test_inside_the_guard_no_folder_imports_one_above_it_or_a_peer():
    layers = read_layers((REPO / "docs" / "architecture.md").read_text(), "guard")
    assert violations(layers, within="guard") == []


def test_the_guard_check_finds_a_folder_importing_upward(tmp_path):
    layers = read_layers((REPO / "docs" / "architecture.md").read_text(), "guard")
    files = {
        "guard/__init__.py": "",
        "guard/common/__init__.py": "",
        "guard/common/types.py": "",
        "guard/protect/__init__.py": "",
        "guard/protect/freezer.py": "from guard.core import manager\nfrom guard.common import types\n",  # up; fine
        "guard/core/__init__.py": "",
        "guard/core/manager.py": "from guard.protect.freezer import Freezer\n",  # down: fine
        "guard/sources/__init__.py": "",
        "guard/sources/observer.py": "from guard.targets import actuator\n",  # a peer
        "guard/targets/__init__.py": "",
        "guard/targets/actuator.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert sorted(violations(layers, tmp_path, within="guard")) == [
        "guard.protect.freezer imports guard.core.manager, a layer above it",
        "guard.sources.observer imports guard.targets.actuator, a peer it must not know",
    ]


def test_the_check_finds_upward_and_sideways_imports(tmp_path):
    """A small tree breaking each rule once, checked with the real layer table."""
    layers = read_layers((REPO / "docs" / "architecture.md").read_text())
    files = {
        "headroom/__init__.py": "",
        "headroom/sizes.py": "def f():\n    from guard.policy import evaluate\n",  # floor -> parts, inside a function
        "headroom/config.py": "from headroom.client import runner\n",  # config -> client
        "headroom/client/__init__.py": "",
        "headroom/client/runner.py": "from headroom.client.settings import RunSettings\nimport headroom.sizes\n",  # fine
        "headroom/client/settings.py": "from headroom.config import Settings\n",  # same layer: fine
        "exporter/__init__.py": "",
        "exporter/units.py": "from . import units\nfrom headroom import sizes\n",  # fine
        "guard/__init__.py": "",
        "guard/policy.py": "from worker import engines\nfrom exporter.units import x\n",  # peer -> peer
        "worker/__init__.py": "",
        "worker/engines.py": "from ..guard import policy\n",  # a relative import of a peer
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert sorted(violations(layers, tmp_path)) == [
        "guard.policy imports worker.engines, a peer it must not know",
        "headroom.config imports headroom.client.runner, a layer above it",
        "headroom.sizes imports guard.policy, a layer above it",
        "worker.engines imports guard.policy, a peer it must not know",
    ]
