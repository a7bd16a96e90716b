"""The `gpu` collector: per-GPU memory, utilization, temperature, power, Xid errors and per-process memory."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from exporter.follower import KmsgFollower
from exporter.nvml import Nvml
from exporter.units import comm_of_pid, memory_cgroup_of_pid, unit_of_cgroup

_PER_GPU = (
    ("total_bytes", "headroom_gpu_memory_total_bytes", "GPU memory in total."),
    ("used_bytes", "headroom_gpu_memory_used_bytes", "GPU memory in use."),
    ("free_bytes", "headroom_gpu_memory_free_bytes", "GPU memory free for new allocations."),
    ("reserved_bytes", "headroom_gpu_memory_reserved_bytes", "GPU memory the driver reserves (NVML v2)."),
    ("utilization_ratio", "headroom_gpu_utilization_ratio", "Share of the last sample period a kernel ran (0..1)."),
    ("temperature_celsius", "headroom_gpu_temperature_celsius", "GPU core temperature."),
    ("power_watts", "headroom_gpu_power_watts", "GPU power draw."),
)


class GpuCollector:
    name = "gpu"

    def __init__(self, nvml: Nvml, procfs: Path, follower: KmsgFollower | None):
        self.nvml = nvml
        self.procfs = procfs
        self.follower = follower

    def collect(self):
        readings = self.nvml.read()
        yield GaugeMetricFamily("headroom_gpus", "GPUs NVML reports (0 without a driver).", value=len(readings))
        info = GaugeMetricFamily(
            "headroom_gpu_info", "GPU identity; value 1.", labels=["gpu", "uuid", "name", "driver"]
        )
        for r in readings:
            info.add_metric([str(r.index), r.uuid, r.name, self.nvml.driver], 1)
        yield info
        for attr, name, doc in _PER_GPU:
            family = GaugeMetricFamily(name, doc, labels=["gpu"])
            for r in readings:
                if getattr(r, attr) is not None:
                    family.add_metric([str(r.index)], getattr(r, attr))
            yield family
        yield self._processes(readings)
        yield from self._xid(readings)

    def _processes(self, readings) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "headroom_gpu_process_memory_bytes",
            "GPU memory used by a process, with its command and systemd unit.",
            labels=["gpu", "pid", "comm", "unit"],
        )
        for r in readings:
            for pid, used in r.processes:
                unit = unit_of_cgroup(memory_cgroup_of_pid(self.procfs, pid))
                family.add_metric([str(r.index), str(pid), comm_of_pid(self.procfs, pid), unit], used)
        return family

    def _xid(self, readings):
        if self.follower is None:
            return
        state = self.follower.snapshot()
        by_bus = {r.pci_bus: str(r.index) for r in readings}
        errors = CounterMetricFamily(
            "headroom_gpu_xid_errors",
            "NVIDIA Xid errors from the kernel log, by GPU and Xid code.",
            labels=["gpu", "xid"],
        )
        for (bus, xid), count in sorted(state.xid_counts.items()):
            errors.add_metric([by_bus.get(bus, bus), str(xid)], count)
        yield errors
        last = GaugeMetricFamily(
            "headroom_gpu_xid_last_timestamp_seconds", "Unix time of the last Xid error on the GPU.", labels=["gpu"]
        )
        for bus, when in sorted(state.xid_last.items()):
            last.add_metric([by_bus.get(bus, bus)], when)
        yield last
