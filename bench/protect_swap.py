"""The protection benchmark's swap columns: the same domain (2 GiB, the contract worker's 900 MiB) with a test-made swap
file, a burst that fits in RAM + swap and one that does not, without headroom, with earlyoom and with headroom.

Run (root): .venv/bin/python bench/guard_protect.py --swap [--reps 2] [--modes none,earlyoom,headroom]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from guard_protect import LIMIT_MIB, WORKER_MIB, HeadroomRig
from protect_peers import earlyoom_run, one_run
from tests.guard.realstack import MiB, MemoryCgroup
from tests.guard.swapfile import GiB, allow_swap, swap_file
from tests.helpers import wait_for

RATE = 1000  # MB/s asked: a model load from page cache
# (name, grower MiB, swap the domain may use, MiB): 900 + 1300 needs ~250 MiB of its 1536; 900 + 2100 exceeds 2048 + 1024
# less the reserve, while the grower alone fits once the worker is freed.
SCENARIOS = (("fits in RAM + swap", 1300, 1536), ("does not fit", 2100, 1024))


class SwapRig(HeadroomRig):
    """The headroom rig over a domain that may swap: the worker's memory counts where it is, in RAM or in swap."""

    # Throttled serves too: on cgroup v1 the psi rule reads the host's PSI, which the swapping itself (and the peer
    # rows' OOM kills before) keeps up for its 30 s hold; "running" alone measured that hold (18-25 s), not the return.
    back_states = ("running", "throttled")

    def settle(self) -> int:
        memsw = self.cgroup.path / "memory.memsw.usage_in_bytes"
        held = lambda: int(memsw.read_text()) if memsw.exists() else self.cgroup.usage()  # noqa: E731
        wait_for(lambda: self.stack.worker.get("/control/state").json()["state"] == "running", 60, what="worker running")
        wait_for(lambda: held() >= WORKER_MIB * MiB, 60, what="the worker holding its memory")
        time.sleep(1.0)
        last = self.events(0)
        return last[-1]["id"] if last else 0


def peer_run(mode: str, grower_mib: int, swap_mib: int, tmp: Path) -> dict:
    cgroup = MemoryCgroup(LIMIT_MIB * MiB)
    try:
        allow_swap(cgroup.path, cgroup.version, cgroup.limit, swap_mib * MiB)
        if mode == "earlyoom":  # its defaults, -m 10 -s 10: it acts when RAM and swap are both at or below 10 % free
            return earlyoom_run(cgroup, WORKER_MIB, grower_mib, RATE, 10, tmp, swap_percent=10)
        return one_run(cgroup, WORKER_MIB, grower_mib, RATE, None)
    finally:
        cgroup.remove()


def swap_row(mode: str, scenario: str, runs: list[dict]) -> str:
    n = len(runs)
    died = {name: sum(name in r["died"] for r in runs) for name in ("grower", "worker")}
    who = ", ".join(f"{name} {k}/{n}" for name, k in died.items() if k) or "nobody"
    frozen = [r.get("frozen") or 0.0 for r in runs]
    freed = [r.get("freed") for r in runs if r.get("freed") is not None]
    back = [r["back"] for r in runs if r.get("back") is not None]
    return (f"| {mode} | {scenario} | {n} | {sum(r['oom_kills'] for r in runs)} | {who} | "
            f"{f'{sum(1 for f in freed if f)}/{n}' if freed else '-'} | "
            f"{f'{statistics.mean(frozen):.2f} (max {max(frozen):.2f})' if any(frozen) else '-'} | "
            f"{f'{max(back):.1f}' if back else '-'} |")


def swap_table(modes: list[str], reps: int, workdir: str | None = None) -> list[str]:
    lines = ["| guard | burst (1000 MB/s asked) | runs | OOM kills | who died | worker freed | frozen s, mean (max) | "
             "worker back after the grower exited, max s |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="headroom-swap-", dir="/var/tmp") as name, \
            swap_file(Path(name), 3 * GiB):
        tmp = Path(workdir or name)
        for mode in modes:
            for scenario, grower_mib, swap_mib in SCENARIOS:
                if mode == "headroom":
                    (tmp / f"rig-{grower_mib}").mkdir(parents=True, exist_ok=True)
                    rig = SwapRig(tmp / f"rig-{grower_mib}", swap_mib)
                    try:
                        runs = [rig.run(RATE, grower_mib) for _ in range(reps)]
                    finally:
                        rig.close()
                else:
                    runs = [peer_run(mode, grower_mib, swap_mib, tmp) for _ in range(reps)]
                lines.append(swap_row(mode, scenario, runs))
                print(lines[-1], flush=True)
    return lines
