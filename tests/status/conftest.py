"""A real exporter + guard + contract worker (memory cgroup domain) shared by the status page and --watch tests."""

from __future__ import annotations

import importlib.util
import os

import pytest

from tests.guard.realstack import MiB, MemoryCgroup, Stack
from tests.helpers import need, need_root_memory_cgroup

DOMAIN_LIMIT = 1024 * MiB  # the guard's memory domain: default thresholds fall at 256/205/154/102 MiB free
QUIET = {"predict": {"enter": {}}, "psi": {"enter": {}}, "swap": {"enter": {}}}  # host-wide signals must not flap levels


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    need_root_memory_cgroup()
    need(importlib.util.find_spec("guard.app") is not None, "the guard")
    domain = MemoryCgroup(DOMAIN_LIMIT)
    built = None
    try:
        built = Stack(tmp_path_factory.mktemp("status"), domain, {"ram_margin": "16MiB", **QUIET})
        yield built
    finally:
        if built is not None:
            built.stop()
        domain.remove()


def chromium_path() -> str:
    """Debian's chromium (browser downloads fail here); $HEADROOM_CHROMIUM overrides."""
    path = os.environ.get("HEADROOM_CHROMIUM", "/usr/bin/chromium")
    need(os.access(path, os.X_OK), f"chromium at {path} (Debian package `chromium`)")
    return path
