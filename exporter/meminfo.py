"""RAM and swap from /proc/meminfo and /proc/vmstat: pure parsers, readers, and the `memory` collector."""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from exporter.types import MemInfo, VmStat

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def parse_kv_kib(text: str) -> dict[str, int]:
    """'MemTotal:  16 kB' lines -> {'MemTotal': 16384}; values without a unit are kept as they are."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        try:
            number = int(parts[0])
        except ValueError:
            continue
        values[key.strip()] = number * 1024 if len(parts) > 1 and parts[1] == "kB" else number
    return values


def parse_meminfo(text: str) -> MemInfo:
    values = parse_kv_kib(text)
    if "MemTotal" not in values:
        raise ValueError("meminfo has no MemTotal line")
    return MemInfo(
        total_bytes=values["MemTotal"],
        available_bytes=values.get("MemAvailable"),
        free_bytes=values.get("MemFree", 0),
        cached_bytes=values.get("Cached", 0),
        swap_total_bytes=values.get("SwapTotal", 0),
        swap_free_bytes=values.get("SwapFree", 0),
    )


_VMSTAT_KEYS = re.compile(r"^(pswpin|pswpout|pgmajfault|oom_kill) (\d+)$", re.MULTILINE)


def parse_vmstat(text: str) -> VmStat:
    """The few /proc/vmstat counters headroom reports (a regex: the file has ~200 lines we skip)."""
    values = {key: int(number) for key, number in _VMSTAT_KEYS.findall(text)}
    return VmStat(
        swap_in_pages=values.get("pswpin"),
        swap_out_pages=values.get("pswpout"),
        major_faults=values.get("pgmajfault"),
        oom_kills=values.get("oom_kill"),
    )


def parse_swaps(text: str) -> list[tuple[str, int, int]]:
    """/proc/swaps -> [(device, size bytes, used bytes)] (the file's sizes are KiB)."""
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
            rows.append((parts[0], int(parts[2]) * 1024, int(parts[3]) * 1024))
    return rows


def ram_backed_free(swaps: list[tuple[str, int, int]]) -> int:
    """Free swap on zram devices: their "swap" is compressed RAM, so only part of it is room."""
    return sum(size - used for name, size, used in swaps if "/zram" in name)


def read_ram_backed_free(procfs: Path) -> int | None:
    """Free zram swap from /proc/swaps; None when the file is missing."""
    try:
        return ram_backed_free(parse_swaps((procfs / "swaps").read_text()))
    except OSError:
        return None


def read_meminfo(procfs: Path) -> MemInfo:
    return parse_meminfo((procfs / "meminfo").read_text())


def read_vmstat(procfs: Path) -> VmStat:
    return parse_vmstat((procfs / "vmstat").read_text())


class MemoryCollector:
    """RAM, swap, swap traffic and major faults, read fresh on every scrape."""

    name = "memory"

    def __init__(self, procfs: Path):
        self.procfs = procfs

    def collect(self):
        info = read_meminfo(self.procfs)
        vm = read_vmstat(self.procfs)
        yield GaugeMetricFamily("headroom_memory_total_bytes", "Usable RAM (MemTotal).", value=info.total_bytes)
        if info.available_bytes is not None:
            yield GaugeMetricFamily(
                "headroom_memory_available_bytes",
                "RAM available for new work without swapping (MemAvailable).",
                value=info.available_bytes,
            )
        yield GaugeMetricFamily("headroom_memory_free_bytes", "Completely unused RAM (MemFree).", value=info.free_bytes)
        yield GaugeMetricFamily("headroom_memory_cached_bytes", "Page cache (Cached).", value=info.cached_bytes)
        yield GaugeMetricFamily("headroom_swap_total_bytes", "Swap space (SwapTotal).", value=info.swap_total_bytes)
        yield GaugeMetricFamily("headroom_swap_free_bytes", "Unused swap (SwapFree).", value=info.swap_free_bytes)
        zram = read_ram_backed_free(self.procfs) if info.swap_total_bytes else None
        if zram is not None:
            yield GaugeMetricFamily(
                "headroom_swap_ram_backed_free_bytes",
                "Free swap on zram devices (counted in swap_free_bytes; its pages are stored in RAM).",
                value=zram,
            )
        yield from _vmstat_counters(vm)


def _vmstat_counters(vm: VmStat):
    counters = (
        ("headroom_swap_in_bytes", "Bytes read in from swap since boot (pswpin).", vm.swap_in_pages, PAGE_SIZE),
        ("headroom_swap_out_bytes", "Bytes written out to swap since boot (pswpout).", vm.swap_out_pages, PAGE_SIZE),
        ("headroom_major_page_faults", "Major page faults (reads from disk or swap) since boot.", vm.major_faults, 1),
    )
    for name, doc, value, factor in counters:
        if value is not None:
            yield CounterMetricFamily(name, doc, value=value * factor)
