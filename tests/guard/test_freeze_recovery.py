"""Nothing stays frozen, whatever fails: a guard killed mid-freeze is undone by the next start (whatever its settings,
even one that fails), by `headroom thaw --all` with no guard, by the unit's ExecStopPost= and by `headroom up`; the
records outlive a corrupt store; a thaw the kernel refuses keeps its record while the others thaw. Records of an older
guard that stopped a process group by SIGSTOP are still thawed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from guard.protect import cgroupctl
from guard.protect.frozenfile import read_records, records_path
from tests.guard.freezing import (CGROUPFS, counting, freezer_path, group_pids, legacy_record, need_freezer_root,
                                  nobodys_counter, owned_cgroup, roots, run_guard, start_counter, stop)
from tests.helpers import REPO, free_port, headroom_cmd, need, wait_for, write_toml

SETPRIV_NO_CAPS = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--"]  # root without CAP_DAC_OVERRIDE
REFUSED = "Permission denied"  # EACCES: root without CAP_DAC_OVERRIDE writing a cgroup delegated to another user


def killed_guard(state: Path, *pids: int) -> list[str]:
    """A guard that froze `pids`, then was SIGKILLed (no exit handler ran); the methods it froze them by."""
    guard = run_guard(state, ",".join(str(pid) for pid in pids))
    try:
        methods = [guard.stdout.readline().strip() for _ in pids]
    finally:
        guard.kill()
        guard.wait(timeout=10)
    assert all(m.startswith("frozen ") for m in methods), methods
    return [m.split()[1] for m in methods]


def config(tmp: Path, **guard) -> Path:
    port = guard.pop("port", None) or free_port()
    return write_toml(tmp / "headroom.toml", {"state_dir": str(tmp / "state"), "guard": {
        "listen": f"127.0.0.1:{port}", "token": "recovery-test-token-0123456789",
        "exporter_url": f"http://127.0.0.1:{free_port()}/metrics", **guard}})


def run_headroom(*args: str, prefix: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *headroom_cmd(*args)], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def is_stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")


@pytest.mark.kernel
def test_thaw_all_with_no_guard_thaws_exactly_what_a_killed_guard_recorded(tmp_path):
    """A tree frozen in a cgroup the guard made (moved back and the cgroup removed), one frozen in its own cgroup, and
    a group an older guard stopped by SIGSTOP are thawed; a process someone else stopped, whose pid a record names
    with another start time (a reused pid), is left stopped."""
    need_freezer_root()
    version, root = roots()[0]
    state = tmp_path / "state"
    group, group_outs = start_counter(tmp_path, "group", child=True)
    legacy, legacy_outs = start_counter(tmp_path, "legacy", child=True)
    bystander, bystander_out = start_counter(tmp_path, "bystander")
    with owned_cgroup(version, root) as (path, directory):
        boxed, boxed_outs = start_counter(tmp_path, "boxed", join=directory)
        try:
            assert killed_guard(state, group.pid, boxed.pid) == ["cgroup-v1", f"cgroup-v{version}"]
            made = read_records(records_path(state))[0]["cgroup"]
            assert made.startswith(cgroupctl.GUARD_GROUP + "/") and freezer_path(group.pid) == made
            os.killpg(legacy.pid, signal.SIGSTOP)  # as an older guard did, its record written as it wrote them
            os.kill(bystander.pid, signal.SIGSTOP)  # stopped by someone else (a debugger, Ctrl-Z): not the guard's
            old = legacy_record(legacy)
            forged = {**old, "pid": bystander.pid, "pgid": 0, "members": [[bystander.pid, 1]]}  # pid reused
            records_path(state).write_text(json.dumps(read_records(records_path(state)) + [old, forged]))
            assert not any(counting(out) for out in group_outs + boxed_outs + legacy_outs)
            done = run_headroom("thaw", "--all", "--config", str(config(tmp_path)))
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.count("thawed pid") == 4, done.stdout
            assert all(counting(out) for out in group_outs + boxed_outs + legacy_outs), "a recorded freeze is frozen"
            assert not cgroupctl.is_frozen(cgroupctl.freezer_of(CGROUPFS, path, version))
            assert [freezer_path(pid) for pid in group_pids(group)] == ["/", "/"], "not moved back where they were"
            assert cgroupctl.freezer_of(CGROUPFS, made, 1) is None, "the cgroup the guard made is left behind"
            assert is_stopped(bystander.pid) and not counting(bystander_out[0]), "thawed what the guard never stopped"
            assert read_records(records_path(state)) == []
        finally:
            stop(boxed)
            stop(group)
            stop(legacy)
            stop(bystander)


@pytest.mark.kernel
@pytest.mark.parametrize("where", ["thaw --all", "guard"])
def test_a_refused_thaw_keeps_its_record_while_the_others_thaw(tmp_path, where):
    """Without CAP_DAC_OVERRIDE (setpriv), root may not thaw a cgroup delegated to nobody: EACCES for that record
    only; the tree frozen in a cgroup the guard made thaws (and goes back) all the same."""
    need_freezer_root()
    need(shutil.which("setpriv") is not None, "setpriv (util-linux)")
    state = tmp_path / "state"
    mine, mine_outs = start_counter(tmp_path, "root-owned")
    with nobodys_counter() as (theirs, theirs_out):
        try:
            assert killed_guard(state, theirs.pid, mine.pid)[1] == "cgroup-v1"
            port = free_port()
            conf = config(tmp_path, port=port)
            if where == "thaw --all":
                done = run_headroom("thaw", "--all", "--config", str(conf), prefix=tuple(SETPRIV_NO_CAPS))
                assert done.returncode == 1 and "NOT thawed pid" in done.stdout, done.stdout + done.stderr
                assert REFUSED in done.stdout
            else:
                refused_inside_a_running_guard(conf, port)
            assert counting(mine_outs[0]), "one refused thaw stopped the others"
            assert freezer_path(mine.pid) == "/", "the tree frozen in a cgroup the guard made was not moved back"
            assert not counting(theirs_out), "it could not have been thawed without CAP_DAC_OVERRIDE"
            assert [r["pid"] for r in read_records(records_path(state))] == [theirs.pid], "the refused record was lost"
            retried = run_headroom("thaw", "--all", "--config", str(conf))
            assert retried.returncode == 0 and counting(theirs_out), retried.stdout + retried.stderr
            assert read_records(records_path(state)) == []
        finally:
            stop(mine)


def refused_inside_a_running_guard(conf: Path, port: int) -> None:
    """A real guard without capabilities: it recovers at start, retries the refused one, shows it, keeps it at exit."""
    guard = subprocess.Popen([*SETPRIV_NO_CAPS, *headroom_cmd("guard", "--config", str(conf))], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
        wait_for(lambda: client.get("/healthz").status_code == 200, 30, what="the guard without capabilities")
        frozen = wait_for(lambda: client.get("/v1/frozen").json()["processes"], 10, what="the refused record shown")
        assert REFUSED in frozen[0]["thaw_error"]

        def failures() -> float:
            found = [line for line in client.get("/metrics").text.splitlines()
                     if line.startswith("headroom_guard_thaw_failures_total ")]
            return float(found[0].split()[1]) if found else 0.0

        wait_for(lambda: failures() >= 3, 10, what="the refused thaw counted and retried every second")
        metrics = client.get("/metrics").text
        assert "headroom_guard_frozen 1.0" in metrics, "the frozen-too-long alert reads this record"
    finally:
        guard.send_signal(signal.SIGTERM)
        guard.wait(timeout=30)


@pytest.mark.kernel
@pytest.mark.parametrize("how", ["fast_path off", "store moved aside", "port in use", "missing worker cgroup",
                                 "invalid config"])
def test_a_guard_start_thaws_first_whatever_else_happens(tmp_path, how):
    need_freezer_root()
    state = tmp_path / "state"
    grower, outs = start_counter(tmp_path, "grower")
    busy = socket.socket()
    try:
        killed_guard(state, grower.pid)
        port = free_port()
        guard: dict = {"port": port}
        if how == "fast_path off":
            guard["fast_path"] = False
        elif how == "store moved aside":
            for side in ("-wal", "-shm"):
                Path(f"{state / 'guard.sqlite3'}{side}").unlink(missing_ok=True)
            (state / "guard.sqlite3").write_bytes(b"this is no SQLite database" * 100)
        elif how == "port in use":
            busy.bind(("127.0.0.1", port))
            busy.listen(1)
        elif how == "missing worker cgroup":
            guard.update(worker_kind="cgroup", worker_cgroup=f"/headroom-test-missing-{uuid.uuid4().hex[:8]}")
        else:
            guard["freeze_max_seconds"] = "soon"
        proc = subprocess.Popen(headroom_cmd("guard", "--config", str(config(tmp_path, **guard))), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: counting(outs[0], 0.2), timeout=30, what=f"the grower thawed ({how})")
            if how in ("port in use", "missing worker cgroup", "invalid config"):
                assert proc.wait(timeout=30) in (2, 3), "the start still fails, after thawing"
            else:
                wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 30, what="guard")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        assert read_records(records_path(state)) == []
        if how == "store moved aside":
            assert list(state.glob("guard.sqlite3.corrupt-*")), "the corrupt store was not moved aside"
    finally:
        busy.close()
        stop(grower)


@pytest.mark.kernel
def test_thaw_all_leaves_a_running_guards_records_to_it_unless_forced(tmp_path):
    need_freezer_root()
    port = free_port()
    conf = config(tmp_path, port=port)
    guard = subprocess.Popen(headroom_cmd("guard", "--config", str(conf)), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    grower, outs = start_counter(tmp_path, "grower")
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 30, what="the guard")
        killed_guard(tmp_path / "state", grower.pid)  # a record in the state dir the running guard owns
        refused = run_headroom("thaw", "--all", "--config", str(conf))
        assert refused.returncode == 1 and "a running guard holds" in refused.stderr, refused.stdout + refused.stderr
        assert not counting(outs[0]), "thawed behind a running guard's back"
        forced = run_headroom("thaw", "--all", "--force", "--config", str(conf))
        assert forced.returncode == 0 and counting(outs[0]), forced.stdout + forced.stderr
    finally:
        guard.send_signal(signal.SIGTERM)
        guard.wait(timeout=30)
        stop(grower)


@pytest.mark.kernel
def test_the_units_exec_stop_post_thaws_with_only_the_units_capabilities(tmp_path):
    need_freezer_root()
    need(shutil.which("setpriv") is not None, "setpriv (util-linux)")
    conf = config(tmp_path)
    done = run_headroom("install", "--dest", str(tmp_path / "units"), "--config", str(conf), "--no-reload")
    assert done.returncode == 0, done.stderr
    unit = (tmp_path / "units" / "headroom-guard.service").read_text()
    [line] = [line for line in unit.splitlines() if line.startswith("ExecStopPost=")]
    caps = next(line for line in unit.splitlines() if line.startswith("CapabilityBoundingSet=")).split("=", 1)[1]
    bounding = "-all," + ",".join("+" + cap.removeprefix("CAP_").lower() for cap in caps.split())
    grower, outs = start_counter(tmp_path, "grower")
    try:
        killed_guard(tmp_path / "state", grower.pid)
        argv = ["setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "--", *line.split("=", 1)[1].split()]
        ran = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        assert ran.returncode == 0 and "thawed pid" in ran.stdout, ran.stdout + ran.stderr
        assert counting(outs[0])
    finally:
        stop(grower)


@pytest.mark.kernel
def test_headroom_up_thaws_after_a_guard_that_died_and_starts_it_again(tmp_path):
    need_freezer_root()
    port = free_port()
    conf = config(tmp_path, port=port)
    write_toml(conf, {**_toml(conf), "exporter": {"listen": f"127.0.0.1:{free_port()}", "collectors": ["memory"]}})
    up = subprocess.Popen(headroom_cmd("up", "--config", str(conf)), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    grower, outs = start_counter(tmp_path, "grower")
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 30, what="the guard under up")
        first = _guard_child(up.pid)
        killed_guard(tmp_path / "state", grower.pid)  # as if the running guard had frozen it and then been killed
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: counting(outs[0], 0.2), timeout=20, what="up thawing after the guard died")
        wait_for(lambda: _guard_child(up.pid) not in (None, first), 20, what="a new guard")
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, 30, what="the new guard")
        assert up.poll() is None, "up stopped instead of restarting the guard"
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=30)
        stop(grower)


def _toml(path: Path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())


def _guard_child(parent: int) -> int | None:
    import psutil

    for child in psutil.Process(parent).children():
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[3:4] == ["guard"]:  # python -m headroom guard --config ...
                return child.pid
    return None


def test_thaw_needs_a_pid_or_all(tmp_path):
    done = run_headroom("thaw", "--config", str(config(tmp_path)))
    assert done.returncode == 2 and "either a pid or --all" in done.stderr
    nothing = run_headroom("thaw", "--all", "--config", str(config(tmp_path)))
    assert nothing.returncode == 0 and "nothing recorded as frozen" in nothing.stdout
