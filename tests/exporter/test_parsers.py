"""Parsers, table-driven on real kernel text: meminfo, vmstat, PSI, cgroup v1/v2 files, kmsg OOM records, unit paths."""

from __future__ import annotations

import pytest

from exporter.cgroupfs import parse_flat_keyed, parse_limit
from exporter.kmsg import OomAssembler, parse_kmsg_records, parse_xid
from exporter.meminfo import parse_meminfo, parse_vmstat
from exporter.pressure import parse_pressure
from exporter.units import default_unit_path, parse_proc_cgroup, unit_of_cgroup

MEMINFO_6_1 = """MemTotal:       24684096 kB
MemFree:        21178476 kB
MemAvailable:   23822848 kB
Buffers:           72004 kB
Cached:          2690636 kB
SwapCached:            0 kB
SwapTotal:             0 kB
SwapFree:              0 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""
MEMINFO_OLD = "MemTotal:        2048000 kB\nMemFree:          100000 kB\nCached:           50000 kB\nSwapTotal:       1024000 kB\nSwapFree:         512000 kB\n"


@pytest.mark.parametrize(
    "text, total, available, swap_total, swap_free",
    [
        (MEMINFO_6_1, 24684096 * 1024, 23822848 * 1024, 0, 0),
        (MEMINFO_OLD, 2048000 * 1024, None, 1024000 * 1024, 512000 * 1024),  # kernel < 3.14: no MemAvailable
    ],
)
def test_parse_meminfo(text, total, available, swap_total, swap_free):
    info = parse_meminfo(text)
    assert (info.total_bytes, info.available_bytes, info.swap_total_bytes, info.swap_free_bytes) == (total, available, swap_total, swap_free)


def test_parse_meminfo_rejects_text_without_memtotal():
    with pytest.raises(ValueError, match="MemTotal"):
        parse_meminfo("MemFree: 1 kB\n")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("pswpin 10\npswpout 20\npgmajfault 30\noom_kill 2\n", (10, 20, 30, 2)),
        ("pgmajfault 7\n", (None, None, 7, None)),  # no swap accounting, kernel < 4.13
        ("nr_free_pages 5\nbogus line here\noom_kill 0\n", (None, None, None, 0)),
    ],
)
def test_parse_vmstat(text, expected):
    vm = parse_vmstat(text)
    assert (vm.swap_in_pages, vm.swap_out_pages, vm.major_faults, vm.oom_kills) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=1500000\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=400\n",
            [("some", 0.015, 0.0025, 0.0, 1.5), ("full", 0.005, 0.0, 0.0, 0.0004)],
        ),
        ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", [("some", 0.0, 0.0, 0.0, 0.0)]),  # cpu.pressure-style: no full line
    ],
)
def test_parse_pressure(text, expected):
    got = [(p.kind, p.avg10_ratio, p.avg60_ratio, p.avg300_ratio, p.stalled_seconds_total) for p in parse_pressure(text)]
    assert got == expected


def test_parse_pressure_names_the_bad_line():
    with pytest.raises(ValueError, match="malformed pressure line"):
        parse_pressure("some avg10=x avg60=0 avg300=0 total=0\n")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max\n", None),  # v2 unlimited
        ("9223372036854771712\n", None),  # v1 unlimited (PAGE_COUNTER_MAX * page size)
        ("209715200\n", 209715200),
        ("0\n", 0),
    ],
)
def test_parse_limit(text, expected):
    assert parse_limit(text) == expected


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", "oom_kill", 1),  # v1 memory.oom_control
        ("low 0\nhigh 3\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n", "oom_kill", 2),  # v2 memory.events
        ("cache 100\nrss 200\ntotal_inactive_file 4096\n", "total_inactive_file", 4096),  # v1 memory.stat
        ("anon 10\nfile 20\ninactive_file 30\n", "inactive_file", 30),  # v2 memory.stat
    ],
)
def test_parse_flat_keyed(text, key, expected):
    assert parse_flat_keyed(text)[key] == expected


MEMCG_KILL = (
    "6,2001,1000000,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/headroom-test,task_memcg=/headroom-test,task=python3,pid=2014,uid=0\n"
    "3,2002,1000100,-;Memory cgroup out of memory: Killed process 2014 (python3) total-vm:213956kB, "
    "anon-rss:204160kB, file-rss:6316kB, shmem-rss:0kB, UID:0 pgtables:460kB oom_score_adj:0\n"
)
GLOBAL_KILL = (
    "6,3001,2000000,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
    "task_memcg=/system.slice/model-test.service,task=my, odd (name),pid=77,uid=1000\n"
    "3,3002,2000100,c;Out of memory: Killed process 77 (my, odd (name)) total-vm:1000kB, anon-rss:800kB, "
    "file-rss:100kB, shmem-rss:20kB, UID:1000 pgtables:8kB oom_score_adj:500\n"
)


@pytest.mark.parametrize(
    "log, pid, comm, cgroup, unit, global_oom, rss, score",
    [
        (MEMCG_KILL, 2014, "python3", "/headroom-test", "", False, (204160 + 6316) * 1024, 0),
        (GLOBAL_KILL, 77, "my, odd (name)", "/system.slice/model-test.service", "model-test.service", True, 920 * 1024, 500),
    ],
)
def test_oom_victim_from_kmsg(log, pid, comm, cgroup, unit, global_oom, rss, score):
    assembler = OomAssembler()
    victims = [v for r in parse_kmsg_records(log) if (v := assembler.feed(r, boot_time=1000.0))]
    assert len(victims) == 1
    v = victims[0]
    assert (v.pid, v.comm, v.cgroup, v.unit, v.global_oom, v.rss_bytes, v.oom_score_adj) == (pid, comm, cgroup, unit, global_oom, rss, score)
    assert v.time_seconds == pytest.approx(1000.0 + parse_kmsg_records(log)[1].timestamp_us / 1e6)


def test_kmsg_records_keep_continuation_lines_and_unescape():
    records = parse_kmsg_records("4,5,6,-;NVRM: Xid (PCI:0000:01:00): 13, pid=9, Graphics\\x20Exception\n SUBSYSTEM=pci\n DEVICE=+pci:0000:01:00.0\nnot a record\n")
    assert len(records) == 1
    assert records[0].fields == {"SUBSYSTEM": "pci", "DEVICE": "+pci:0000:01:00.0"}
    assert records[0].message.endswith("Graphics Exception")
    xid = parse_xid(records[0], boot_time=0.0)
    assert (xid.pci_bus, xid.xid, xid.pid) == ("0000:01:00", 13, 9)


@pytest.mark.parametrize(
    "path, unit",
    [
        ("/system.slice/vllm-worker.service", "vllm-worker.service"),
        ("/user.slice/user-1000.slice/session-2.scope", "session-2.scope"),
        ("/headroom.slice/headroom-run-7.scope/payload", "headroom-run-7.scope"),
        ("/system.slice", "system.slice"),
        ("/headroom-test-1a2b", ""),
        ("/", ""),
    ],
)
def test_unit_of_cgroup(path, unit):
    assert unit_of_cgroup(path) == unit


@pytest.mark.parametrize(
    "unit, path",
    [
        ("vllm-worker.service", "/system.slice/vllm-worker.service"),
        ("headroom.slice", "/headroom.slice"),
        ("headroom-tests.slice", "/headroom.slice/headroom-tests.slice"),
        ("-.slice", "/"),
    ],
)
def test_default_unit_path(unit, path):
    assert default_unit_path(unit) == path


@pytest.mark.parametrize(
    "text, controller, path",
    [
        ("12:memory:/system.slice/a.service\n1:name=systemd:/system.slice/a.service\n0::/system.slice/a.service\n", "memory", "/system.slice/a.service"),
        ("0::/user.slice/user-0.slice/session-1.scope\n", "", "/user.slice/user-0.slice/session-1.scope"),
        ("4:cpu,cpuacct:/x\n", "cpuacct", "/x"),
    ],
)
def test_parse_proc_cgroup(text, controller, path):
    assert parse_proc_cgroup(text)[controller] == path
