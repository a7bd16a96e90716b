"""Configurations that would start but mean nonsense are refused at load, one line naming key, value and expectation,
with exit 2 before anything serves; `headroom config check` says the same without starting anything."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from headroom.config import load_settings
from headroom.errors import EXIT_CONFIG, HeadroomError
from tests.helpers import REPO, free_port, headroom_cmd


def refused(text: str, tmp_path, environ=None, check_host=False) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(HeadroomError) as err:
        load_settings(path, environ=environ or {}, check_host=check_host)
    assert err.value.exit_code == EXIT_CONFIG
    return str(err.value)


@pytest.mark.parametrize("text, says", [
    ('[guard.ram.enter]\nwarn = "10%"\nfree = "20%"\n', "guard.ram.enter.free = '20%': expected a value at or below enter.warn"),
    ('[guard.psi.enter]\nwarn = 0.5\npause = 0.1\n', "guard.psi.enter.pause = 0.1: expected a value at or above enter.warn"),
    ('[guard.predict.enter]\nwarn = 10\npause = 60\n', "guard.predict.enter.pause = 60"),
    ('[guard.predict.enter]\npause = inf\n', "guard.predict.enter.pause = inf: expected a finite number"),
    ('[guard.psi.enter]\nwarn = nan\n', "guard.psi.enter.warn = nan: expected a finite number"),
])
def test_thresholds_out_of_order_or_not_finite_are_refused_naming_the_key(tmp_path, text, says):
    message = refused(text, tmp_path)
    assert says in message and message.count("\n") == 0, message


def test_a_memory_domain_that_does_not_exist_and_a_missing_worker_stop_program(tmp_path):
    message = refused('[guard]\nmemory_domain = "/no-such-headroom.slice"\n[guard.worker]\nstop = ["no-such-stop-program"]\n',
                      tmp_path, check_host=True)
    assert "guard.memory_domain = '/no-such-headroom.slice': no such memory cgroup" in message
    assert "guard.worker.stop = ['no-such-stop-program']: 'no-such-stop-program' is not an executable program" in message
    path = tmp_path / "c.toml"
    assert load_settings(path, environ={}).guard.memory_domain == "/no-such-headroom.slice", "clients do not check the host"


@pytest.mark.parametrize("name, suggests", [("HEADROOM_GAURD__LISTEN", "$HEADROOM_GUARD__LISTEN"),
                                            ("HEADROOM_GUARD__TICK_SECOND", "$HEADROOM_GUARD__TICK_SECONDS"),
                                            ("HEADROOM_TOKNE", "$HEADROOM_TOKEN")])
def test_an_unknown_headroom_variable_names_the_closest(name, suggests):
    with pytest.raises(HeadroomError, match="unknown variable") as err:
        load_settings(None, environ={name: "1"})
    assert f"did you mean {suggests}?" in str(err.value)


def test_known_variables_that_are_not_settings_are_left_alone():
    load_settings(None, environ={"HEADROOM_TOKEN": "x" * 20, "HEADROOM_LEASE_ID": "abc", "HEADROOM_CONFIG": ""})


def test_the_guard_exits_2_before_serving_and_config_check_says_the_same(tmp_path):
    port = free_port()
    path = tmp_path / "bad.toml"
    path.write_text(f'state_dir = "{tmp_path / "s"}"\n[guard]\nlisten = "127.0.0.1:{port}"\n'
                    '[guard.ram.enter]\nwarn = "10%"\nfree = "20%"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")} | {"PYTHONPATH": str(REPO)}
    guard = subprocess.run(headroom_cmd("guard", "--config", str(path)), env=env, capture_output=True, text=True, timeout=60)
    check = subprocess.run(headroom_cmd("config", "check", str(path)), env=env, capture_output=True, text=True, timeout=60)
    for result in (guard, check):
        assert result.returncode == EXIT_CONFIG and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines() == ["headroom: invalid configuration: guard.ram.enter.free = '20%': "
                                                      "expected a value at or below enter.warn = '10%' (free is the more "
                                                      "severe level)"], result.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # nothing ever listened there


@pytest.mark.parametrize("parent", ["../escape", "headroom.slice/../..", "/a/./b"])
def test_a_parent_cgroup_that_climbs_out_is_refused(tmp_path, parent):
    message = refused(f'[run]\nparent_cgroup = "{parent}"\n', tmp_path)
    assert f"run.parent_cgroup = {parent!r}: expected a cgroup path without" in message
