"""The cgroup freezer primitives against the real kernel: a process that counts stops counting while frozen."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from guard.protect import cgroupctl
from tests.guard.freezing import roots
from tests.helpers import need, wait_for

CGROUPFS = Path("/sys/fs/cgroup")
COUNTER = "import sys, time\nn = 0\nwhile True:\n    n += 1\n    open(sys.argv[1], 'w').write(str(n))\n    time.sleep(0.01)\n"


@contextlib.contextmanager
def counting_process(version: int, root: Path, tmp_path: Path):
    name = f"headroom-test-freeze-{uuid.uuid4().hex[:8]}"
    directory = root / name
    directory.mkdir()
    out = tmp_path / f"count-{version}"
    procs = str(directory / "cgroup.procs")

    def join():
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))

    proc = subprocess.Popen([sys.executable, "-c", COUNTER, str(out)], preexec_fn=join)
    try:
        wait_for(lambda: out.exists() and out.read_text(), timeout=10)
        yield proc, "/" + name, out
    finally:
        with contextlib.suppress(OSError):
            cgroupctl.thaw(cgroupctl.FreezerCgroup("/" + name, directory, version))
        proc.kill()
        proc.wait()
        wait_for(lambda: not (directory / "cgroup.procs").read_text().strip(), timeout=10)
        directory.rmdir()


def read_count(path: Path) -> int:
    for _ in range(50):
        text = path.read_text()
        if text:
            return int(text)
        time.sleep(0.002)  # caught between truncate and write
    raise AssertionError("counter file stayed empty")


@pytest.mark.kernel
def test_freeze_stops_the_process_and_thaw_resumes_it(tmp_path):
    if os.geteuid() != 0 or not roots():
        need(False, "root and a cgroup freezer (v2 cgroup.freeze or the v1 freezer)")
    for version, root in roots():
        with counting_process(version, root, tmp_path) as (proc, path, out):
            found = cgroupctl.freezer_of_pid(proc.pid, cgroupfs=CGROUPFS)
            assert found is not None and found.path == path
            cg = cgroupctl.freezer_of(CGROUPFS, path, version)
            assert cgroupctl.pids(cg) == [proc.pid]
            assert cgroupctl.freeze(cg), f"v{version}: the kernel never reported the cgroup frozen"
            frozen_at = read_count(out)
            time.sleep(0.3)
            assert read_count(out) == frozen_at, f"v{version}: the process kept counting while frozen"
            cgroupctl.thaw(cg)
            assert not cgroupctl.is_frozen(cg)
            wait_for(lambda: read_count(out) > frozen_at, timeout=5)
