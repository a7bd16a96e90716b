"""What a person sees when things are wrong: bad config, address in use, unreadable kmsg, no GPU driver, kmsg overrun."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from exporter.follower import KmsgFollower
from exporter.oom import OomCollector
from exporter.registry import CollectorSet
from tests.exporter.conftest import GOLDEN, exporter_process
from tests.helpers import REPO, headroom_cmd, need, write_toml

PR_CAPBSET_DROP, CAP_SYSLOG = 24, 34


def run_headroom(*args, timeout=30, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(headroom_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.mark.parametrize(
    "config, named",
    [
        ({"exporter": {"listen": "localhost"}}, "exporter.listen = 'localhost': expected HOST:PORT"),
        ({"exporter": {"events_max": 0}}, "exporter.events_max = 0: Input should be greater than or equal to 1"),
        ({"exporter": {"collectors": ["memory", "disk"]}}, "exporter.collectors.1 = 'disk'"),
        ({"exporter": {"lisen": "127.0.0.1:1"}}, "exporter.lisen: unknown key"),
        ({"log_level": "loud"}, "log_level = 'loud': expected one of debug, info, warning, error"),
    ],
)
def test_bad_config_names_the_key_and_exits_2_before_starting(tmp_path, config, named):
    conf = write_toml(tmp_path / "bad.toml", config)
    for argv in (("config", "check", str(conf)), ("exporter", "--config", str(conf))):
        result = run_headroom(*argv)
        assert result.returncode == 2, result.stderr
        assert named in result.stderr
        assert "listening" not in result.stderr


def test_bad_environment_override_is_named(tmp_path):
    result = run_headroom("exporter", env={**os.environ, "HEADROOM_EXPORTER__LISTEN": "127.0.0.1:99999"})
    assert result.returncode == 2 and "exporter.listen" in result.stderr and "port must be 0-65535" in result.stderr


def test_config_check_accepts_a_good_file_and_rejects_bad_toml(tmp_path):
    good = write_toml(tmp_path / "good.toml", {"exporter": {"listen": "127.0.0.1:9999", "cgroups": ["headroom.slice"]}})
    assert run_headroom("config", "check", str(good)).returncode == 0
    broken = tmp_path / "broken.toml"
    broken.write_text("[exporter\nlisten=")
    result = run_headroom("config", "check", str(broken))
    assert result.returncode == 2 and "not valid TOML" in result.stderr
    missing = run_headroom("config", "check", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_listen_address_in_use_exits_3(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_headroom("exporter", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr


def _drop_cap_syslog():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_SYSLOG, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_kmsg_is_survived_and_shows_in_collector_success(tmp_path):
    need(os.geteuid() == 0 and Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() == "1", "root with kernel.dmesg_restrict=1 (to take CAP_SYSLOG away)")
    with exporter_process(tmp_path, {"collectors": ["oom"]}, preexec_fn=_drop_cap_syslog) as (base, _):
        text = httpx.get(base + "/metrics").text
        events = httpx.get(base + "/events").json()
    assert 'headroom_collector_success{collector="oom"} 0.0' in text
    assert "headroom_kmsg_up 0.0" in text
    assert "headroom_oom_kills_total " in text  # the kernel counter still comes from /proc/vmstat
    assert events["kmsg"]["followed"] is False and "Operation not permitted" in events["kmsg"]["error"]
    log = next(tmp_path.glob("exporter-*.log")).read_text()
    assert "cannot read /dev/kmsg: Operation not permitted (needs root or CAP_SYSLOG" in log


def test_require_kmsg_exits_4_when_kmsg_is_missing(tmp_path):
    conf = write_toml(tmp_path / "c.toml", {"exporter": {"listen": "127.0.0.1:0", "kmsg": str(tmp_path / "no-kmsg"), "require_kmsg": True}})
    result = run_headroom("exporter", "--config", str(conf))
    assert result.returncode == 4 and "no-kmsg: No such file or directory" in result.stderr


def test_no_gpu_driver_means_zero_gpus_and_a_successful_scrape(tmp_path):
    # This machine has no NVIDIA driver: the real pynvml raises NVMLError_LibraryNotFound in nvmlInit.
    with exporter_process(tmp_path, {"collectors": ["gpu"]}) as (base, _):
        text = httpx.get(base + "/metrics").text
    assert "headroom_gpus 0.0" in text and 'headroom_collector_success{collector="gpu"} 1.0' in text
    assert "headroom_gpu_memory_total_bytes{" not in text
    assert "no NVIDIA driver" in next(tmp_path.glob("exporter-*.log")).read_text()


def test_kmsg_overrun_is_counted_and_reading_goes_on(tmp_path):
    log = tmp_path / "kmsg"
    log.write_text("")
    chunks = [BrokenPipeError(32, "Broken pipe"), b"3,9,1000000,-;Out of memory: Killed process 5 (a) total-vm:8kB, anon-rss:4kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0\n", b""]

    def reader(fd, size):
        item = chunks.pop(0) if chunks else b""
        if isinstance(item, Exception):
            raise item
        return item

    follower = KmsgFollower(log, boot_time=0.0, reader=reader)
    follower._try_open()
    follower.drain()
    state = follower.snapshot()
    assert state.overruns == 1 and [v.comm for v in state.victims] == ["a"]
    collectors = CollectorSet([OomCollector(GOLDEN / "proc", follower)])
    first, second = ({s.labels.get("collector"): s.value for f in collectors.collect() for s in f.samples if s.name == "headroom_collector_success"} for _ in range(2))
    assert first == {"oom": 0.0} and second == {"oom": 1.0}  # the scrape after the overrun says so, then recovers
