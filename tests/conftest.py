"""Shared fixtures: the repo on sys.path and an isolated state directory per test."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

from tests.helpers import FREEZE_ENV

# A guard started by a test watches the host domain unless the test gives it a cgroup it created. On these shared
# machines such a guard must never freeze a process: freezing is off for every guard a test starts, and only the stacks
# whose domain is a cgroup the test created (tests/guard/realstack.py) turn it back on.
os.environ[FREEZE_ENV] = "false"
# Every process a test starts has its own user state dir: `headroom up` writes its pointer there (headroom.discover),
# and a client command without --config must never find a stack of this user's real session, or of another run.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="headroom-test-xdg-")
atexit.register(shutil.rmtree, os.environ["XDG_STATE_HOME"], True)


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    path = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("HEADROOM_STATE_DIR", str(path))
    return path
