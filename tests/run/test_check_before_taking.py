"""`headroom run`/`check` check before taking: no silent unlimited run, the command resolved and --gpu checked first."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from headroom.sizes import format_size
from tests.guard.realstack import MiB
from tests.helpers import REPO, headroom_cmd, wait_for
from tests.run.conftest import LIMIT, headroom, run_env

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]
PY = sys.executable
SIXTY_PERCENT = str(int(LIMIT * 0.6))


def lease_events(stack) -> list[dict]:
    return [e for e in stack.guard.get("/v1/events", params={"limit": 100}).json()["events"] if e["kind"] == "lease"]


def test_run_without_ram_refuses_and_names_it_and_a_default_applies(stack_factory, tmp_path):
    stack = stack_factory()
    marker = tmp_path / "ran"
    proc = headroom(stack, "run", "--", PY, "-c", f"open({str(marker)!r}, 'w')")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--ram SIZE" in err and "[run] default_ram" in err, err
    assert not marker.exists() and lease_events(stack) == []
    with open(stack.config, "a") as handle:
        handle.write('default_ram = "64MiB"\n')  # the config's last table is [run]
    proc = headroom(stack, "run", "--", PY, "-c", f"open({str(marker)!r}, 'w')")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and marker.exists(), err
    assert "RAM 64.0 MiB" in err and ("64.0 MiB" in err.split("running in cgroup", 1)[1]), err


def test_a_typo_in_the_command_fails_before_any_lease(stack_factory):
    stack = stack_factory()
    proc = headroom(stack, "run", "--ram", "64MiB", "--free-worker", "--", "pyhton3-no-such-command", "t.py")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 127 and "command not found (nothing was leased)" in err, err
    assert lease_events(stack) == [] and stack.worker_puts() == [], "no lease asked, the worker not freed"


def test_gpu_on_a_gpu_less_box_fails_at_once_with_the_fix(stack_factory):
    stack = stack_factory()
    proc = headroom(stack, "run", "--gpu", "14GiB", "--ram", "64MiB", "--wait", "10m", "--", PY, "-c", "pass")
    _, err = proc.communicate(timeout=20)  # not after a 10-minute wait
    assert proc.returncode == 2 and "sees no GPU" in err and "drop --gpu" in err, err


def test_check_free_worker_answers_would_it_fit_once_the_worker_is_freed(stack_factory, domain):
    stack = stack_factory(worker_hold_mib=500, worker_in_cgroup=True)
    wait_for(lambda: domain.usage() > 450 * MiB, 10, what="the worker to hold its memory in the domain")
    plain = headroom(stack, "check", "--ram", SIXTY_PERCENT)
    assert plain.wait(30) == 1, plain.stdout.read()
    freeing = headroom(stack, "check", "--ram", SIXTY_PERCENT, "--free-worker")
    out = freeing.stdout.read()
    assert freeing.wait(30) == 0 and "once it has freed the worker" in out, out
    assert stack.worker_puts() == [], "a check frees nothing"


def test_check_and_run_exit_alike_for_a_request_the_guard_rejects(stack_factory, tmp_path):
    stack = stack_factory()
    tokenless = tmp_path / "client.toml"
    tokenless.write_text("".join(l for l in stack.config.read_text().splitlines(keepends=True) if not l.startswith("token")))
    env = {**run_env(), "HEADROOM_TOKEN": "wrong-token-of-enough-length"}
    codes = [subprocess.run(headroom_cmd(cmd, "--config", str(tokenless), "--ram", "64MiB", *tail), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60).returncode
             for cmd, tail in (("check", ()), ("run", ("--", PY, "-c", "pass")))]
    assert codes == [2, 2]


def test_lease_and_the_pytest_plugin_say_they_are_queued(stack_factory, tmp_path):
    """lease() and `pytest --headroom-wait` were silent while queued; now a line says position and time waited."""
    stack = stack_factory()
    held = stack.guard.post("/v1/leases", json={"holder": "first", "ram_bytes": SIXTY_PERCENT, "ttl_seconds": 60})
    assert held.status_code == 201, held.text
    script = (f"from headroom.client.lease import lease\n"
              f"with lease(ram={SIXTY_PERCENT!r}, holder='second', wait=60, config={str(stack.config)!r}):\n"
              f"    print('inside')\n")
    suite = tmp_path / "test_marked.py"
    suite.write_text(f"import pytest\n\n@pytest.mark.headroom(ram={SIXTY_PERCENT!r})\ndef test_big():\n    pass\n")
    python = subprocess.Popen([PY, "-c", script], cwd=REPO, env=run_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    plugin = subprocess.Popen([PY, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(suite), "--headroom-wait", "60s",
                               "--headroom-config", str(stack.config)], cwd=tmp_path, env=run_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: len([l for l in stack.guard.get("/v1/leases").json()["leases"] if l["status"] == "waiting"]) == 2,
             30, what="both to queue")
    time.sleep(3)  # past the first long-poll answer (2 s): the clients now know they are queued
    assert stack.guard.delete(f"/v1/leases/{held.json()['lease']['id']}").status_code == 200
    out, err = python.communicate(timeout=60)
    assert "inside" in out and "headroom lease second: queued" in err and "position 1" in err, err
    assert "granted after" in err, err
    assert any(f"second) granted: ram {format_size(int(SIXTY_PERCENT))}, gpu 0 B" in e["message"] for e in lease_events(stack))
    report = plugin.communicate(timeout=60)[0]
    assert "1 passed" in report and "headroom lease for test_big: queued" in report, report
