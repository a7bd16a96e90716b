"""Keys that moved into [guard.*] sub-tables: the old flat key still works from a file, the environment and code, with
one deprecation line each; a later layer still overrides an earlier one; a key given both ways is refused."""

from __future__ import annotations

import logging

import pytest

from headroom.config import load_settings
from headroom.errors import EXIT_CONFIG, HeadroomError

OLD = """[guard]
freeze_max_seconds = 7
worker_url = "http://127.0.0.1:9999"
worker_stop = ["true"]
fast_path = false
ram_margin = "1GiB"
prometheus_instance = "box:9840"
"""


def deprecations(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "is deprecated" in r.getMessage()]


def test_old_flat_keys_in_a_file_land_in_their_sub_tables_with_one_line_each(tmp_path, caplog):
    path = tmp_path / "old.toml"
    path.write_text(OLD)
    with caplog.at_level(logging.WARNING, logger="headroom.config"):
        guard = load_settings(path, environ={}).guard
    assert (guard.freeze.max_seconds, guard.worker.url, guard.worker.stop, guard.fast_path.enabled) == (
        7.0, "http://127.0.0.1:9999", ["true"], False)
    assert (guard.leases.ram_margin, guard.prometheus.instance) == (2**30, "box:9840")
    lines = deprecations(caplog)
    assert len(lines) == 6, lines
    assert f"guard.freeze_max_seconds (in {path}) is deprecated: write it as [guard.freeze] max_seconds" in lines
    assert guard.freeze_max_seconds == 7.0 and guard.worker_url == "http://127.0.0.1:9999", "code reading old names"


def test_the_new_keys_load_without_a_deprecation_line(tmp_path, caplog):
    path = tmp_path / "new.toml"
    path.write_text('[guard.freeze]\nmax_seconds = 7\n[guard.worker]\nurl = "http://127.0.0.1:9999"\n')
    with caplog.at_level(logging.WARNING, logger="headroom.config"):
        guard = load_settings(path, environ={}).guard
    assert (guard.freeze.max_seconds, guard.worker.url) == (7.0, "http://127.0.0.1:9999")
    assert deprecations(caplog) == []


@pytest.mark.parametrize("file, environ, expected", [
    ("[guard.freeze]\nenabled = true\n", {"HEADROOM_GUARD__FREEZE_ENABLED": "false"}, False),  # old env over new file
    ("[guard]\nfreeze_enabled = true\n", {"HEADROOM_GUARD__FREEZE__ENABLED": "false"}, False),  # new env over old file
    ("[guard]\nfreeze_enabled = false\n", {}, False),
])
def test_the_environment_still_overrides_the_file_whichever_spelling(tmp_path, file, environ, expected):
    path = tmp_path / "c.toml"
    path.write_text(file)
    assert load_settings(path, environ=environ).guard.freeze.enabled is expected


def test_a_key_given_both_ways_in_one_file_is_refused_naming_both(tmp_path):
    path = tmp_path / "both.toml"
    path.write_text('[guard]\nworker_url = "http://a:1"\n[guard.worker]\nurl = "http://b:2"\n')
    with pytest.raises(HeadroomError) as err:
        load_settings(path, environ={})
    assert "guard.worker_url and guard.worker.url are both set" in str(err.value)
    assert err.value.exit_code == EXIT_CONFIG


def test_a_misspelt_variable_suggests_the_new_name():
    with pytest.raises(HeadroomError, match=r"did you mean \$HEADROOM_GUARD__FREEZE__MAX_SECONDS\?"):
        load_settings(environ={"HEADROOM_GUARD__FREEZE_MAX_SECOND": "3"})
