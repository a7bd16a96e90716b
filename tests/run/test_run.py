"""`headroom run` with real processes: queueing, freeing the worker, OOM inside its own cgroup, signals, exit codes."""

from __future__ import annotations

import signal
import sys

import httpx
import pytest

from tests.guard.realstack import MiB
from tests.helpers import wait_for
from tests.run.conftest import LIMIT, headroom

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]
PY = sys.executable
SIXTY_PERCENT = str(int(LIMIT * 0.6))


def stamp(path, seconds: float = 1.0) -> list[str]:
    """A command that writes its start time, sleeps, writes its end time."""
    code = "import time,sys; p=sys.argv[1]; open(p,'a').write(f'start {time.time()}\\n'); time.sleep(float(sys.argv[2])); open(p,'a').write(f'end {time.time()}\\n')"
    return [PY, "-c", code, str(path), str(seconds)]


def times(path) -> dict[str, float]:
    return {kind: float(value) for kind, value in (line.split() for line in path.read_text().splitlines())}


def test_second_run_asking_sixty_percent_waits_for_the_first(stack_factory, tmp_path):
    stack = stack_factory()
    first = headroom(stack, "run", "--ram", SIXTY_PERCENT, "--holder", "first", "--", *stamp(tmp_path / "a", 5.0))
    wait_for(lambda: (tmp_path / "a").exists(), 20, what="the first command to start")
    second = headroom(stack, "run", "--ram", SIXTY_PERCENT, "--wait", "60s", "--holder", "second", "--", *stamp(tmp_path / "b"))
    assert first.wait(30) == 0 and second.wait(30) == 0, first.stderr.read() + second.stderr.read()
    a, b = times(tmp_path / "a"), times(tmp_path / "b")
    assert b["start"] >= a["end"], "the second command started only after the first ended"
    err = second.stderr.read()
    assert "queued" in err and "position 1" in err and "position 0" not in err and "granted" in err
    assert stack.guard.get("/v1/leases").json()["leases"] == [], "both leases were released"


def test_free_worker_frees_runs_and_restores(stack_factory, domain, tmp_path):
    stack = stack_factory(worker_hold_mib=500, worker_in_cgroup=True)
    wait_for(lambda: domain.usage() > 450 * MiB, 10, what="the worker to hold its memory in the domain")
    proc = headroom(stack, "run", "--ram", SIXTY_PERCENT, "--free-worker", "--wait", "60s", "--", *stamp(tmp_path / "c"))
    assert proc.wait(60) == 0, proc.stderr.read() + stack.logs()
    wait_for(lambda: stack.worker.get("/control/state").json()["desired"] == {"state": "running"}, 15, what="the worker restored")
    states = [body["state"] for body in stack.worker_puts()]
    assert states[:1] == ["freed"] and states[-1] == "running", states
    assert (tmp_path / "c").exists()


def test_command_that_outgrows_its_lease_is_killed_in_its_own_cgroup(stack_factory):
    stack = stack_factory()
    grow = "x = b'y' * (400 * 2**20); print('survived')"
    proc = headroom(stack, "run", "--ram", str(150 * MiB), "--holder", "greedy", "--", PY, "-c", grow)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGKILL and "survived" not in out
    assert "OOM-killed inside its own cgroup" in err
    cgroup = next(line.split("running in cgroup ")[1].split()[0] for line in err.splitlines() if "running in cgroup" in line)
    assert cgroup.startswith(stack.cgroup.name + "/headroom-run-greedy-")
    for name, child in stack.procs.items():
        assert child.poll() is None, f"{name} died with the command"
    exporter = f"http://127.0.0.1:{stack.ports['exporter']}"
    events = wait_for(lambda: [e for e in httpx.get(exporter + "/events").json()["events"] if e["cgroup"] == cgroup], 10,
                      what="the OOM kill attributed to the command's cgroup")
    assert events[0]["comm"].startswith("python")
    assert stack.guard.get("/readyz").status_code == 200 and stack.worker.get("/control/state").status_code == 200


def test_signals_are_forwarded_and_the_lease_released(stack_factory, tmp_path):
    stack = stack_factory()
    marker = tmp_path / "got-term"
    code = f"import signal,sys,time; signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r},'w').write('x'), sys.exit(3))); print('ready', flush=True); time.sleep(60)"
    proc = headroom(stack, "run", "--ram", "64MiB", "--", PY, "-c", code)
    assert proc.stdout.readline().strip() == "ready"
    assert len(stack.guard.get("/v1/leases").json()["leases"]) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 3 and marker.exists()
    assert stack.guard.get("/v1/leases").json()["leases"] == []


@pytest.mark.parametrize("argv, code", [
    ([PY, "-c", "raise SystemExit(5)"], 5),
    ([PY, "-c", "import os,signal; os.kill(os.getpid(), signal.SIGKILL)"], 137),
    (["/nonexistent/command"], 127),
])
def test_exit_status_is_the_commands(stack_factory, argv, code):
    stack = stack_factory()
    proc = headroom(stack, "run", "--ram", "32MiB", "--", *argv)
    assert proc.wait(30) == code, proc.stderr.read()


def test_ram_zero_runs_unlimited_only_saying_so_and_only_once_it_runs(stack_factory):
    stack = stack_factory()
    proc = headroom(stack, "run", "--ram", "0", "--holder", "unlimited", "--", PY, "-c", "print('ran')")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "ran" in out, err
    assert "granted" in err and "no memory limit" in err, "an unlimited run must say so"
