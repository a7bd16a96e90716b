"""docs/configuration.md is generated from the settings classes; it must not go stale."""

from __future__ import annotations

import os

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
