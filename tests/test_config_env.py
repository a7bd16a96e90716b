"""HEADROOM_* variables: a whole table (a section or a rule) may be given as JSON, as the README says."""

from __future__ import annotations

import pytest

from headroom.config import load_settings
from headroom.errors import EXIT_CONFIG, HeadroomError


def test_a_rule_table_as_json():
    settings = load_settings(None, environ={"HEADROOM_GUARD__RAM": '{"enter": {"warn": "30%", "pause": "2GiB"}, "band": "4%"}'})
    assert settings.guard.ram.enter == {"warn": "30%", "pause": "2GiB"} and settings.guard.ram.band == "4%"


def test_a_section_as_json_and_a_key_inside_it():
    settings = load_settings(None, environ={"HEADROOM_WORKER": '{"engine": "echo", "concurrency": 3}',
                                            "HEADROOM_GUARD__PSI__HOLD_SECONDS": "12"})
    assert (settings.worker.engine, settings.worker.concurrency, settings.guard.psi.hold_seconds) == ("echo", 3, 12.0)


def test_an_optional_table_as_json():
    settings = load_settings(None, environ={"HEADROOM_WORKER__ENGINE_ARGS": '{"enforce_eager": true}'})
    assert settings.worker.engine_args == {"enforce_eager": True}


@pytest.mark.parametrize("raw, says", [('{"enter": {"warn": "30%"}', "must be JSON"),
                                       ('{"enter": {"warn": "lots"}}', "guard.ram.enter.warn"),
                                       ('{"bogus": 1}', "guard.ram.bogus")])
def test_a_bad_json_table_names_the_variable_or_key(raw, says):
    with pytest.raises(HeadroomError, match=says.replace(".", r"\.")) as err:
        load_settings(None, environ={"HEADROOM_GUARD__RAM": raw})
    assert err.value.exit_code == EXIT_CONFIG
