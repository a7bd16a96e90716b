"""Fixtures for the guard's tests: a fake clock, a scriptable source and a manager built over them."""

from __future__ import annotations

import pytest

from guard.core.manager import Manager
from guard.sources.observer import Observer
from guard.common.store import Store
from tests.guard.support import FakeClock, FakeSource, gpu, settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source(clock) -> FakeSource:
    return FakeSource(clock, gpus=(gpu("0"),))


@pytest.fixture
def make_manager(tmp_path, clock, source):
    """Build a Manager over the fake source and clock, optionally with a reconciler."""
    engines = []

    def build(reconciler=None, **overrides) -> Manager:
        store = Store(tmp_path / "state", 1000)
        manager = Manager(settings(**overrides), Observer(source), store, reconciler, clock=clock)
        engines.append(manager)
        return manager

    yield build
    for manager in engines:
        manager.store.close()
