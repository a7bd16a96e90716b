"""The [run] section: how `headroom run`, `headroom check`, lease() and the pytest plugin behave."""

from __future__ import annotations

from pydantic import Field, field_validator

from headroom.cliargs import cgroup_path
from headroom.settings_base import Section
from headroom.sizes import parse_size


class RunSettings(Section):
    guard_url: str = Field(default="", description="The guard to ask; empty means http://<[guard] listen>.")
    parent_cgroup: str = Field(
        default="headroom.slice",
        description="Parent of each command's cgroup: a systemd slice where systemd runs (a scope is made in it), "
                    "else a cgroup path under the memory hierarchy (\"headroom.slice\" there is /headroom.slice).",
    )
    max_margin: float = Field(
        default=0.10, ge=0.0, le=10.0,
        description="memory.max = RAM lease x (1 + max_margin); memory.high = the RAM lease, so the kernel throttles "
                    "before it kills.",
    )
    ttl_seconds: int = Field(
        default=60, ge=5, le=86400,
        description="Lease TTL; heartbeats every third of it keep the lease alive while the command runs.",
    )
    default_ram: str = Field(
        default="",
        description="RAM lease `headroom run` takes when --ram is not given, e.g. \"2GiB\"; empty: `run` refuses "
                    "without --ram (never an unlimited run by accident; --ram 0 asks for no RAM and no limit "
                    "explicitly).",
    )

    @field_validator("default_ram")
    @classmethod
    def _size(cls, value: str) -> str:
        if value:
            parse_size(value)  # ValueError names what was expected
        return value

    @field_validator("parent_cgroup")
    @classmethod
    def _parent(cls, value: str) -> str:
        return cgroup_path(value)
