"""A stand-in for the :mod:`pynvml` module (nvidia-ml-py) for machines without a GPU.

It implements the few NVML functions the agent daemon calls (``agents.daemon.discovery.GpuProbe``
takes it as ``nvml=``), over GPUs described as dicts, and raises the same kinds of errors
(``NVMLError``, ``NVMLError_LibraryNotFound``, ``NVMLError_DriverNotLoaded``).
"""
from __future__ import annotations

from types import SimpleNamespace


class FakeNVMLError(Exception):
    pass


class FakeLibraryNotFound(FakeNVMLError):
    pass


class FakeDriverNotLoaded(FakeNVMLError):
    pass


class FakeNVML:
    """Implements the few pynvml functions the daemon calls, for ``gpus`` described as dicts
    (``{"uuid", "name", "memory", "bus_id", "used", "util"}``; ``"broken": True`` makes its
    utilisation query fail as a lost GPU does)."""

    NVMLError = FakeNVMLError
    NVMLError_LibraryNotFound = FakeLibraryNotFound
    NVMLError_DriverNotLoaded = FakeDriverNotLoaded

    def __init__(self, gpus=(), init_error: Exception | None = None, driver=b"550.54.15", cuda=12040):
        self.gpus = list(gpus)
        self.init_error = init_error
        self.driver = driver
        self.cuda = cuda
        self.initialised = 0
        self.shutdowns = 0

    def nvmlInit(self):
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle):
        return handle["uuid"]

    def nvmlDeviceGetName(self, handle):
        return handle["name"]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=handle["memory"], used=handle.get("used", 0), free=0)

    def nvmlDeviceGetPciInfo(self, handle):
        return SimpleNamespace(busId=handle["bus_id"])

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self):
        return self.cuda

    def nvmlDeviceGetUtilizationRates(self, handle):
        if handle.get("broken"):
            raise FakeNVMLError("GPU is lost")
        return SimpleNamespace(gpu=handle.get("util", 0), memory=0)


TWO_GPUS = [
    {"uuid": "GPU-aaaa-0000", "name": b"NVIDIA H100 80GB HBM3", "memory": 85520809984,
     "bus_id": b"00000000:19:00.0", "used": 1048576, "util": 3},
    {"uuid": "GPU-bbbb-1111", "name": "NVIDIA H100 80GB HBM3", "memory": 85520809984,
     "bus_id": "00000000:3B:00.0", "used": 2048, "util": 97},
]
