"""The kernel's backstop: the worker's protective oom_score_adj (setting, `headroom worker`, unit) and the guard's unit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from headroom.config import load_settings
from tests.helpers import REPO, need
from worker.server import set_oom_score_adj
from worker.settings import WorkerSettings

UNITS = REPO / "headroom" / "units"


def test_the_worker_default_protects_it_and_the_unit_agrees():
    default = WorkerSettings().oom_score_adj
    assert default is not None and -900 < default < 0  # below a newcomer's 0, above headroom's own -900
    assert f"OOMScoreAdjust={default}" in (UNITS / "headroom-worker.service").read_text().splitlines()


def test_set_oom_score_adj_writes_the_kernel_file_of_a_real_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert set_oom_score_adj(300, f"/proc/{child.pid}")  # raising needs no privilege
        assert Path(f"/proc/{child.pid}/oom_score_adj").read_text().strip() == "300"
    finally:
        child.kill()
        child.wait()


def test_a_refused_oom_score_adj_is_a_warning_not_a_failure(tmp_path, caplog):
    missing = tmp_path / "no-such-proc"
    assert not set_oom_score_adj(-500, str(missing))
    assert "cannot set oom_score_adj to -500" in caplog.text
    assert not set_oom_score_adj(None, str(missing))


def test_a_bad_oom_score_adj_names_the_key(tmp_path):
    config = tmp_path / "headroom.toml"
    config.write_text("[worker]\noom_score_adj = -2000\n")
    with pytest.raises(Exception) as err:
        load_settings(config)
    assert "oom_score_adj" in str(err.value)


def test_the_guard_unit_keeps_the_guard_fed_under_pressure():
    lines = (UNITS / "headroom-guard.service").read_text().splitlines()
    assert {"Nice=-10", "CPUWeight=1000", "LimitMEMLOCK=infinity"} <= set(lines)


def test_the_guard_locks_its_memory_on_fault_at_almost_no_rss_cost():
    code = ("from guard.protect.lockmem import lock_memory; locked, grown, note = lock_memory(); "
            "lck = [l for l in open('/proc/self/status') if l.startswith('VmLck')][0].split()[1]; print(locked, grown, lck, note)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    locked, grown, vm_lck_kib, *_ = out.stdout.split()
    need(locked == "True", f"mlockall permitted (root or LimitMEMLOCK): {out.stdout.strip()}")
    assert int(vm_lck_kib) > 0  # the kernel counts the locked mappings
    assert int(grown) < 8 * 2**20, "on-fault locking must not pull untouched pages (thread stacks) into RSS"
