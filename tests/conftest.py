"""Shared fixtures: the repo on sys.path and an isolated state directory per test."""

from __future__ import annotations

import pytest


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    path = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("HEADROOM_STATE_DIR", str(path))
    return path
