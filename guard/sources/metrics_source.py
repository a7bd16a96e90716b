"""Signals from the local exporter's /metrics: parse_exporter_text() is pure; ExporterSource only fetches."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from guard.protect.domain import cgroup_available
from guard.common.swaproom import cgroup_swap_free, host_swap_free
from guard.common.types import GpuObs, Snapshot

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_samples(text: str) -> Samples:
    """Exposition text -> {sample name without the headroom_ prefix: [(labels, value)]}."""
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name.removeprefix("headroom_")].append((sample.labels, sample.value))
    return samples


def one(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` whose labels include `labels`, else None."""
    for sample_labels, value in samples.get(name, ()):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return None


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {lbls[label]: value for lbls, value in samples.get(name, ()) if label in lbls}


def domain_memory(samples: Samples, domain: str) -> tuple[float | None, float | None, str | None]:
    """(total, available, error) for the host or a cgroup: available = limit - usage + reclaimable, capped by the
    host."""
    host_total, host_avail = one(samples, "memory_total_bytes"), one(samples, "memory_available_bytes")
    if domain == "host":
        if host_total is None or host_avail is None:
            return None, None, "the exporter reports no memory_available_bytes"
        return host_total, host_avail, None
    usage = one(samples, "cgroup_memory_usage_bytes", cgroup=domain)
    if usage is None:
        return None, None, f"the exporter reports no cgroup {domain} (add it to [exporter] cgroups)"
    limit = one(samples, "cgroup_memory_limit_bytes", cgroup=domain)
    if limit is None:  # unlimited cgroup: the host is the domain's real bound
        return host_total, host_avail, None
    reclaimable = one(samples, "cgroup_memory_reclaimable_bytes", cgroup=domain)
    return limit, cgroup_available(limit, usage, reclaimable, host_avail), None


def domain_swap(samples: Samples, domain: str) -> float | None:
    """Swap the domain may still use: the host's (zram discounted), bounded by a cgroup's own allowance."""
    host_free = one(samples, "swap_free_bytes")
    if host_free is None:
        return None
    host = host_swap_free(host_free, one(samples, "swap_ram_backed_free_bytes") or 0.0)
    if domain == "host":
        return host
    return cgroup_swap_free(
        one(samples, "cgroup_memory_swap_limit_bytes", cgroup=domain),
        one(samples, "cgroup_memory_swap_bytes", cgroup=domain),
        host,
    )


def domain_psi(samples: Samples, domain: str, kind: str) -> float | None:
    """PSI memory avg10 of the domain: its own memory.pressure where the exporter has it (cgroup v2), else the
    host's."""
    if domain != "host":
        own = one(samples, "cgroup_pressure_memory_ratio", cgroup=domain, kind=kind, window="10s")
        if own is not None:
            return own
    return one(samples, "pressure_memory_ratio", kind=kind, window="10s")


def gpus_from(samples: Samples) -> tuple[GpuObs, ...]:
    totals = by_label(samples, "gpu_memory_total_bytes", "gpu")
    frees = by_label(samples, "gpu_memory_free_bytes", "gpu")
    temperatures = by_label(samples, "gpu_temperature_celsius", "gpu")
    uuids = {lbls["gpu"]: lbls.get("uuid") for lbls, _ in samples.get("gpu_info", ()) if "gpu" in lbls}
    procs: dict[str, dict[int, float]] = defaultdict(dict)
    for lbls, value in samples.get("gpu_process_memory_bytes", ()):
        if lbls.get("pid", "").isdigit():
            procs[lbls.get("gpu", "")][int(lbls["pid"])] = value
    return tuple(
        GpuObs(gpu, uuids.get(gpu), totals[gpu], frees[gpu], dict(procs.get(gpu, {})), temperatures.get(gpu))
        for gpu in sorted(totals, key=lambda g: (len(g), g))
        if gpu in frees
    )


def parse_exporter_text(text: str, domain: str, taken_at: float) -> Snapshot:
    """A Snapshot from one /metrics body; ok=False (with the reason) when the memory domain is missing."""
    samples = parse_samples(text)
    total, available, error = domain_memory(samples, domain)
    return Snapshot(
        taken_at=taken_at,
        ok=error is None,
        error=error,
        domain=domain,
        ram_total_bytes=total,
        ram_available_bytes=available,
        swap_in_bytes_total=one(samples, "swap_in_bytes_total"),
        swap_free_bytes=domain_swap(samples, domain),
        psi_full_ratio=domain_psi(samples, domain, "full"),
        psi_some_ratio=domain_psi(samples, domain, "some"),
        oom_kills_total=one(samples, "oom_kills_total"),
        gpus=gpus_from(samples),
    )


class ExporterSource:
    """Fetches the exporter's /metrics each tick; any failure becomes a not-ok Snapshot, never an exception."""

    def __init__(
        self,
        url: str,
        domain: str,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.url, self.domain, self.clock = url, domain, clock
        self.client = httpx.Client(timeout=timeout, transport=transport)

    def fetch(self) -> Snapshot:
        now = self.clock()
        try:
            response = self.client.get(self.url)
            response.raise_for_status()
            return parse_exporter_text(response.text, self.domain, now)
        except (httpx.HTTPError, ValueError) as err:
            return Snapshot(
                taken_at=now, ok=False, error=f"exporter {self.url}: {type(err).__name__}: {err}", domain=self.domain
            )

    def close(self) -> None:
        self.client.close()
