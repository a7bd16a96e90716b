"""The [exporter] section of the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from headroom.settings_base import Section, listen_validator

COLLECTORS = ("memory", "pressure", "oom", "cgroup", "gpu")


class ExporterSettings(Section):
    # Address of /metrics and /events; loopback unless you mean to expose it.
    listen: str = "127.0.0.1:9840"
    # Roots of the kernel's files, so tests and containers can point elsewhere (like node_exporter's --path.*).
    procfs: Path = Path("/proc")
    cgroupfs: Path = Path("/sys/fs/cgroup")
    # The kernel log to follow for OOM-kill victims and GPU Xid errors (a regular file works too: tests).
    kmsg: Path = Path("/dev/kmsg")
    # Exit with code 4 at start when kmsg cannot be read, instead of running without victim details.
    require_kmsg: bool = False
    # cgroup hierarchy: auto detects v2 (cgroup.controllers at the root) or v1 (memory/ below it).
    cgroup_version: Literal["auto", "1", "2"] = "auto"
    # cgroups to report: paths ("/headroom.slice/x") or systemd unit names ("vllm-worker.service").
    cgroups: list[str] = Field(default_factory=list)
    # Collectors to run; a missing source yields no series, never a fake 0.
    collectors: list[Literal["memory", "pressure", "oom", "cgroup", "gpu"]] = Field(
        default_factory=lambda: list(COLLECTORS)
    )
    # Connections served at once; one more is answered 503 and closed (Prometheus needs one or two).
    max_connections: int = Field(default=64, ge=1, le=10_000)
    # Close a connection that sends no request for this long (keep it above your scrape interval).
    idle_timeout_seconds: float = Field(default=90.0, gt=0, le=3600)
    # Close a connection whose request line and headers are not complete this long after their first byte.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # How many recent OOM kills /events keeps.
    events_max: int = Field(default=100, ge=1, le=100_000)
    # Python module that provides the NVML API; "pynvml" is the real one (tests use a fixture fake).
    nvml_module: str = "pynvml"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return listen_validator(value)
