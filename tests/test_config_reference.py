"""docs/configuration.md is generated from the settings classes; it must not go stale."""

from __future__ import annotations

import os

from pydantic import BaseModel

from headroom.config import Settings
from headroom.confref import reference
from tests.helpers import REPO

DOC = REPO / "docs" / "configuration.md"


def test_configuration_reference_is_current():
    text = reference(Settings)
    if os.environ.get("HEADROOM_UPDATE_GOLDEN") == "1":
        DOC.write_text(text)
    assert DOC.read_text() == text, "docs/configuration.md is stale: run `headroom config reference > docs/configuration.md`"


def test_every_key_has_a_meaning_or_shares_one():
    text = reference(Settings)
    assert "| `listen` | str | `\"127.0.0.1:9840\"` | Address of /metrics and /events" in text
    assert "## [exporter]" in text and "## [guard]" in text and "## [worker]" in text


def test_nested_sections_show_the_defaults_the_parent_builds():
    """The guard's rules are not Rule()'s empty defaults: RAM 25/20/15/10/5 %, GPU grace 5 s, PSI 3 s, swap 2 s."""
    text = reference(Settings)

    def row(section: str, key: str) -> str:
        return text.split(f"## [{section}]\n", 1)[1].split(f"| `{key}` |", 1)[1].split("\n")[0]

    assert "'warn': '25%', 'throttle': '20%', 'pause': '15%', 'free': '10%', 'freeze': '5%'" in row("guard.ram", "enter")
    assert "`5.0`" in row("guard.gpu", "grace_seconds") and "`3.0`" in row("guard.psi", "grace_seconds")
    assert "`2.0`" in row("guard.swap", "grace_seconds")


# Sections whose every key has a Field(description=...); [guard] joins once its settings carry them.
DESCRIBED = {"top level": Settings} | {f"[{name}]": Settings.model_fields[name].annotation for name in ("exporter", "worker", "run")}


def test_each_key_of_the_described_sections_has_a_description_in_the_reference():
    text = reference(Settings)
    for title, model in DESCRIBED.items():
        section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                continue  # a nested section: its own table
            assert field.description, f"{title} {name} has no Field(description=...)"
            assert f"| `{name}` |" in section and section.split(f"| `{name}` |", 1)[1].split("\n")[0].rstrip().endswith(
                f"{field.description.replace('|', chr(92) + '|')} |"), f"{title} {name}: its description is not its meaning"
