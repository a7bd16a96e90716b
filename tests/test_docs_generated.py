"""Docs that cannot lie: the alert table of docs/alerts.md is the rules file's (configuration.md: test_config_reference)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_alert_table_lists_every_rule_of_the_rules_file():
    check = subprocess.run([sys.executable, str(REPO / "alerts" / "doctable.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, "docs/alerts.md's alert table is stale: run `python alerts/doctable.py`"
    text = (REPO / "docs" / "alerts.md").read_text()
    rules = (REPO / "alerts" / "headroom.rules.yml").read_text().count("- alert: ")
    assert f"{rules} rules;" in text and text.count("\n| Headroom") == rules
