"""systemd units from `headroom install`: this installation's paths, and `systemd-analyze verify` finds nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from headroom.config import load_settings
from tests.helpers import REPO, headroom_cmd, need_binary


def install(tmp_path, *extra) -> subprocess.CompletedProcess:
    args = ("install", "--dest", str(tmp_path / "units"), "--config", str(tmp_path / "etc" / "headroom.toml"), "--no-reload", *extra)
    return subprocess.run(headroom_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=60)


def verify(paths) -> subprocess.CompletedProcess:
    analyze = need_binary("systemd-analyze")
    return subprocess.run([analyze, "verify", "--man=no", *map(str, paths)], capture_output=True, text=True, timeout=60)


def test_dry_run_prints_units_with_this_installations_paths(tmp_path):
    result = install(tmp_path, "--dry-run")
    assert result.returncode == 0
    assert f"ExecStart={sys.executable} -m headroom exporter --config {tmp_path}/etc/headroom.toml" in result.stdout
    assert not (tmp_path / "units").exists(), "--dry-run writes nothing"
    for needed in ("Type=notify", "WatchdogSec=", "OOMScoreAdjust=-900", "Restart=on-failure", "RestartSec=", "MemoryMax=", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert needed in result.stdout


def test_installed_units_pass_systemd_analyze_verify(tmp_path):
    result = install(tmp_path)
    assert result.returncode == 0, result.stderr
    units = sorted((tmp_path / "units").iterdir())
    assert [u.name for u in units] == ["headroom-exporter.service", "headroom-guard.service", "headroom-worker.service", "headroom.slice"]
    checked = verify(units)
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr
    # The starter config it writes is valid, and private to root and the group.
    config = tmp_path / "etc" / "headroom.toml"
    assert load_settings(config).exporter.cgroups == ["headroom.slice", "headroom-worker.service"]
    assert config.stat().st_mode & 0o007 == 0


def test_verify_would_catch_a_broken_unit(tmp_path):
    install(tmp_path)
    unit = tmp_path / "units" / "headroom-exporter.service"
    broken = tmp_path / "broken-exporter.service"
    broken.write_text(unit.read_text().replace("MemoryMax=128M", "MemoryMax=lots"))
    assert "Invalid memory limit 'lots'" in verify([broken]).stderr


@pytest.mark.parametrize("unit, limits", [("headroom-worker.service", ("MemoryHigh=20G", "MemoryMax=24G", "CPUQuota=400%")), ("headroom.slice", ("MemoryHigh=18G", "MemoryMax=20G"))])
def test_limits_are_the_seeds(tmp_path, unit, limits):
    install(tmp_path)
    text = (tmp_path / "units" / unit).read_text()
    assert all(limit in text for limit in limits)
