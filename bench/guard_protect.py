"""Protection benchmark: a worker and an unleased fast grower in one memory cgroup; no guard vs earlyoom vs headroom.

Run (root, a memory cgroup hierarchy, earlyoom installed):
  .venv/bin/python bench/guard_protect.py [--rates 100,300,1000,2000,3000] [--reps 3] [--modes none,earlyoom,headroom]
Each run: a 2 GiB cgroup holds the contract worker (900 MiB, given back 1.2 s after a free) and then a grower that
allocates 1300 MiB at the rate (it fits only once the worker is freed); in the headroom rows two idle bystanders
(64 MiB each, oom_score_adj 1000) share the cgroup, and "frozen bystanders" counts freezes of them or the worker. The kernel judges: OOM kills from the
cgroup's own counter; reaction from the kernel's own threshold notification (eventfd) to the freeze (headroom) or the
kill signal (earlyoom). Prints a markdown table (docs/guard.md carries one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from protect_peers import earlyoom_run, one_run, run_grower  # noqa: E402
from tests.guard.adversary import end, start_actor  # noqa: E402
from tests.guard.protectrun import Crossing, freeze_times, oom_kills, reactions, start_grower  # noqa: E402
from tests.guard.realstack import MiB, MemoryCgroup, Stack  # noqa: E402
from tests.guard.swapfile import allow_swap  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

LIMIT_MIB, WORKER_MIB, GROWER_MIB = 2048, 900, 1300
BYSTANDERS, BYSTANDER_MIB = 2, 64  # idle processes beside them (headroom rows): large oom_score_adj, no growth
FREEZE = 0.05
# Each run is its own incident: the runs share one stack, and within the default 600 s backoff window the n-th
# free/wake cycle would wait 2 * 2^(n-1) s (by design; tests/guard/test_swap_real.py measures that backoff).
GUARD = {"tick_seconds": 0.25, "recovery_hold_seconds": 2.0, "freeze_max_seconds": 20,
         "worker": {"wake_backoff_window_seconds": 0},
         "ram": {"enter": {"warn": "25%", "throttle": "20%", "pause": "15%", "free": "10%", "freeze": "5%"},
                 "band": "5%", "grace_seconds": 1.0, "hold_seconds": 30}}


def pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def calibrate(rates: list[float]) -> dict[float, float]:
    """What the grower really reaches at each asked rate here, alone in a roomy cgroup."""
    reached = {}
    group = MemoryCgroup(4 * 2**30)
    try:
        for rate in rates:
            _, lines = run_grower(group, GROWER_MIB, rate)
            reached[rate] = next((float(line.split('"rate_mbs": ')[1].rstrip("}")) for line in lines if '"done"' in line), 0.0)
    finally:
        group.remove()
    return reached


class HeadroomRig:
    """One real stack (exporter, guard, contract worker) reused across runs; each run reads the events it caused."""

    back_states = ("running",)  # what counts as the worker back

    def __init__(self, tmp: Path, swap_mib: int = 0):
        self.cgroup = MemoryCgroup(LIMIT_MIB * MiB)
        if swap_mib:
            allow_swap(self.cgroup.path, self.cgroup.version, self.cgroup.limit, swap_mib * MiB)
        self.stack = Stack(tmp, self.cgroup, GUARD, worker_hold_mib=WORKER_MIB, worker_in_cgroup=True,
                           worker_args=("--free-latency", "1.2", "--transition-seconds", "0.5"))
        self.tmp = tmp
        # what a browser renderer or a BestEffort pod looks like to the kernel: idle, oom_score_adj 1000
        self.bystanders = [start_actor(tmp, f"bystander-{i}", join=self.cgroup.join, hold_mib=BYSTANDER_MIB, adj=1000)[0]
                           for i in range(BYSTANDERS)]

    def events(self, after: int) -> list[dict]:
        return self.stack.guard.get("/v1/events", params={"limit": 1000, "after": after}).json()["events"]

    def settle(self) -> int:
        wait_for(lambda: self.stack.worker.get("/control/state").json()["state"] == "running", 60, what="worker running")
        wait_for(lambda: self.cgroup.usage() >= WORKER_MIB * MiB, 60, what="the worker holding its memory")
        time.sleep(1.0)
        last = self.events(0)
        return last[-1]["id"] if last else 0

    def run(self, rate: float, grower_mib: int = GROWER_MIB) -> dict:
        after, before = self.settle(), oom_kills(self.cgroup)
        crossing = Crossing(self.cgroup, int(self.cgroup.limit * (1 - FREEZE)))
        grower = start_grower(self.cgroup, grower_mib, rate, self.tmp / "grower.log")
        rc = grower.wait(timeout=120)
        exited = time.time()
        worker_alive = self.stack.procs["worker"].poll() is None
        running = lambda: self.stack.worker.get("/control/state").json()["state"] in self.back_states and time.time()  # noqa: E731
        back = wait_for(running, 60, 0.05, what="the worker running again") - exited
        crossing.close()
        downtime = None
        try:
            found = wait_for(lambda: [e for e in self.events(after) if "downtime_seconds" in e["data"]], 20, what="downtime")
            downtime = found[-1]["data"]["downtime_seconds"]
        except AssertionError:
            pass
        seen = self.events(after)
        _, frozen = freeze_times(seen)
        kernel, _ = reactions(crossing, seen)
        died = [name for name, dead in (("grower", rc < 0), ("worker", not worker_alive)) if dead]
        others = {p.pid for p in self.bystanders} | {self.stack.procs["worker"].pid}
        hit = {e["data"].get("pid") for e in seen if e["kind"] == "freeze"} & others
        freed = sum(1 for e in seen if e["kind"] == "action" and e["data"].get("action") == "set_freed")
        return {"oom_kills": oom_kills(self.cgroup) - before, "died": died, "grower_rc": rc, "reaction": kernel,
                "frozen": frozen, "downtime": downtime, "back": back, "bystanders_frozen": len(hit), "freed": freed}

    def close(self) -> None:
        for proc in self.bystanders:
            end(proc)
        self.stack.stop()
        self.cgroup.remove()


def peer_runs(mode: str, rate: float, reps: int, tmp: Path) -> list[dict]:
    results = []
    for _ in range(reps):
        cgroup = MemoryCgroup(LIMIT_MIB * MiB)
        try:
            if mode == "earlyoom":
                results.append(earlyoom_run(cgroup, WORKER_MIB, GROWER_MIB, rate, 10, tmp))
            else:
                results.append(one_run(cgroup, WORKER_MIB, GROWER_MIB, rate, None))
        finally:
            cgroup.remove()
    return results


def row(mode: str, rate: float, reached: float, runs: list[dict]) -> str:
    kills = sum(r["oom_kills"] for r in runs)
    died = {name: sum(name in r["died"] for r in runs) for name in ("grower", "worker")}
    who = ", ".join(f"{name} {n}/{len(runs)}" for name, n in died.items() if n) or "nobody"
    react = [x for r in runs for x in r["reaction"]]
    ms = lambda v: f"{1000 * v:.0f}" if v is not None else "-"  # noqa: E731
    frozen = [r["frozen"] for r in runs if r["frozen"]]
    down = [r["downtime"] for r in runs if r["downtime"] is not None]
    frozen_s = f"{statistics.mean(frozen):.2f}" if frozen else "-"
    down_s = f"{statistics.mean(down):.1f} (max {max(down):.1f})" if down else "-"
    back = [r["back"] for r in runs if r.get("back") is not None]
    back_s = f"{max(back):.1f}" if back else "-"
    hit = [r["bystanders_frozen"] for r in runs if "bystanders_frozen" in r]
    hit_s = f"{sum(hit)} of {BYSTANDERS * len(hit)} + worker" if hit else "-"
    return (f"| {mode} | {rate:g} ({reached:.0f}) | {len(runs)} | {kills} | {who} | {hit_s} | {ms(pct(react, 0.5))} / "
            f"{ms(pct(react, 0.99))} | {frozen_s} | {down_s} | {back_s} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="100,300,1000,2000,3000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", default="none,earlyoom,headroom")
    parser.add_argument("--workdir", help="keep the guard's state and logs here (default: a temporary directory)")
    parser.add_argument("--swap", action="store_true", help="the swap table instead (bench/protect_swap.py)")
    args = parser.parse_args()
    if args.swap:
        from protect_swap import swap_table

        print("\n".join(swap_table(args.modes.split(","), args.reps, args.workdir)))
        return
    rates = [float(r) for r in args.rates.split(",")]
    modes = args.modes.split(",")
    reached = calibrate(rates)
    lines = ["| guard | rate MB/s asked (reached alone) | runs | OOM kills | who died | frozen bystanders (target 0) | "
             "reaction p50 / p99 ms | frozen s | worker downtime s | worker back after the grower exited, max s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="headroom-protect-") as name:
        tmp = Path(args.workdir or name)
        tmp.mkdir(parents=True, exist_ok=True)
        for mode in modes:
            rig = HeadroomRig(tmp) if mode == "headroom" else None
            try:
                for rate in rates:
                    runs = [rig.run(rate) for _ in range(args.reps)] if rig else peer_runs(mode, rate, args.reps, tmp)
                    lines.append(row(mode, rate, reached[rate], runs))
                    print(lines[-1], flush=True)
            finally:
                if rig:
                    rig.close()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
