"""Schemathesis against both apps, with its conformance checks: no 5xx, answers as published, invalid input rejected.

Schemathesis' pytest plugin trips on pytest 9, so each operation's strategy is driven by hypothesis here. Every
operation gets valid (positive) and invalid (negative) cases, sent with the token; the same checks the
`schemathesis run` command applies decide: not_a_server_error, status_code_conformance, content_type_conformance,
response_headers_conformance, response_schema_conformance and negative_data_rejection.
"""

from __future__ import annotations

import importlib.util
import time

import pytest

from tests.helpers import need

EXAMPLES = 15  # per operation and mode; both apps stay well under 60 s


def _checks():
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                                   response_headers_conformance, response_schema_conformance,
                                                   status_code_conformance)

    return [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
            response_schema_conformance, negative_data_rejection]


def _header_negated(case) -> bool:
    from schemathesis.core.parameters import ParameterLocation

    info = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    return info is not None and info.mode.is_negative


def run_schema(schema, token: str, seconds: float, reset=lambda: None) -> int:
    """Drive every operation in both modes; raises (with schemathesis' report) on the first failing check."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    checks, headers, calls = _checks(), {"Authorization": f"Bearer {token}"}, 0
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case):
                nonlocal calls
                sent = {} if _header_negated(case) else headers  # a case that drops Authorization goes without it
                response = case.call(headers=sent)
                calls += 1
                reset()  # e.g. maintenance a fuzzed PUT turned on: its deliberate 503s would hide real 5xx
                case.validate_response(response, checks=checks, headers=sent)

            try:
                check()
            except Unsatisfiable:  # no parameter or body to make invalid (e.g. GET /healthz)
                assert mode == GenerationMode.NEGATIVE, operation.label
        assert time.monotonic() - started < seconds, f"fuzzing took over {seconds} s (at {operation.label})"
    return calls


@pytest.fixture
def schemathesis_module():
    need(importlib.util.find_spec("schemathesis") is not None, "schemathesis (pip install -r tests/requirements.txt)")
    import schemathesis

    return schemathesis


@pytest.mark.timeout(120)
def test_guard_conforms_to_its_published_schema(schemathesis_module, tmp_path):
    from guard.app import Deps, create_app
    from guard.core.manager import Manager
    from guard.sources.observer import Observer
    from guard.common.store import Store
    from tests.guard.support import GiB, FakeClock, FakeSource, gpu, settings

    token = "conformance-token-0123456789"
    clock = FakeClock()
    source = FakeSource(clock, gpus=(gpu("0"),))
    store = Store(tmp_path / "state", 1000)
    manager = Manager(settings(max_wait_seconds=0, ram={"enter": {}}, predict={"enter": {}}), Observer(source), store, None,
                    clock=clock)
    source.set(ram_available_bytes=16 * GiB)
    manager.tick()
    app = create_app(None, Deps(manager, token, run_scheduler=False))
    schema = schemathesis_module.openapi.from_asgi("/openapi.json", app)
    try:
        calls = run_schema(schema, token, 60)
    finally:
        store.close()
    assert calls >= 200, calls


@pytest.mark.timeout(120)
def test_worker_conforms_to_its_published_schema(schemathesis_module, tmp_path):
    from headroom.config import load_settings
    from worker.app import create_app
    from worker.engines import EchoEngine

    token = "conformance-token-0123456789"
    settings = load_settings(None, environ={}, state_dir=str(tmp_path / "state"),
                             worker={"engine": "echo", "token": token, "control_wait_seconds": 0})
    app = create_app(settings, engine=EchoEngine())
    schema = schemathesis_module.openapi.from_asgi("/openapi.json", app)  # its transport runs the app's lifespan
    controller = app.state.controller
    calls = run_schema(schema, token, 60, reset=lambda: controller.maintenance.on and controller.set_maintenance(False, None, None))
    assert calls >= 150, calls
