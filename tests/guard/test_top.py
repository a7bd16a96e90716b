"""The status page's top list reads the /proc root it is given: a built tree gives exactly its processes, by RSS."""

from __future__ import annotations

import os
from pathlib import Path

from guard.protect.top import Top, parse_statm_rss
from guard.common.types import GpuObs, Snapshot

PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_tree(root: Path, procs: dict[int, tuple[str, int, str]]) -> Path:
    """A /proc with one directory per pid: comm, statm (RSS in pages) and a v2 cgroup line."""
    for pid, (comm, pages, cgroup) in procs.items():
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
        (d / "statm").write_text(f"{pages * 2} {pages} 10 1 0 {pages} 0\n")
        (d / "cgroup").write_text(f"0::{cgroup}\n")
    (root / "self").mkdir()  # not a pid: ignored
    return root


def test_top_lists_the_processes_of_the_given_proc_root_largest_first(tmp_path):
    root = proc_tree(tmp_path / "proc", {10: ("small", 5, "/user.slice"), 20: ("big", 500, "/system.slice/app.service"),
                                         30: ("mid", 50, "/")})
    snapshot = Snapshot(taken_at=1.0, ok=True, gpus=(GpuObs("0", None, 8e9, 4e9, {20: 3e9}),))
    body = Top(root).view(snapshot, limit=2)
    assert [(p["pid"], p["comm"], p["rss_bytes"]) for p in body["processes"]] == [(20, "big", 500 * PAGE), (30, "mid", 50 * PAGE)]
    assert body["processes"][0]["unit"] == "app.service"
    assert body["gpu_processes"] == [{"gpu": "0", "pid": 20, "comm": "big", "gpu_bytes": 3e9,
                                      "cgroup": "/system.slice/app.service", "unit": "app.service"}]


def test_a_process_gone_while_reading_is_left_out(tmp_path):
    root = proc_tree(tmp_path / "proc", {10: ("a", 5, "/")})
    (root / "11").mkdir()  # exited between the listing and the read: no statm
    assert [p["pid"] for p in Top(root).view(Snapshot(taken_at=1.0, ok=True))["processes"]] == [10]
    assert parse_statm_rss("100 25 3 1 0 20 0", 4096) == 25 * 4096
