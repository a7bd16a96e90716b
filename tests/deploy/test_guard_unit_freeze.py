"""The shipped guard unit grants freezing exactly what it needs (cgroup writes, CAP_KILL), documented in docs/guard.md."""

from __future__ import annotations

import re

from tests.deploy.test_units import install, verify
from tests.helpers import REPO


def directives(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_guard_unit_grants_cap_kill_only_and_writable_cgroups(tmp_path):
    assert install(tmp_path).returncode == 0
    unit = tmp_path / "units" / "headroom-guard.service"
    found = directives(unit.read_text())
    assert found["CapabilityBoundingSet"].split() == ["CAP_KILL"], "freezing needs CAP_KILL and nothing more"
    assert "AmbientCapabilities" not in found and found["NoNewPrivileges"] == "yes"
    assert found["ProtectControlGroups"] == "no", "cgroup.freeze / freezer.state must be writable"
    checked = verify([unit])
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr


def test_verify_would_catch_a_broken_freezing_line(tmp_path):
    install(tmp_path)
    unit = (tmp_path / "units" / "headroom-guard.service").read_text()
    broken = tmp_path / "broken-guard.service"
    broken.write_text(unit.replace("ProtectControlGroups=no", "ProtectControlGroups=writable"))
    assert "Failed to parse boolean value" in verify([broken]).stderr


def test_docs_list_the_units_capabilities():
    unit = directives((REPO / "headroom" / "units" / "headroom-guard.service").read_text())
    section = (REPO / "docs" / "guard.md").read_text().split("## Freezing", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(CAP_[A-Z_]+)`", section))
    assert listed == set(unit["CapabilityBoundingSet"].split())
