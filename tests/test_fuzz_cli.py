"""Property-based fuzzing of what a user types: the CLI's own arguments and every config key (as HEADROOM_* variables).
Whatever comes in, the answer is a one-line error with a non-zero exit, or a normal run; never a traceback."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import BaseModel

from headroom.cli import main
from headroom.config import ENV_PREFIX, Settings, load_settings
from headroom.errors import EXIT_CONFIG, HeadroomError
from tests.helpers import REPO, free_port, headroom_cmd, need

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLOSED = f"http://127.0.0.1:{free_port()}"  # nothing listens: a valid command gives up at once ("unreachable")
NASTY = st.sampled_from(["", "-1", "-2", "0", "1", "nan", "inf", "-inf", "1e400", "5", "5.5", "10m", "2GiB", "..",
                         "../../etc", "http://[::1", "ftp://x", "http://127.0.0.1:99999", CLOSED, "\x00", "é", " ",
                         "999999999999999999999", "0x10", "1_000"])
VALUES = st.one_of(NASTY, st.text(max_size=12), st.integers(-10**12, 10**12).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
OPTIONS = {
    "run": ["--gpu", "--ram", "--gpu-index", "--url", "--wait", "--holder", "--ttl", "--max-margin"],
    "check": ["--gpu", "--ram", "--gpu-index", "--url", "--if-unreachable"],
    "status": ["--url"],
    "thaw": ["--url"],
}


@pytest.fixture(scope="module", autouse=True)
def own_state(tmp_path_factory):
    """Every in-process run reads a config whose state dir is this test's, with no other HEADROOM_* variable."""
    base = tmp_path_factory.mktemp("fuzz")
    config = base / "c.toml"
    config.write_text(f'state_dir = "{base / "state"}"\n[guard]\ntoken = "{"t" * 20}"\n')
    saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    for name in saved:
        del os.environ[name]
    os.environ["HEADROOM_CONFIG"] = str(config)
    yield
    del os.environ["HEADROOM_CONFIG"]
    os.environ.update(saved)


def run_main(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 2
    return code, err.getvalue() or out.getvalue()  # `check` answers on stdout


def assert_one_line_error(code: int, err: str, argv) -> None:
    assert "Traceback" not in err, (argv, err)
    if code != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, (argv, err)


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command]
    for option in draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=4, unique=True)):
        argv += [option, draw(VALUES)]
    if "--url" not in argv:
        argv += ["--url", CLOSED]
    if command == "run":
        argv += ["--wait", "0", "--", "true"]
    return argv


@FAST
@given(command_lines())
def test_cli_arguments_answer_with_one_line_and_never_a_traceback(argv):
    code, err = run_main(argv)
    assert_one_line_error(code, err, argv)
    assert code != 0 or argv[0] == "check", (argv, err)  # nothing is reachable: only `check --if-unreachable allow` is 0


def leaf_keys(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    keys = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys += leaf_keys(kind, (*prefix, name))
        else:
            keys.append((*prefix, name))
    return keys


KEYS = [key for key in leaf_keys(Settings) if key != ("state_dir",)]  # a state dir elsewhere is valid, and is made


@FAST
@given(st.sampled_from(KEYS), VALUES)
def test_every_config_key_loads_or_names_itself_in_one_line(key, value):
    name = ENV_PREFIX + "__".join(key).upper()
    try:
        load_settings(None, environ={name: value})
    except HeadroomError as err:
        assert err.exit_code == EXIT_CONFIG
        text = str(err)
        dotted = ".".join(key)
        lines = text.splitlines()
        assert len(lines) == 1 or all(dotted in line for line in lines[1:]), text
        assert dotted in text or name in text, text


@pytest.mark.parametrize("argv, env", [
    (["run", "--ttl", "1", "--", "true"], {}),
    (["run", "--max-margin", "nan", "--", "true"], {}),
    (["run", "--max-margin", "-1", "--", "true"], {}),
    (["status", "--url", "http://[::1"], {}),
    (["--bogus"], {}),
    (["status"], {"HEADROOM_GUARD__TICK_SECONDS": "nan"}),
    (["status"], {"HEADROOM_GAURD__LISTEN": "127.0.0.1:1"}),
])
def test_a_real_process_says_one_line_and_exits_non_zero(tmp_path, argv, env):
    need(os.path.exists(REPO / "headroom"), "the repository")
    full = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)} | {"PYTHONPATH": str(REPO)} | env
    result = subprocess.run(headroom_cmd(*argv), env=full, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
