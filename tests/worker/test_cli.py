"""The command line: `headroom worker` bind errors and config errors, `headroom batch submit|status|results`."""

from __future__ import annotations

import json
import socket
import subprocess

from headroom.errors import EXIT_NO, EXIT_UNREACHABLE
from tests.helpers import headroom_cmd
from tests.worker.conftest import TOKEN, child_env, completion_lines, jsonl, start_worker


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(headroom_cmd(*args), capture_output=True, text=True, timeout=60, env=env or child_env())


def test_listen_address_in_use_exits_3_with_a_clear_message(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = tmp_path / "w.toml"
        config.write_text(f'state_dir = "{tmp_path}/state"\n[worker]\nengine = "echo"\n')
        result = run("worker", "--config", str(config), "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 3, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--listen" in result.stderr


def test_vllm_engine_without_model_is_a_config_error(tmp_path):
    config = tmp_path / "w.toml"
    config.write_text(f'state_dir = "{tmp_path}/state"\n[worker]\nengine = "vllm"\n')
    result = run("worker", "--config", str(config))
    assert result.returncode == 2 and "worker.model" in result.stderr


def test_pause_mode_keep_with_a_remote_engine_is_a_config_error(tmp_path):
    config = tmp_path / "w.toml"
    config.write_text(f'state_dir = "{tmp_path}/state"\n[worker]\nengine = "remote"\npause_mode = "keep"\n')
    result = run("worker", "--config", str(config))
    assert result.returncode == 2 and "worker.pause_mode" in result.stderr and "abort" in result.stderr


def test_batch_submit_status_results_against_a_worker(tmp_path):
    worker = start_worker(tmp_path, engine="echo")
    try:
        batch_file = tmp_path / "batch.jsonl"
        batch_file.write_text(jsonl(completion_lines(3)))
        env = child_env() | {"HEADROOM_TOKEN": TOKEN}
        common = ["--config", str(worker.config)]
        submitted = run("batch", "submit", str(batch_file), "--priority", "production", *common, env=env)
        assert submitted.returncode == 0, submitted.stderr
        batch_id = submitted.stdout.strip()
        assert batch_id.startswith("batch_") and "3 requests queued at priority production" in submitted.stderr
        worker.wait_batch(batch_id, timeout=10)
        status = json.loads(run("batch", "status", batch_id, *common, env=env).stdout)
        assert status["status"] == "completed" and status["request_counts"]["completed"] == 3
        results = [json.loads(x) for x in run("batch", "results", batch_id, *common, env=env).stdout.splitlines()]
        assert [r["custom_id"] for r in results] == ["req-0", "req-1", "req-2"]
        batch_file.write_text('{"custom_id": "x", "url": "/v1/nope", "body": {}}\n')
        refused = run("batch", "submit", str(batch_file), *common, env=env)
        assert refused.returncode == 1 and "line 1, url" in refused.stderr
    finally:
        worker.stop()


def test_an_unreachable_worker_is_not_a_refusal(tmp_path):
    """`headroom batch` against no worker ends EXIT_UNREACHABLE (69), not EXIT_NO (1), which means the worker said no."""
    with socket.socket() as closed:  # a port nothing listens on: bound, never listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        config = tmp_path / "w.toml"
        config.write_text(f'state_dir = "{tmp_path}/state"\n[worker]\nlisten = "127.0.0.1:{port}"\n')
        result = run("batch", "status", "batch_x", "--config", str(config), env=child_env() | {"HEADROOM_TOKEN": TOKEN})
    assert result.returncode == EXIT_UNREACHABLE != EXIT_NO, result.stderr
    assert f"the worker at http://127.0.0.1:{port} ([worker] listen from --config " in result.stderr and "is not reachable" in result.stderr
