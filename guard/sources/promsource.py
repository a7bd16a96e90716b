"""Signals from a Prometheus server's query API (fleet mode); every query is configuration, with two presets."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable

import httpx

from guard.sources.metrics_source import Samples, domain_memory, domain_swap, gpus_from, one
from guard.common.types import Snapshot

# Keys are headroom's sample names (without the prefix): results are read exactly as /metrics would be.
# $instance and $cgroup are substituted; every query may be overridden in [guard.prometheus] queries.
PRESETS: dict[str, dict[str, str]] = {
    "headroom": {
        "memory_total_bytes": 'headroom_memory_total_bytes{instance=~"$instance"}',
        "memory_available_bytes": 'headroom_memory_available_bytes{instance=~"$instance"}',
        "swap_in_bytes_total": 'headroom_swap_in_bytes_total{instance=~"$instance"}',
        "swap_free_bytes": 'headroom_swap_free_bytes{instance=~"$instance"}',
        "swap_ram_backed_free_bytes": 'headroom_swap_ram_backed_free_bytes{instance=~"$instance"}',
        "pressure_memory_ratio": 'headroom_pressure_memory_ratio{instance=~"$instance",window="10s"}',
        "oom_kills_total": 'headroom_oom_kills_total{instance=~"$instance"}',
        "cgroup_memory_usage_bytes": 'headroom_cgroup_memory_usage_bytes{instance=~"$instance",cgroup="$cgroup"}',
        "cgroup_memory_limit_bytes": 'headroom_cgroup_memory_limit_bytes{instance=~"$instance",cgroup="$cgroup"}',
        "cgroup_memory_reclaimable_bytes": (
            'headroom_cgroup_memory_reclaimable_bytes{'
            'instance=~"$instance",cgroup="$cgroup"}'
        ),
        "cgroup_memory_swap_bytes": 'headroom_cgroup_memory_swap_bytes{instance=~"$instance",cgroup="$cgroup"}',
        "cgroup_memory_swap_limit_bytes": (
            'headroom_cgroup_memory_swap_limit_bytes{'
            'instance=~"$instance",cgroup="$cgroup"}'
        ),
        "gpu_info": 'headroom_gpu_info{instance=~"$instance"}',
        "gpu_memory_total_bytes": 'headroom_gpu_memory_total_bytes{instance=~"$instance"}',
        "gpu_memory_free_bytes": 'headroom_gpu_memory_free_bytes{instance=~"$instance"}',
        "gpu_temperature_celsius": 'headroom_gpu_temperature_celsius{instance=~"$instance"}',
    },
    "node_exporter_dcgm": {
        "memory_total_bytes": 'node_memory_MemTotal_bytes{instance=~"$instance"}',
        "memory_available_bytes": 'node_memory_MemAvailable_bytes{instance=~"$instance"}',
        "swap_in_bytes_total": 'node_vmstat_pswpin{instance=~"$instance"} * 4096',
        "swap_free_bytes": 'node_memory_SwapFree_bytes{instance=~"$instance"}',
        "pressure_memory_ratio": (
            'label_replace(rate(node_pressure_memory_stalled_seconds_total{instance=~"$instance"}[1m]), '
            '"kind", "full", "", "")'
        ),
        "oom_kills_total": 'node_vmstat_oom_kill{instance=~"$instance"}',
        "cgroup_memory_usage_bytes": 'container_memory_usage_bytes{instance=~"$instance",id="$cgroup"}',
        "cgroup_memory_limit_bytes": 'container_spec_memory_limit_bytes{instance=~"$instance",id="$cgroup"} > 0',
        "cgroup_memory_reclaimable_bytes": (
            'container_memory_usage_bytes{instance=~"$instance",id="$cgroup"} - '
            'container_memory_working_set_bytes{instance=~"$instance",id="$cgroup"}'
        ),
        "gpu_info": 'DCGM_FI_DEV_FB_FREE{instance=~"$instance"}',
        "gpu_memory_total_bytes": (
            '(DCGM_FI_DEV_FB_FREE{instance=~"$instance"} + DCGM_FI_DEV_FB_USED{instance=~"$instance"}) * 1048576'
        ),
        "gpu_memory_free_bytes": 'DCGM_FI_DEV_FB_FREE{instance=~"$instance"} * 1048576',
        "gpu_temperature_celsius": 'DCGM_FI_DEV_GPU_TEMP{instance=~"$instance"}',
    },
}

HOST_ONLY = {
    "cgroup_memory_usage_bytes",
    "cgroup_memory_limit_bytes",
    "cgroup_memory_reclaimable_bytes",
    "cgroup_memory_swap_bytes",
    "cgroup_memory_swap_limit_bytes",
}


def build_queries(preset: str, overrides: dict[str, str], instance: str, domain: str) -> dict[str, str]:
    """The effective query per signal with $instance/$cgroup filled in; cgroup queries only for a cgroup domain."""
    queries = {**PRESETS[preset], **overrides}
    result = {}
    for key, query in queries.items():
        if key in HOST_ONLY and domain == "host":
            continue
        result[key] = query.replace("$instance", instance or ".*").replace("$cgroup", domain)
    return result


def normalise(key: str, labels: dict[str, str], domain: str) -> dict[str, str]:
    """Labels as headroom's exporter would write them (dcgm's UUID, the queried cgroup, PSI's window)."""
    labels = dict(labels)
    if "UUID" in labels:
        labels["uuid"] = labels["UUID"]
    if key.startswith("cgroup_"):
        labels["cgroup"] = domain
    if key == "pressure_memory_ratio":
        labels.setdefault("kind", "full")
        labels.setdefault("window", "10s")
    return labels


def samples_from_results(results: dict[str, list[dict]], domain: str) -> Samples:
    """Query API vector results per key -> the Samples structure the exporter parser produces."""
    samples: Samples = defaultdict(list)
    for key, vector in results.items():
        for item in vector:
            samples[key].append((normalise(key, item.get("metric", {}), domain), float(item["value"][1])))
    return samples


class PrometheusSource:
    """Runs each configured instant query; a failure of any memory query makes the Snapshot not ok."""

    def __init__(
        self,
        base_url: str,
        queries: dict[str, str],
        domain: str,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.queries, self.domain, self.clock = queries, domain, clock
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)

    def _query(self, promql: str) -> list[dict]:
        response = self.client.get("/api/v1/query", params={"query": promql})
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(body.get("error", "query failed"))
        return body["data"]["result"]

    def fetch(self) -> Snapshot:
        now = self.clock()
        try:
            results = {key: self._query(q) for key, q in self.queries.items()}
        except (httpx.HTTPError, ValueError, KeyError) as err:
            return Snapshot(
                taken_at=now, ok=False, error=f"prometheus: {type(err).__name__}: {err}", domain=self.domain
            )
        samples = samples_from_results(results, self.domain)
        total, available, error = domain_memory(samples, self.domain)
        return Snapshot(
            taken_at=now,
            ok=error is None,
            error=error,
            domain=self.domain,
            ram_total_bytes=total,
            ram_available_bytes=available,
            swap_in_bytes_total=one(samples, "swap_in_bytes_total"),
            swap_free_bytes=domain_swap(samples, self.domain),
            psi_full_ratio=one(samples, "pressure_memory_ratio", kind="full"),
            oom_kills_total=one(samples, "oom_kills_total"),
            gpus=gpus_from(samples),
        )

    def close(self) -> None:
        self.client.close()
