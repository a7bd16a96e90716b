"""`headroom run` as a user types it: no --wait still makes room and runs; cgroup v1 shows the limits really set."""

from __future__ import annotations

import sys
import time

import pytest

from exporter.cgroupfs import detect_memory_root
from headroom.client.isolate import CGROUP_ROOT
from headroom.sizes import format_size
from tests.guard.realstack import MiB
from tests.helpers import need, wait_for
from tests.run.conftest import LIMIT, headroom

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]
PY = sys.executable
SIXTY_PERCENT = str(int(LIMIT * 0.6))
OWN_LIMITS = (  # the command prints its own cgroup's limit files, as the kernel holds them
    "import pathlib, sys; lines = open('/proc/self/cgroup').read().splitlines(); v1 = sys.argv[1] == '1'; "
    "path = [l for l in lines if (':memory:' in l if v1 else l.startswith('0::'))][0].split(':', 2)[2]; "
    "d = pathlib.Path('/sys/fs/cgroup/memory' if v1 else '/sys/fs/cgroup') / path.lstrip('/'); "
    "names = ('memory.limit_in_bytes', 'memory.soft_limit_in_bytes') if v1 else ('memory.max', 'memory.high'); "
    "print(*[f'{n}={(d / n).read_text().strip()}' for n in names])"
)


def test_without_wait_the_worker_is_freed_and_the_command_runs(stack_factory, domain, tmp_path):
    stack = stack_factory(worker_hold_mib=500, worker_in_cgroup=True)
    wait_for(lambda: domain.usage() > 450 * MiB, 10, what="the worker to hold its memory in the domain")
    marker = tmp_path / "ran"
    proc = headroom(stack, "run", "--ram", SIXTY_PERCENT, "--free-worker", "--", PY, "-c", f"open({str(marker)!r}, 'w')")
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err + stack.logs()
    assert marker.exists(), "the command ran"
    assert "granted" in err and "not granted" not in err, err
    states = [body["state"] for body in stack.worker_puts()]
    assert states[:1] == ["freed"], states


def test_wait_zero_still_gives_up_at_once(stack_factory, domain, tmp_path):
    stack = stack_factory(worker_hold_mib=500, worker_in_cgroup=True)
    wait_for(lambda: domain.usage() > 450 * MiB, 10, what="the worker to hold its memory in the domain")
    start = time.monotonic()
    proc = headroom(stack, "run", "--ram", SIXTY_PERCENT, "--free-worker", "--wait", "0", "--", PY, "-c", "pass")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75 and "not granted" in err, err
    assert time.monotonic() - start < 20


def test_run_prints_the_limits_the_kernel_holds_by_their_names(stack_factory):
    """cgroup v1 has no memory.high: there it says memory.limit_in_bytes and memory.soft_limit_in_bytes."""
    found = detect_memory_root(CGROUP_ROOT)
    need(found is not None, "a memory cgroup controller")
    version = found[1]
    stack = stack_factory()
    proc = headroom(stack, "run", "--ram", str(150 * MiB + 1000), "--", PY, "-c", OWN_LIMITS, str(version))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    said = next(line for line in err.splitlines() if "running in cgroup" in line)
    held = dict(item.split("=") for item in out.split())
    if version == 1:
        assert "memory.high" not in said, said
    for name, value in held.items():
        assert int(value) % 4096 == 0, "the kernel holds whole pages"
        assert f"{name} {format_size(int(value))}" in said, (said, out)


def test_ctrl_c_while_queued_withdraws_the_request(stack_factory, tmp_path):
    import signal

    stack = stack_factory()
    first = headroom(stack, "run", "--ram", SIXTY_PERCENT, "--holder", "first", "--", PY, "-c", "import time; time.sleep(20)")
    wait_for(lambda: len(stack.guard.get("/v1/leases").json()["leases"]) == 1, 20, what="the first lease")
    second = headroom(stack, "run", "--ram", SIXTY_PERCENT, "--holder", "second", "--", PY, "-c", "print('ran')")
    waiting = lambda: [l for l in stack.guard.get("/v1/leases").json()["leases"] if l["holder"] == "second" and l["status"] == "waiting"]  # noqa: E731
    wait_for(waiting, 20, what="the second request to be queued (no --wait: it queues by default)")
    second.send_signal(signal.SIGINT)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 130 and "ran" not in out and "cancelled while waiting" in err, err
    assert not waiting(), "the queued request was withdrawn"
    first.send_signal(signal.SIGTERM)
    first.wait(30)
