"""A real exporter + guard + contract worker (memory cgroup domain) shared by the status page and --watch tests."""

from __future__ import annotations

import os

import pytest

from tests.guard.realstack import MiB, Stack, domain_cgroup
from tests.helpers import need

DOMAIN_LIMIT = 1024 * MiB  # the guard's memory domain: default thresholds fall at 256/205/154/102 MiB free
QUIET = {"predict": {"enter": {}}, "psi": {"enter": {}}, "swap": {"enter": {}}}  # host-wide signals must not flap levels


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with domain_cgroup(DOMAIN_LIMIT) as domain:
        built = Stack(tmp_path_factory.mktemp("status"), domain, {"ram_margin": "16MiB", "events_need_token": False, **QUIET})
        try:
            yield built
        finally:
            built.stop()


def chromium_path() -> str:
    """Debian's chromium (browser downloads fail here); $HEADROOM_CHROMIUM overrides."""
    path = os.environ.get("HEADROOM_CHROMIUM", "/usr/bin/chromium")
    need(os.access(path, os.X_OK), f"chromium at {path} (Debian package `chromium`)")
    return path
