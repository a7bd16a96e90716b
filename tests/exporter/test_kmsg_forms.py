"""OOM reports of every kernel shape (3.10, 4.15, 4.19, 6.1) read from kmsg fixtures, names with odd bytes included."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.kmsg import OomAssembler, parse_kmsg_records, unescape
from tests.helpers import REPO

KMSG = REPO / "tests" / "fixtures" / "kmsg"
KiB = 1024


def victims(name: str, boot_time: float = 1_700_000_000.0):
    assembler = OomAssembler()
    records = parse_kmsg_records((KMSG / name).read_text())
    return [v for r in records if (v := assembler.feed(r, boot_time))]


def summary(v) -> tuple:
    return (v.pid, v.comm, v.cgroup, v.unit, v.global_oom, v.oom_memcg, v.rss_bytes)


CASES = {
    "el7-3.10-memcg.kmsg": [
        (9940, "java", "/system.slice/tomcat.service", "tomcat.service", False, "/system.slice/tomcat.service", (247920 + 1532) * KiB),
        (9950, "my (test) app", "/user.slice/user-1000.slice/session-7.scope/my test", "session-7.scope", False,
         "/user.slice/user-1000.slice", (1040000 + 384) * KiB),
    ],
    "ubuntu-4.15-mixed.kmsg": [
        (15784, "[celery] w:1", "", "", True, "", (4288 + 3028) * KiB),
        (102872, 'it\'s "q"', "/docker/9f9cdbfd1ad345748869b4cbaaa0e71b573e54c30ed44071e9dbc948ecc7e857", "", False,
         "/docker/9f9cdbfd1ad345748869b4cbaaa0e71b573e54c30ed44071e9dbc948ecc7e857", 4111744 * KiB),
    ],
    "debian-4.19-memcg.kmsg": [
        (62769, "cp", "/kubepods/pod951f6bc5/024952d653ef", "", False, "/kubepods/pod951f6bc5/024952d653ef", (140 + 1504) * KiB),
    ],
    "modern-6.1-escapes.kmsg": [
        (4100, "café", "/headroom.slice/headroom-run-café-1a2b3c.scope", "headroom-run-café-1a2b3c.scope", False,
         "/headroom.slice/headroom-run-café-1a2b3c.scope", (204160 + 6316) * KiB),
        (4200, "a\\b ✓", "/user.slice/user-1000.slice/user@1000.service/app.slice/app-x,y.scope", "app-x,y.scope", True, "",
         (8388608 + 1024) * KiB),
        (4300, "(sd-pam)", "/system.slice/vllm-worker.service", "vllm-worker.service", False, "/system.slice", (4064 + 3584) * KiB),
        (4400, "bad\ufffd\ufffdbytes", "/t", "", False, "/t", 100 * KiB),
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_kernel_shape_yields_each_victim_with_its_cgroup(name):
    assert [summary(v) for v in victims(name)] == CASES[name]


def test_old_kernels_give_constraint_and_kill_time_from_the_killed_line():
    first, second = victims("el7-3.10-memcg.kmsg", boot_time=1_700_000_000.25)
    assert first.constraint == "CONSTRAINT_MEMCG" and first.total_vm_bytes == 3700004 * KiB
    assert first.time_seconds == pytest.approx(1_700_000_000.25 + 615694.5121, abs=1e-6)
    assert second.pid == 9950, "a sacrificed child is the victim the kernel really killed"
    assert victims("ubuntu-4.15-mixed.kmsg")[0].constraint == ""  # a global OOM on 4.15 names no constraint


def test_the_oom_reaper_line_is_not_a_second_kill():
    names = [v.comm for v in victims("ubuntu-4.15-mixed.kmsg")]
    assert names == ["[celery] w:1", 'it\'s "q"']


def test_a_task_in_line_of_an_unfinished_report_does_not_stick_to_the_next_global_kill():
    text = (
        "4,1,100,-;a invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0\n"
        "6,2,110,-;Task in /a killed as a result of limit of /a\n"
        "4,3,200,-;b invoked oom-killer: gfp_mask=0x201da, order=0, oom_score_adj=0\n"
        "3,4,210,-;Out of memory: Kill process 7 (b) score 900 or sacrifice child\n"
        "3,5,220,-;Killed process 7 (b) total-vm:10kB, anon-rss:4kB, file-rss:0kB\n"
    )
    assembler = OomAssembler()
    found = [v for r in parse_kmsg_records(text) if (v := assembler.feed(r, 0.0))]
    assert [(v.pid, v.cgroup, v.global_oom, v.rss_bytes) for v in found] == [(7, "", True, 4 * KiB)]


@pytest.mark.parametrize(
    "raw, text",
    [
        ("caf\\xc3\\xa9", "café"),  # a UTF-8 run decodes as one character, not as 'cafÃ©'
        ("a\\x5cb", "a\\b"),  # the kernel escapes the backslash itself
        ("tab\\x09end", "tab\tend"),
        ("bad\\xff", "bad\ufffd"),  # not UTF-8: replacement, never an exception
        ("\\xe2\\x9c", "\ufffd"),  # a truncated sequence
        ("plain", "plain"),
    ],
)
def test_unescape_decodes_runs_as_utf8(raw, text):
    assert unescape(raw) == text


def oom_families(procfs: Path, kmsg: Path) -> dict:
    from exporter.follower import KmsgFollower, read_boot_time
    from exporter.oom import OomCollector

    follower = KmsgFollower(kmsg, read_boot_time(procfs))
    follower.start()
    try:
        return {f.name: f for f in OomCollector(procfs, follower).collect()}
    finally:
        follower.stop()


def test_the_kill_counter_says_where_it_comes_from(tmp_path):
    el7 = REPO / "tests" / "fixtures" / "golden-el7" / "proc"
    modern = REPO / "tests" / "fixtures" / "golden" / "proc"
    from_kmsg = oom_families(el7, KMSG / "ubuntu-4.15-mixed.kmsg")
    assert from_kmsg["headroom_oom_kills"].samples[0].value == 2
    assert from_kmsg["headroom_oom_kills_source_info"].samples[0].labels == {"source": "kmsg"}
    from_vmstat = oom_families(modern, KMSG / "ubuntu-4.15-mixed.kmsg")
    assert from_vmstat["headroom_oom_kills"].samples[0].value == 3  # /proc/vmstat's oom_kill wins where it exists
    assert from_vmstat["headroom_oom_kills_source_info"].samples[0].labels == {"source": "vmstat"}
    # No oom_kill in vmstat and no readable kernel log: no series at all, never a fake 0.
    neither = oom_families(el7, tmp_path / "no-kmsg")
    assert "headroom_oom_kills" not in neither and "headroom_oom_kills_source_info" not in neither


def test_kills_from_before_the_start_are_one_info_line_and_each_victim_has_its_own_last_time(caplog):
    """A first start read 13 old kills as 13 WARNINGs; the alert needs each victim's own time to skip old ones."""
    caplog.set_level("INFO", logger="headroom")
    families = oom_families(REPO / "tests" / "fixtures" / "golden-el7" / "proc", KMSG / "ubuntu-4.15-mixed.kmsg")
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "OOM kill" in r.getMessage()]
    assert any("2 OOM kill(s) from before this start" in r.getMessage() for r in caplog.records), caplog.text
    latest = families["headroom_oom_kill_victim_last_timestamp_seconds"].samples
    assert latest and all(s.value > 1_000_000_000 for s in latest)
    assert {s.labels["comm"] for s in latest} == {s.labels["comm"] for s in families["headroom_oom_kill_victims"].samples
                                                  if s.name.endswith("_total")}
