"""The API token: created once and atomically (racing processes agree), never empty or short, compared byte for byte."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from headroom.auth import load_or_create_token, token_matches
from headroom.errors import EXIT_TOKEN, HeadroomError
from tests.helpers import REPO, free_port, headroom_cmd

TOKEN = "exact-token-0123456789"


@pytest.mark.parametrize("header, ok", [
    (f"Bearer {TOKEN}", True),
    (f"Bearer  {TOKEN}", False),  # two spaces
    (f"Bearer {TOKEN} ", False),
    (f"Bearer {TOKEN}\t", False),
    (f"bearer {TOKEN}", False),
    (f"Bearer {TOKEN}".encode() + "\u00a0".encode(), False),  # U+00A0 as a client sends it (UTF-8)
    (f"Bearer {TOKEN}".encode() + "\u0085".encode(), False),
    (f"Bearer {TOKEN}\u00a0", False),  # as latin-1 text, which is how Starlette decodes header bytes
    ("Bearer ", False),
    ("", False),
    (None, False),
    (TOKEN, False),
])
def test_the_bearer_token_is_compared_byte_for_byte(header, ok):
    assert token_matches(TOKEN, header) is ok


def test_an_empty_expected_token_matches_nothing():
    assert not token_matches("", "Bearer ")


def test_a_new_token_file_is_private_and_long(tmp_path):
    token = load_or_create_token(tmp_path / "state")
    path = tmp_path / "state" / "token"
    assert len(token) >= 32 and path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path / "state") == token
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["token"]  # no temp file left behind


@pytest.mark.parametrize("content, why", [("", "is empty"), ("\n", "is empty"), ("short\n", "fewer than 16"),
                                          ("has a space in it 0123\n", "spaces")])
def test_an_unusable_token_file_refuses_to_start(tmp_path, content, why):
    (tmp_path / "token").write_text(content)
    with pytest.raises(HeadroomError, match=why) as err:
        load_or_create_token(tmp_path)
    assert err.value.exit_code == EXIT_TOKEN and str(tmp_path / "token") in str(err.value)


def test_a_short_configured_or_environment_token_is_refused(tmp_path, monkeypatch):
    with pytest.raises(HeadroomError, match="token setting") as err:
        load_or_create_token(tmp_path, "tok")
    assert err.value.exit_code == EXIT_TOKEN
    monkeypatch.setenv("HEADROOM_TOKEN", "x")
    with pytest.raises(HeadroomError, match=r"\$HEADROOM_TOKEN"):
        load_or_create_token(tmp_path)


RACER = """
import sys, time
from pathlib import Path
from headroom.auth import load_or_create_token
base, go = Path(sys.argv[1]), Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
for i in range(int(sys.argv[3])):
    print(load_or_create_token(base / str(i)), flush=True)
"""


def test_processes_creating_the_token_at_once_all_get_the_same_one(tmp_path):
    """`headroom up` starts guard and worker together: each state dir ends with one token every racer agrees on."""
    rounds, racers = 150, 3
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HEADROOM_TOKEN", None)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "dirs"), str(go), str(rounds)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(racers)]
    time.sleep(0.5)
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * racers, [err for _, err in outputs]
    seen = [out.split() for out, _ in outputs]
    for i in range(rounds):
        tokens = {s[i] for s in seen}
        on_disk = (tmp_path / "dirs" / str(i) / "token").read_text().strip()
        assert tokens == {on_disk} and len(on_disk) >= 32, (i, tokens, on_disk)
        assert os.listdir(tmp_path / "dirs" / str(i)) == ["token"]


@pytest.mark.parametrize("part", ["guard", "worker"])
def test_a_server_with_an_empty_token_file_exits_with_the_token_code(tmp_path, part):
    """What a first start on a full disk once left behind: the server must not start open."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "token").write_text("")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HEADROOM_STATE_DIR": str(state), "HEADROOM_WORKER__ENGINE": "echo"}
    env.pop("HEADROOM_TOKEN", None)
    done = subprocess.run(headroom_cmd(part, "--listen", f"127.0.0.1:{free_port()}"), env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == EXIT_TOKEN == 6
    assert "token" in done.stderr and "empty" in done.stderr and str(state / "token") in done.stderr
