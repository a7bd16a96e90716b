"""The command wiring: each server's flags override its own section; every other command gets the loaded settings."""

from __future__ import annotations

import pytest

from headroom import cli
from headroom.errors import EXIT_CONFIG


def settings_for(argv: list[str], monkeypatch):
    monkeypatch.delenv("HEADROOM_CONFIG", raising=False)
    return cli._settings(cli.build_parser().parse_args(argv))


def test_a_servers_flags_override_its_own_section_only(monkeypatch):
    settings = settings_for(["worker", "--listen", "127.0.0.1:19842", "--oom-score-adj", "-100"], monkeypatch)
    assert settings.worker.listen == "127.0.0.1:19842" and settings.worker.oom_score_adj == -100
    assert settings.guard.listen == "127.0.0.1:9841" and settings.exporter.listen == "127.0.0.1:9840"
    assert settings_for(["exporter", "--listen", "[::1]:19840"], monkeypatch).exporter.listen == "[::1]:19840"


def test_without_flags_the_file_and_environment_decide(monkeypatch, tmp_path):
    config = tmp_path / "headroom.toml"
    config.write_text('[guard]\nlisten = "127.0.0.1:19841"\n')
    monkeypatch.setenv("HEADROOM_WORKER__LISTEN", "127.0.0.1:29842")
    settings = settings_for(["guard", "--config", str(config)], monkeypatch)
    assert settings.guard.listen == "127.0.0.1:19841" and settings.worker.listen == "127.0.0.1:29842"


def test_every_server_serves_through_its_parts_serve_function():
    import importlib

    for server in cli.SERVERS:
        assert callable(importlib.import_module(server.module).serve), server


def test_a_bad_flag_value_names_the_key_and_exits_2_before_serving(capsys, monkeypatch):
    monkeypatch.delenv("HEADROOM_CONFIG", raising=False)
    assert cli.main(["guard", "--listen", "nowhere"]) == EXIT_CONFIG
    assert "guard.listen = 'nowhere'" in capsys.readouterr().err


def test_client_commands_receive_the_settings(monkeypatch, tmp_path, capsys):
    config = tmp_path / "headroom.toml"
    config.write_text('log_level = "debug"\n')
    monkeypatch.delenv("HEADROOM_CONFIG", raising=False)
    assert cli.main(["config", "show", "--config", str(config)]) == 0
    assert '"log_level": "debug"' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["status", "--no-such-flag"])


@pytest.mark.parametrize("argv", [["status", "--url", "http://127.0.0.1:1"], ["thaw", "1", "--url", "http://127.0.0.1:1"],
                                  ["check", "--ram", "1GiB", "--url", "http://127.0.0.1:1"],
                                  ["batch", "status", "b1", "--url", "http://127.0.0.1:1"]])
def test_an_unreachable_guard_or_worker_is_exit_69_for_every_client_command(argv, monkeypatch, tmp_path, capsys):
    from headroom.errors import EXIT_UNREACHABLE

    monkeypatch.delenv("HEADROOM_CONFIG", raising=False)
    monkeypatch.setenv("HEADROOM_STATE_DIR", str(tmp_path))
    assert cli.main(argv) == EXIT_UNREACHABLE == 69
    assert "reach" in (lambda out: out.out + out.err)(capsys.readouterr())
