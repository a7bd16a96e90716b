"""Schemathesis over the guard's OpenAPI: generated requests (with and without the token) never get a 5xx."""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers import need

if importlib.util.find_spec("schemathesis") is None:  # the import below needs it; need() reports it properly
    def test_schemathesis_installed():
        need(False, "schemathesis (pip install -r tests/requirements.txt)")
else:
    import schemathesis
    from hypothesis import HealthCheck, settings

    from guard.app import Deps, create_app
    from tests.guard.support import GiB

    TOKEN = "fuzz-token-0123456789"

    @pytest.fixture
    def guard_schema(make_manager, source):
        manager = make_manager(max_wait_seconds=0, ram={"enter": {}}, predict={"enter": {}})
        source.set(ram_available_bytes=16 * GiB)
        manager.tick()
        app = create_app(None, Deps(manager, TOKEN, run_scheduler=False))
        return schemathesis.openapi.from_asgi("/openapi.json", app)

    @pytest.mark.timeout(60)
    def test_no_server_errors(guard_schema):
        """Every operation, 30 generated cases each (schemathesis' pytest plugin trips on pytest 9, so drive hypothesis here)."""
        from hypothesis import given

        operations = [result.ok() for result in guard_schema.get_all_operations()]
        assert len(operations) >= 12
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case):
                for headers in ({"Authorization": f"Bearer {TOKEN}"}, {}):
                    response = case.call(headers=headers)
                    assert response.status_code < 500, (case.method, case.path, case.body, response.status_code, response.text[:500])

            check()
