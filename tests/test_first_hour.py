"""The first hour (issue 20), in-process parts: discovery, duplicate OOM events, status text, refusal wording."""

from __future__ import annotations

import os
import time

import httpx

from guard.app import build_deps
from guard.cli import render
from headroom.client.http import Answer, GuardClient, GuardUnreachable
from headroom.client.lease import describe_refusal
from headroom.client.progress import describe_wait
from headroom.config import load_settings
from headroom.discover import find_config, read_pointer, token_source, write_pointer


def test_config_discovery_order(tmp_path):
    """--config, $HEADROOM_CONFIG, the running `headroom up`, the installed /etc/headroom, built-in defaults."""
    pointer, system = tmp_path / "up.json", tmp_path / "etc-headroom.toml"
    assert find_config(None, {}, pointer, system).path is None
    assert "no running `headroom up`" in find_config(None, {}, pointer, system).how
    system.write_text('state_dir = "/var/lib/headroom"\n')
    assert find_config(None, {}, pointer, system).path == str(system)
    write_pointer({"pid": os.getpid(), "config": "/srv/up.toml"}, pointer)
    found = find_config(None, {}, pointer, system)
    assert found.path == "/srv/up.toml" and f"pid {os.getpid()}" in found.how
    assert find_config(None, {"HEADROOM_CONFIG": "/env.toml"}, pointer, system).path == "/env.toml"
    assert find_config("/flag.toml", {"HEADROOM_CONFIG": "/env.toml"}, pointer, system).path == "/flag.toml"
    assert oct(pointer.stat().st_mode & 0o777) == "0o600"


def test_a_pointer_of_a_dead_up_is_ignored(tmp_path):
    pointer = tmp_path / "up.json"
    write_pointer({"pid": 2**22 + 12345, "config": "/gone.toml"}, pointer)  # above pid_max's default: never alive
    assert read_pointer(pointer) is None and find_config(None, {}, pointer, tmp_path / "none").path is None


def test_token_source_names_the_file_it_tried(tmp_path):
    token, where = token_source(tmp_path, None, {})
    assert token is None and str(tmp_path / "token") in where and "does not exist" in where
    (tmp_path / "token").write_text("a-token-of-enough-length\n")
    assert token_source(tmp_path, None, {}) == ("a-token-of-enough-length", f"the token file {tmp_path / 'token'}")
    assert token_source(tmp_path, None, {"HEADROOM_TOKEN": "from-env"})[1] == "$HEADROOM_TOKEN"


def test_cannot_reach_names_the_url_and_how_it_was_found(tmp_path):
    settings = load_settings(environ={"HEADROOM_GUARD__LISTEN": "127.0.0.1:1", "HEADROOM_STATE_DIR": str(tmp_path)})
    client = GuardClient.from_settings(settings, found="the stack `headroom up` runs (pid 7, /x/up.json): /x.toml")
    try:
        client.check({"holder": "x"})
    except GuardUnreachable as err:
        assert "http://127.0.0.1:1 ([guard] listen from the stack `headroom up` runs (pid 7" in str(err)
    else:
        raise AssertionError("port 1 answered")
    finally:
        client.close()


def test_the_shortfall_is_said_once_and_in_plain_words():
    answer = Answer("refused", reason="not enough memory: ram short by 1.2 GiB", shortfall={"ram_bytes": 1288490188})
    assert describe_refusal(answer) == "refused: not enough memory: ram short by 1.2 GiB"
    waiting = Answer("waiting", reason="queued behind earlier requests", shortfall={"ram_bytes": 2**30}, position=2,
                     lease={"id": "x", "frees_worker": True})
    text = describe_wait(waiting, 7.2)
    assert text == "queued 7s, position 2, the guard is freeing the worker to make room (ram short by 1.0 GiB)"


def _exporter_with_one_kill(kill_at: float) -> httpx.MockTransport:
    event = {"kind": "oom_kill", "time_seconds": kill_at, "pid": 4242, "comm": "python", "cgroup": "/t", "rss_bytes": 1e9}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/events":
            return httpx.Response(200, json={"events": [event]})
        return httpx.Response(200, text="headroom_memory_available_bytes 1e9\nheadroom_memory_total_bytes 2e9\n")

    return httpx.MockTransport(handler)


def test_a_restarted_guard_does_not_store_the_same_oom_kill_again(tmp_path):
    settings = load_settings(environ={"HEADROOM_STATE_DIR": str(tmp_path), "HEADROOM_GUARD__TOKEN": "t" * 20,
                                      "HEADROOM_GUARD__FAST_PATH": "false"})
    transport = _exporter_with_one_kill(time.time() - 60)
    for _start in range(2):
        deps = build_deps(settings, source_transport=transport)
        deps.manager.record_oom_kills()
        kills = deps.manager.store.events(kind="oom_kill")
        deps.manager.observer.close()
        deps.manager.store.close()
    assert len(kills) == 1, kills


def _status(**worker) -> dict:
    signal = {"level": "ok", "value": None, "why": ""}
    headroom = {"level": "ok", "stale": False, "domain": "host", "reasons": [], "gpus": [], "maintenance": {},
                "ram": {"admissible_bytes": 2**30, "available_bytes": 2**31, "reserved_bytes": 0, "margin_bytes": 0,
                        "level": "ok", "why": "1.0 GiB available"},
                "signals": {"psi": {**signal, "why": "full avg10 0.0 %"}, "swap": signal, "predict": signal},
                "worker": {"driven": False, "observed": None, "desired": {"state": "running"}, **worker}}
    events = [{"id": 9, "at": 1_700_000_100, "kind": "lease", "message": "later"},
              {"id": 10, "at": 1_700_000_000, "kind": "oom_kill", "message": "earlier"}]
    return {"headroom": headroom, "leases": [], "events": events}


def test_plain_status_shows_every_signal_gpus_none_and_events_by_time():
    text = render(_status())
    for line in ("PSI: ok  (full avg10 0.0 %)", "swap: ok", "prediction: ok  (no signal yet)", "GPUs: none"):
        assert line in text, text
    assert text.index("earlier") < text.index("later") and time.strftime("%Y-%m-%d", time.localtime(1_700_000_000)) in text


def test_status_warns_about_an_enabled_worker_nobody_drives():
    text = render(_status(warning="[worker] enabled = true but this guard does not drive it"))
    assert "worker: not driven  WARNING: [worker] enabled = true" in text
    failed = render({**_status(), "up_worker": {"state": "failed", "error": "vLLM is not installed"}})
    assert "worker: FAILED to start under `headroom up`: vLLM is not installed" in failed


def test_install_writes_a_complete_starter_config_that_loads(tmp_path):
    from headroom.install import STARTER_CONFIG

    path = tmp_path / "headroom.toml"
    path.write_text(STARTER_CONFIG.format(state_dir=tmp_path / "state"))
    settings = load_settings(path, environ={})
    assert settings.guard.listen == "127.0.0.1:9841" and settings.worker.listen == "127.0.0.1:9842"
    assert "[guard.worker]" in path.read_text() and "default_ram" in path.read_text()
    enabled = path.read_text().replace("enabled = false", "enabled = true").replace('model = ""', 'model = "m"')
    path.write_text(enabled.replace('url = ""', 'url = "http://127.0.0.1:9842"'))
    assert load_settings(path, environ={}).guard.worker.url == "http://127.0.0.1:9842"


def test_every_unit_documentation_link_names_a_file_that_exists():
    from pathlib import Path

    from headroom.install import render
    from tests.helpers import REPO

    units = render("/usr/bin/python3", "/etc/headroom/headroom.toml", "/var/lib/headroom", str(REPO / "docs"))
    links = [line.split("file://", 1)[1] for text in units.values() for line in text.splitlines()
             if line.startswith("Documentation=file://")]
    assert len(links) == 4 and all(Path(link).is_file() for link in links), links
