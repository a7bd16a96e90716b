"""The exporter's vocabulary: what each kernel/NVML source yields, in base units."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MemInfo:
    total_bytes: int  # MemTotal
    available_bytes: int | None  # MemAvailable (None on kernels < 3.14)
    free_bytes: int  # MemFree
    cached_bytes: int  # Cached (page cache)
    swap_total_bytes: int  # SwapTotal
    swap_free_bytes: int  # SwapFree


@dataclass(frozen=True)
class VmStat:
    swap_in_pages: int | None  # pswpin
    swap_out_pages: int | None  # pswpout
    major_faults: int | None  # pgmajfault
    oom_kills: int | None  # oom_kill (kernel 4.13+)


@dataclass(frozen=True)
class PressureLine:
    kind: str  # "some" or "full"
    avg10_ratio: float  # the kernel's avg10 percentage / 100
    avg60_ratio: float
    avg300_ratio: float
    stalled_seconds_total: float  # total (µs) / 1e6


@dataclass(frozen=True)
class CgroupMemory:
    cgroup: str  # path under the memory hierarchy root, "/..."
    usage_bytes: int | None
    limit_bytes: int | None  # None when unlimited ("max" / huge v1 value)
    high_bytes: int | None  # None when unlimited or unsupported (v1)
    reclaimable_bytes: int | None  # inactive file cache, which the kernel reclaims first
    oom_kills: int | None  # memory.events oom_kill (v2) / memory.oom_control oom_kill (v1)
    swap_bytes: int | None = None  # swap in use: memory.swap.current (v2), memsw.usage - usage (v1)
    swap_limit_bytes: int | None = None
    pressure: tuple[PressureLine, ...] = ()


@dataclass(frozen=True)
class KmsgRecord:
    priority: int  # syslog priority (facility*8+level)
    seq: int  # kernel sequence number; gaps mean lost records
    timestamp_us: int  # µs since boot
    message: str
    fields: dict[str, str] = field(default_factory=dict)  # continuation lines ( KEY=value)


@dataclass
class OomVictim:
    pid: int
    comm: str
    cgroup: str  # task_memcg from the oom-kill: line ("" when the kernel did not say)
    unit: str  # systemd unit owning that cgroup ("" when none)
    constraint: str  # CONSTRAINT_MEMCG, CONSTRAINT_NONE, ...
    global_oom: bool  # "Out of memory:" (whole machine) vs "Memory cgroup out of memory:"
    time_seconds: float  # unix time of the kill
    rss_bytes: int | None = None  # anon + file + shmem RSS at the kill
    anon_rss_bytes: int | None = None
    total_vm_bytes: int | None = None
    oom_score_adj: int | None = None
    oom_memcg: str = ""  # the cgroup whose limit was hit (memcg OOM)

    def as_event(self) -> dict:
        return {"kind": "oom_kill", **self.__dict__}


@dataclass(frozen=True)
class XidError:
    pci_bus: str  # e.g. "0000:3b:00"
    xid: int
    pid: int | None
    time_seconds: float
    message: str
