"""A stand-in for the `pynvml` module (nvidia-ml-py) at the hardware boundary, for machines without a GPU.

It mirrors the real module's surface that headroom uses: the same function names and signatures, the
NVMLError class whose constructor maps an error code to a subclass (NVMLError_NotSupported, ...), calls
before nvmlInit raising NVMLError_Uninitialized, and nvmlInit raising NVMLError_LibraryNotFound when the
scenario has no driver. The scenario is JSON at $HEADROOM_FAKE_NVML (see tests/fixtures/golden/nvml.json);
a value of null for power/temperature/utilization makes that query raise NVMLError_NotSupported.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_TEMPERATURE_GPU = 0
nvmlMemory_v2 = 33554472  # sizeof(c_nvmlMemory_v2_t) | (2 << 24), as the real module defines it

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    _valClassMapping: dict[int, type] = {}

    def __new__(cls, value):
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value):
        super().__init__(value)

    def __str__(self):
        return _MESSAGES.get(self.value, f"Unknown Error {self.value}")


def _error_class(name: str, code: int) -> type:
    cls = type(f"NVMLError_{name}", (NVMLError,), {"__new__": lambda c, v=code: Exception.__new__(c)})

    def init(self, value=code):
        Exception.__init__(self, value)
        self.value = code

    cls.__init__ = init
    NVMLError._valClassMapping[code] = cls
    return cls


NVMLError_Uninitialized = _error_class("Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_InvalidArgument = _error_class("InvalidArgument", NVML_ERROR_INVALID_ARGUMENT)
NVMLError_NotSupported = _error_class("NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NotFound = _error_class("NotFound", NVML_ERROR_NOT_FOUND)
NVMLError_DriverNotLoaded = _error_class("DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_LibraryNotFound = _error_class("LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _error_class("FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_GpuIsLost = _error_class("GpuIsLost", NVML_ERROR_GPU_IS_LOST)

_state: dict = {"scenario": None}


def _scenario() -> dict:
    if _state["scenario"] is None:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return _state["scenario"]


def _gpu(handle) -> dict:
    gpus = _scenario()["gpus"]
    if not isinstance(handle, int) or not 0 <= handle < len(gpus):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return gpus[handle]


def _field(handle, key):
    value = _gpu(handle).get(key)
    if value is None:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return value


def nvmlInit():
    path = os.environ.get("HEADROOM_FAKE_NVML")
    scenario = json.loads(open(path).read()) if path else {"driver": None}
    if scenario.get("driver") is None:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    _state["scenario"] = scenario


def nvmlShutdown():
    _scenario()
    _state["scenario"] = None


def nvmlSystemGetDriverVersion():
    return _scenario()["driver"]


def nvmlDeviceGetCount():
    return len(_scenario()["gpus"])


def nvmlDeviceGetHandleByIndex(index):
    _gpu(index)
    return index


def nvmlDeviceGetUUID(handle):
    return _field(handle, "uuid")


def nvmlDeviceGetName(handle):
    return _field(handle, "name")


def nvmlDeviceGetPciInfo(handle):
    return SimpleNamespace(busId=_field(handle, "bus_id"))


def nvmlDeviceGetMemoryInfo(handle, version=None):
    memory = dict(_field(handle, "memory"))
    if not version:
        memory.pop("reserved", None)  # the v1 struct has no reserved field
    return SimpleNamespace(**memory)


def nvmlDeviceGetUtilizationRates(handle):
    return SimpleNamespace(gpu=_field(handle, "utilization"), memory=0)


def nvmlDeviceGetTemperature(handle, sensor):
    if sensor != NVML_TEMPERATURE_GPU:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _field(handle, "temperature")


def nvmlDeviceGetPowerUsage(handle):
    return _field(handle, "power_mw")


def _procs(handle, key):
    return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p["used"], gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF) for p in _gpu(handle).get(key, [])]


def nvmlDeviceGetComputeRunningProcesses(handle):
    return _procs(handle, "compute")


def nvmlDeviceGetGraphicsRunningProcesses(handle):
    return _procs(handle, "graphics")
