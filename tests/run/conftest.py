"""A real exporter + guard + contract worker with a memory cgroup as the domain, for `headroom run` and friends."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.guard.realstack import MiB, TOKEN, Stack, domain_cgroup
from tests.helpers import REPO, headroom_cmd

LIMIT = 1024 * MiB
QUIET = {"predict": {"enter": {}}, "psi": {"enter": {}}, "swap": {"enter": {}}, "gpu": {"enter": {}}, "ram": {"enter": {}}}


@pytest.fixture
def domain():
    with domain_cgroup(LIMIT) as group:
        yield group


@pytest.fixture
def stack_factory(tmp_path, domain):
    stacks = []

    def build(**kwargs) -> Stack:
        guard = {"ram_margin": "16MiB", **QUIET, **kwargs.pop("guard", {})}
        stack = Stack(tmp_path, domain, guard, **kwargs)
        with open(stack.config, "a") as handle:  # commands run below the domain, so the guard sees what they use
            handle.write(f'[run]\nparent_cgroup = "{domain.name}"\nttl_seconds = 15\n')
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()


def run_env() -> dict:
    return {**os.environ, "HEADROOM_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}


def headroom(stack: Stack, *args, **popen) -> subprocess.Popen:
    """Start `headroom ARGS` against `stack` (its config: guard address, token, [run] parent cgroup)."""
    argv = headroom_cmd(args[0], "--config", str(stack.config), *args[1:])
    return subprocess.Popen(argv, cwd=REPO, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
