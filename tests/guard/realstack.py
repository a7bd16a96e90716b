"""Real processes for the guard's integration tests: a memory cgroup, an allocator in it, exporter, guard, worker."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.helpers import FREEZE_ENV, REPO, free_port, headroom_cmd, need, need_root_memory_cgroup, stop_process, toml_value, wait_for
from tests.kernel import memory_root, no_swap_v1

MiB = 2**20
TOKEN = "real-stack-token"
ALLOCATOR = """
import sys
blocks = []
for line in sys.stdin:
    want = int(line) * 1048576
    have = sum(len(b) for b in blocks)
    if want < have:
        blocks.clear(); have = 0
    while have < want:
        step = min(16 * 1048576, want - have)
        block = bytearray(step); block[::4096] = b"x" * len(block[::4096]); blocks.append(block); have += step
    print("ok", flush=True)
"""


class MemoryCgroup:
    """A memory cgroup (v1 or v2) with a small limit; only processes this test started are put in it."""

    def __init__(self, limit_bytes: int):
        root, self.version = memory_root()
        self.name = f"/headroom-test-{uuid.uuid4().hex[:8]}"
        self.path = root / self.name.lstrip("/")
        self.path.mkdir()
        (self.path / ("memory.max" if self.version == 2 else "memory.limit_in_bytes")).write_text(str(limit_bytes))
        if self.version == 2 and (self.path / "memory.swap.max").exists():
            (self.path / "memory.swap.max").write_text("0")
        elif self.version == 1:
            no_swap_v1(self.path, limit_bytes)
        self.limit = limit_bytes

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def join(self) -> None:
        """preexec_fn: the child joins before exec, so everything it allocates is charged here."""
        self.add(os.getpid())

    def usage(self) -> int:
        return int((self.path / ("memory.current" if self.version == 2 else "memory.usage_in_bytes")).read_text())

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


@contextlib.contextmanager
def domain_cgroup(limit_bytes: int):
    """A memory cgroup to be a real stack's domain (needs root and the guard); removed afterwards."""
    need_root_memory_cgroup()
    need(importlib.util.find_spec("guard.app") is not None, "the guard (guard/app.py)")
    group = MemoryCgroup(limit_bytes)
    try:
        yield group
    finally:
        group.remove()


class Allocator:
    """A child process that holds as many MiB as it is told, inside a cgroup."""

    def __init__(self, cgroup: MemoryCgroup):
        self.proc = subprocess.Popen([sys.executable, "-c", ALLOCATOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, preexec_fn=cgroup.join)

    def hold(self, mib: int) -> None:
        self.proc.stdin.write(f"{mib}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        stop_process(self.proc)


def start(argv: list[str], log: Path, cgroup: MemoryCgroup | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO), FREEZE_ENV: "true"},  # the domain is a test cgroup
                            preexec_fn=cgroup.join if cgroup else None)


def write_config(path: Path, state_dir: Path, exporter_port: int, guard_port: int, worker_port: int, cgroup: str, guard: dict,
                 worker: dict | None = None) -> Path:
    lines = [f'state_dir = "{state_dir}"', "log_level = \"info\"", "[exporter]", f'listen = "127.0.0.1:{exporter_port}"',
             f"cgroups = {json.dumps([cgroup])}", 'collectors = ["memory", "pressure", "cgroup", "oom"]', "[guard]",
             f'listen = "127.0.0.1:{guard_port}"', f'token = "{TOKEN}"', f'exporter_url = "http://127.0.0.1:{exporter_port}/metrics"',
             f'memory_domain = "{cgroup}"', f'worker_url = "http://127.0.0.1:{worker_port}"']
    tables = []
    for key, value in guard.items():
        if isinstance(value, dict):
            tables.append(f"[guard.{key}]")
            tables += [f"{k} = {toml_value(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    if worker is not None:
        tables += ["[worker]", f'listen = "127.0.0.1:{worker_port}"', f'token = "{TOKEN}"']
        tables += [f"{k} = {toml_value(v)}" for k, v in worker.items()]
    path.write_text("\n".join(lines + tables) + "\n")
    return path


def stack_logs(tmp: Path) -> str:
    """The tail of every process log of a stack, for a failure message."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp.glob("*.log")))


def wait_guard_ready(procs: dict[str, subprocess.Popen], guard: httpx.Client, tmp: Path, timeout: float) -> None:
    """Until the guard's /readyz says 200 (fresh signals); fails at once, with the logs, if a stack process exits."""

    def ready() -> bool:
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{stack_logs(tmp)}"
        return guard.get("/readyz").status_code == 200

    wait_for(ready, timeout, what="the guard to be ready (fresh signals)")


class Stack:
    """exporter + guard + contract worker over HTTP on free loopback ports."""

    def __init__(self, tmp: Path, cgroup: MemoryCgroup, guard: dict, worker_hold_mib: int = 0, worker_in_cgroup: bool = False,
                 real_worker: dict | None = None, worker_args: tuple[str, ...] = (), guard_prefix: tuple[str, ...] = ()):
        self.tmp, self.cgroup, self.guard_prefix = tmp, cgroup, guard_prefix  # guard_prefix: e.g. setpriv ... --
        self.ports = {name: free_port() for name in ("exporter", "guard", "worker")}
        self.config = write_config(tmp / "headroom.toml", tmp / "state", self.ports["exporter"], self.ports["guard"],
                                   self.ports["worker"], cgroup.name, guard, real_worker)
        self.procs: dict[str, subprocess.Popen] = {}
        worker_argv = [sys.executable, str(Path(__file__).parent / "contract_worker.py"), "--port", str(self.ports["worker"]),
                       "--token", TOKEN, "--hold-bytes", str(worker_hold_mib * MiB), *worker_args]
        if real_worker is not None:  # the project's worker (worker/), not the contract double
            worker_argv = headroom_cmd("worker", "--config", str(self.config))
        self.procs["worker"] = start(worker_argv, tmp / "worker.log", cgroup if worker_in_cgroup else None)
        self.procs["exporter"] = start(headroom_cmd("exporter", "--config", str(self.config)), tmp / "exporter.log")
        self.start_guard()
        self.guard = httpx.Client(base_url=f"http://127.0.0.1:{self.ports['guard']}", timeout=10,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
        self.worker = httpx.Client(base_url=f"http://127.0.0.1:{self.ports['worker']}", timeout=5)
        try:
            wait_for(lambda: self.worker.get("/control/state").status_code == 200, 15, what="the contract worker")
            self.wait_ready()
        except BaseException:  # a stack that never came up must not leave its processes behind
            self.stop()
            raise

    def wait_ready(self) -> None:
        wait_guard_ready(self.procs, self.guard, self.tmp, 20)

    def start_guard(self) -> None:
        argv = [*self.guard_prefix, *headroom_cmd("guard", "--config", str(self.config))]
        self.procs["guard"] = start(argv, self.tmp / "guard.log")

    def kill_guard(self) -> None:
        self.procs["guard"].send_signal(signal.SIGKILL)
        self.procs["guard"].wait()

    def headroom(self) -> dict:
        return self.guard.get("/v1/headroom").json()

    def worker_puts(self) -> list[dict]:
        return [c["body"] for c in self.worker.get("/_test/calls").json()["calls"] if c["method"] == "PUT" and c["path"] == "/control/state"]

    def logs(self) -> str:
        return stack_logs(self.tmp)

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)
        self.guard.close()
        self.worker.close()
