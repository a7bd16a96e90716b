"""The command's memory cgroup on a cgroupfs root the test lays out (v2 and v1), and without any controller."""

from __future__ import annotations

from pathlib import Path

from headroom.client.isolate import create

MiB = 2**20


def v2_root(root: Path) -> Path:
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def v1_root(root: Path) -> Path:
    (root / "memory").mkdir(parents=True)
    (root / "memory" / "memory.usage_in_bytes").write_text("0\n")
    return root


def test_v2_directory_gets_memory_high_max_and_no_swap(tmp_path):
    root = v2_root(tmp_path / "cgroup")
    isolation = create("olmo test", 100 * MiB, 110 * MiB, parent="headroom.slice", prefer_systemd=False, cgroupfs=root)
    assert isolation.kind == "cgroup-v2" and isolation.directory.parent == root / "headroom.slice"
    assert isolation.cgroup.startswith("/headroom.slice/headroom-run-olmo-test-")
    assert (isolation.directory / "memory.high").read_text() == str(100 * MiB)
    assert (isolation.directory / "memory.max").read_text() == str(110 * MiB)
    assert (isolation.directory / "memory.swap.max").read_text() == "0"
    assert isolation.limits == {"memory.high": 100 * MiB, "memory.max": 110 * MiB}
    assert (root / "cgroup.subtree_control").read_text() == "+memory"


def test_v1_directory_has_a_limit_a_soft_limit_and_no_swap_never_memory_high(tmp_path):
    root = v1_root(tmp_path / "cgroup")
    isolation = create("job", 100 * MiB, 110 * MiB, parent="headroom.slice", prefer_systemd=False, cgroupfs=root)
    assert isolation.kind == "cgroup-v1" and isolation.directory.parent == root / "memory" / "headroom.slice"
    assert isolation.limits == {"memory.limit_in_bytes": 110 * MiB, "memory.soft_limit_in_bytes": 100 * MiB}
    assert not (isolation.directory / "memory.high").exists()
    # memory+swap at the same bound: with swap on, a test that outgrows its lease is OOM-killed, it does not thrash
    assert (isolation.directory / "memory.memsw.limit_in_bytes").read_text() == str(110 * MiB)
    (isolation.directory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert isolation.oom_kills() == 2


def test_without_a_memory_controller_it_says_why(tmp_path):
    isolation = create("job", 100 * MiB, 110 * MiB, prefer_systemd=False, cgroupfs=tmp_path)
    assert isolation.kind == "none" and "no memory cgroup controller" in isolation.reason
