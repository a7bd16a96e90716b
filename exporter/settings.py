"""The [exporter] section of the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from headroom.settings_base import ListenAddress, Section

COLLECTORS = ("memory", "pressure", "oom", "cgroup", "gpu")


class ExporterSettings(Section):
    listen: ListenAddress = Field(
        default="127.0.0.1:9840",
        description="Address of /metrics and /events; loopback unless you mean to expose it.",
    )
    procfs: Path = Field(
        default=Path("/proc"),
        description="Root of the proc filesystem, so tests and containers can point elsewhere (like node_exporter's "
                    "--path.procfs).",
    )
    cgroupfs: Path = Field(default=Path("/sys/fs/cgroup"), description="Root of the cgroup filesystem (like procfs).")
    kmsg: Path = Field(
        default=Path("/dev/kmsg"),
        description="The kernel log to follow for OOM-kill victims and GPU Xid errors (a regular file works too: "
                    "tests).",
    )
    require_kmsg: bool = Field(
        default=False,
        description="Exit with code 4 at start when kmsg cannot be read, instead of running without victim details.",
    )
    cgroup_version: Literal["auto", "1", "2"] = Field(
        default="auto",
        description="cgroup hierarchy: auto detects v2 (cgroup.controllers at the root) or v1 (memory/ below it).",
    )
    cgroups: list[str] = Field(
        default_factory=list,
        description="cgroups to report: paths (\"/headroom.slice/x\") or systemd unit names (\"vllm-worker.service\").",
    )
    collectors: list[Literal["memory", "pressure", "oom", "cgroup", "gpu"]] = Field(
        default_factory=lambda: list(COLLECTORS),
        description="Collectors to run; a missing source yields no series, never a fake 0.",
    )
    max_connections: int = Field(
        default=64, ge=1, le=10_000,
        description="Connections served at once; one more is answered 503 and closed (Prometheus needs one or two).",
    )
    idle_timeout_seconds: float = Field(
        default=90.0, gt=0, le=3600,
        description="Close a connection that sends no request for this long (keep it above your scrape interval).",
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600,
        description="Close a connection whose request line and headers are not complete this long after their first "
                    "byte.",
    )
    events_max: int = Field(default=100, ge=1, le=100_000, description="How many recent OOM kills /events keeps.")
    nvml_module: str = Field(
        default="pynvml",
        description="Python module that provides the NVML API; \"pynvml\" is the real one (tests use a fixture fake).",
    )
