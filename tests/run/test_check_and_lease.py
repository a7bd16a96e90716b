"""`headroom check`, the lease() context manager and the pytest marker, against a real guard; plus the error paths."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from headroom.errors import EXIT_UNREACHABLE
from tests.helpers import REPO, free_port, headroom_cmd, write_toml
from tests.run.conftest import LIMIT, headroom, run_env

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]


def test_check_says_yes_or_no_with_the_shortfall(stack_factory):
    stack = stack_factory()
    yes = headroom(stack, "check", "--ram", "100MiB")
    assert yes.wait(30) == 0 and yes.stdout.read().startswith("yes")
    no = headroom(stack, "check", "--ram", str(LIMIT * 2), "--json")
    assert no.wait(30) == 1
    answer = json.loads(no.stdout.read())
    assert answer["ok"] is False and answer["status"] == "refused"
    assert answer["shortfall"]["ram_bytes"] > LIMIT * 0.9
    assert stack.guard.get("/v1/leases").json()["leases"] == [], "check reserves nothing"
    human = headroom(stack, "check", "--ram", str(LIMIT * 2))
    assert human.wait(30) == 1 and "ram short by" in human.stdout.read()


def test_guard_unreachable_fails_closed(tmp_path):
    conf = write_toml(tmp_path / "c.toml", {"state_dir": str(tmp_path / "s"), "guard": {"listen": f"127.0.0.1:{free_port()}"}})
    def run(*args):
        return subprocess.run(headroom_cmd(*args[:1], "--config", str(conf), *args[1:]), cwd=REPO, capture_output=True, text=True, timeout=30)
    check = run("check", "--ram", "1GiB")
    assert check.returncode == EXIT_UNREACHABLE == 69 and "cannot reach the guard" in check.stdout
    assert run("check", "--ram", "1GiB", "--if-unreachable", "allow").returncode == 0
    launched = run("run", "--ram", "1GiB", "--", sys.executable, "-c", "print('should not run')")
    assert launched.returncode == 69 and "should not run" not in launched.stdout and "cannot reach the guard" in launched.stderr


@pytest.mark.parametrize("size, message", [
    ("14XB", "expected a size such as 14GiB, 512MiB, 14G (1024-based), 14GB (10^9)"),
    ("-1GiB", "expected a size such as 14GiB"),
    ("lots", "expected a size such as 14GiB"),
    ("1.5", "a number of bytes must be whole"),
])
def test_bad_sizes_are_rejected_with_a_clear_message(size, message):
    result = subprocess.run(headroom_cmd("run", f"--ram={size}", "--", "true"), cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and f"argument --ram: {message}" in result.stderr


def test_lease_context_manager_holds_and_releases(stack_factory):
    stack = stack_factory()
    code = textwrap.dedent(f"""
        import httpx, sys
        from headroom.client.lease import lease
        with lease(ram="64MiB", holder="ctx", config={str(stack.config)!r}) as held:
            inside = httpx.get("http://127.0.0.1:{stack.ports['guard']}/v1/leases").json()["leases"]
            assert [l["holder"] for l in inside] == ["ctx"] and inside[0]["pid"], inside
        print("released", held.id)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "released" in result.stdout, result.stderr
    assert stack.guard.get("/v1/leases").json()["leases"] == []


def test_pytest_marker_takes_a_lease_or_skips_with_the_reason(stack_factory, tmp_path):
    stack = stack_factory()
    suite = tmp_path / "test_model.py"
    suite.write_text(textwrap.dedent(f"""
        import httpx, pytest

        @pytest.mark.headroom(ram="64MiB")
        def test_fits():
            leases = httpx.get("http://127.0.0.1:{stack.ports['guard']}/v1/leases").json()["leases"]
            assert any(l["holder"].startswith("pytest:") for l in leases)

        @pytest.mark.headroom(ram="{LIMIT * 4}")
        def test_too_big():
            raise AssertionError("must not run without its lease")
    """))
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", str(suite), "--headroom-config", str(stack.config)]
    result = subprocess.run(argv, cwd=tmp_path, env={**run_env(), "CI": ""}, capture_output=True, text=True, timeout=120)
    assert "1 passed, 1 skipped" in result.stdout, result.stdout + result.stderr
    assert "headroom lease not granted: refused" in result.stdout and "ram short by" in result.stdout
    failing = subprocess.run(argv + ["--headroom-refused", "fail"], cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=120)
    assert "1 failed, 1 passed" in failing.stdout or "1 passed, 1 error" in failing.stdout, failing.stdout
    assert stack.guard.get("/v1/leases").json()["leases"] == []


def test_requests_the_guard_rejects_are_named_not_retried(stack_factory, tmp_path):
    stack = stack_factory()
    no_gpu = headroom(stack, "check", "--gpu", "1GiB")
    assert no_gpu.wait(30) == 1 and "sees no GPU on this box" in (out := no_gpu.stdout.read()) and "drop --gpu" in out
    tokenless = tmp_path / "client.toml"  # the client's own config: no [guard] token, so $HEADROOM_TOKEN is used
    tokenless.write_text("".join(line for line in stack.config.read_text().splitlines(keepends=True) if not line.startswith("token")))
    bad_token = subprocess.run(headroom_cmd("run", "--config", str(tokenless), "--ram", "64MiB", "--", sys.executable, "-c", "print('ran')"),
                               cwd=REPO, env={**run_env(), "HEADROOM_TOKEN": "wrong"}, capture_output=True, text=True, timeout=60)
    assert bad_token.returncode == 2 and "refused the token (401; token from $HEADROOM_TOKEN)" in bad_token.stderr and "ran" not in bad_token.stdout
