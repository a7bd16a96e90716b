"""A worker with no control endpoint, for the cgroup worker tests: holds memory and heartbeats to a file every 50 ms.

`run` is the worker; `start` is its worker_start (like `systemctl start`: the worker joins the given cgroups, detached,
and the command returns); `stop` is its worker_stop (like `systemctl stop`: SIGTERM to the cgroup's processes, then wait).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def run(args: argparse.Namespace) -> None:
    held = bytearray(args.hold_mib * 2**20)
    held[::4096] = b"x" * len(held[::4096])  # touched, so it is charged to the memory cgroup
    beat = Path(args.heartbeat)

    def on_term(signum, frame):
        with open(str(beat) + ".term", "a") as handle:
            handle.write(f"{os.getpid()}\n")
        if not args.ignore_term:
            sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    with open(str(beat) + ".pids", "a") as handle:
        handle.write(f"{os.getpid()}\n")
    n = 0
    while True:
        n += 1
        tmp = beat.with_suffix(".tmp")
        tmp.write_text(f"{n} {time.time()}")
        os.replace(tmp, beat)
        time.sleep(0.05)


def start(args: argparse.Namespace) -> None:
    def join():
        for procs in args.procs:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))

    argv = [sys.executable, __file__, "run", "--heartbeat", args.heartbeat, "--hold-mib", str(args.hold_mib)]
    subprocess.Popen(argv + (["--ignore-term"] if args.ignore_term else []), preexec_fn=join, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def listed(procs_files: list[str]) -> set[int]:
    found: set[int] = set()
    for procs in procs_files:
        try:
            found |= {int(p) for p in Path(procs).read_text().split()}
        except FileNotFoundError:
            continue
    return found


def stop(args: argparse.Namespace) -> None:
    with open(args.heartbeat + ".stop", "a") as handle:
        handle.write("worker_stop ran\n")
    for pid in listed(args.procs):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 10
    while listed(args.procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    sys.exit(1 if listed(args.procs) else 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run", "start", "stop"])
    parser.add_argument("--heartbeat", required=True)
    parser.add_argument("--hold-mib", type=int, default=64)
    parser.add_argument("--procs", action="append", default=[])
    parser.add_argument("--ignore-term", action="store_true")
    args = parser.parse_args()
    {"run": run, "start": start, "stop": stop}[args.command](args)


if __name__ == "__main__":
    main()
