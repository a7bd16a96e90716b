"""The only door to NVML (the `pynvml` module of nvidia-ml-py): lazy init, one query helper, no driver = no GPUs."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("headroom.exporter.nvml")
RETRY_INIT_SECONDS = 300.0
# NVML error codes (nvml.h); the module's own constants are used when it has them.
_NOT_SUPPORTED, _FUNCTION_NOT_FOUND, _NOT_FOUND = 3, 13, 6


@dataclass
class GpuReading:
    index: int
    uuid: str
    name: str
    pci_bus: str  # "0000:3b:00", matching the driver's Xid lines
    total_bytes: int | None = None
    used_bytes: int | None = None
    free_bytes: int | None = None
    reserved_bytes: int | None = None  # only from nvmlDeviceGetMemoryInfo_v2
    utilization_ratio: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, used GPU bytes)


def short_bus_id(bus_id: str) -> str:
    """'00000000:3B:00.0' -> '0000:3b:00' (the form NVRM Xid lines use)."""
    text = bus_id.lower()
    domain, _, rest = text.partition(":")
    return f"{domain[-4:]}:{rest.rsplit('.', 1)[0]}" if rest else text


class Nvml:
    """Wraps the NVML module; every failure of one query is contained, optional functions probed once."""

    def __init__(self, module_name: str = "pynvml"):
        self.module_name = module_name
        self.nv = None
        self.driver = ""
        self._unsupported: set[tuple[str, int | None]] = set()  # (function, GPU index): probed once per GPU
        self._next_init = 0.0
        self._lock = threading.Lock()

    def _init(self) -> bool:
        if self.nv is not None:
            return True
        if time.monotonic() < self._next_init:
            return False
        self._next_init = time.monotonic() + RETRY_INIT_SECONDS
        try:
            module = importlib.import_module(self.module_name)
        except ImportError as err:
            log.warning("NVML module %s cannot be imported (%s): no GPU metrics", self.module_name, err)
            return False
        try:
            module.nvmlInit()
        except module.NVMLError as err:
            log.warning("no NVIDIA driver (NVML: %s): reporting zero GPUs", err)
            return False
        self.nv = module
        self.driver = str(self.query("nvmlSystemGetDriverVersion", default=""))
        return True

    def query(self, function: str, *args, default=None, gpu: int | None = None):
        """module.function(*args); `default` when unsupported on GPU `gpu` or the driver (remembered, not retried)."""
        key = (function, gpu)
        if key in self._unsupported or (function, None) in self._unsupported:
            return default
        try:
            return getattr(self.nv, function)(*args)
        except AttributeError:  # the installed nvidia-ml-py does not have it: no GPU will
            self._unsupported.add((function, None))
            return default
        except self.nv.NVMLError as err:
            if err.value in (
                getattr(self.nv, "NVML_ERROR_NOT_SUPPORTED", _NOT_SUPPORTED),
                getattr(self.nv, "NVML_ERROR_FUNCTION_NOT_FOUND", _FUNCTION_NOT_FOUND),
            ):
                self._unsupported.add(key)
                return default
            if err.value == getattr(self.nv, "NVML_ERROR_NOT_FOUND", _NOT_FOUND):
                return default
            raise

    def read(self) -> list[GpuReading]:
        """One reading per GPU; [] when there is no driver."""
        with self._lock:
            if not self._init():
                return []
            return [self._read_device(index) for index in range(self.nv.nvmlDeviceGetCount())]

    def read_memory(self) -> list[GpuReading]:
        """Memory and per-process use only, for fast polling (the guard's GPU freezer); [] when there is no driver."""
        with self._lock:
            if not self._init():
                return []
            readings = []
            for index in range(self.nv.nvmlDeviceGetCount()):
                handle = self.nv.nvmlDeviceGetHandleByIndex(index)
                reading = GpuReading(index=index, uuid="", name="", pci_bus="")
                self._read_memory(handle, reading)
                reading.processes = self._processes(handle, index)
                readings.append(reading)
            return readings

    def _read_device(self, index: int) -> GpuReading:
        handle = self.nv.nvmlDeviceGetHandleByIndex(index)
        pci = self.query("nvmlDeviceGetPciInfo", handle, gpu=index)
        reading = GpuReading(
            index=index,
            uuid=str(self.query("nvmlDeviceGetUUID", handle, default="", gpu=index)),
            name=str(self.query("nvmlDeviceGetName", handle, default="", gpu=index)),
            pci_bus=short_bus_id(str(pci.busId)) if pci is not None else "",
        )
        self._read_memory(handle, reading)
        util = self.query("nvmlDeviceGetUtilizationRates", handle, gpu=index)
        reading.utilization_ratio = util.gpu / 100 if util is not None else None
        reading.temperature_celsius = self.query(
            "nvmlDeviceGetTemperature", handle, getattr(self.nv, "NVML_TEMPERATURE_GPU", 0), gpu=index
        )
        power_mw = self.query("nvmlDeviceGetPowerUsage", handle, gpu=index)
        reading.power_watts = power_mw / 1000 if power_mw is not None else None
        reading.processes = self._processes(handle, index)
        return reading

    def _read_memory(self, handle, reading: GpuReading) -> None:
        gpu = reading.index
        v2 = getattr(self.nv, "nvmlMemory_v2", None)
        memory = self.query("nvmlDeviceGetMemoryInfo", handle, v2, gpu=gpu) if v2 is not None else None
        if memory is None:
            memory = self.query("nvmlDeviceGetMemoryInfo", handle, gpu=gpu)
        if memory is None:
            return
        reading.total_bytes, reading.used_bytes, reading.free_bytes = (
            int(memory.total),
            int(memory.used),
            int(memory.free),
        )
        reading.reserved_bytes = int(memory.reserved) if hasattr(memory, "reserved") else None

    def _processes(self, handle, gpu: int) -> list[tuple[int, int]]:
        used: dict[int, int] = {}
        for function in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            for proc in self.query(function, handle, default=[], gpu=gpu) or []:
                amount = proc.usedGpuMemory
                if amount is None or amount >= 2**63:  # NVML_VALUE_NOT_AVAILABLE (e.g. no permission, WDDM)
                    continue
                used[int(proc.pid)] = max(used.get(int(proc.pid), 0), int(amount))
        return sorted(used.items())
