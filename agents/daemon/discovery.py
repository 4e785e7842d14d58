"""What this node offers: CPUs, memory and CUDA GPUs, plus live host/GPU statistics.

* CPUs: the scheduler affinity mask, capped by the cgroup CPU quota
  (v2 ``cpu.max``; v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).
* Memory: ``MemTotal`` from ``/proc/meminfo``, capped by the cgroup memory
  limit (v2 ``memory.max``; v1 ``memory.limit_in_bytes``).
* GPUs: NVML through an injectable object (the real :mod:`pynvml` module by
  default), so tests can hand in a fake.  No library, no driver, an NVML error
  or zero devices simply means "no ``cuda.device`` slot" (one debug line).
  ``GpuProbe.readings`` samples every offered GPU once; the agent's ``stats.devices``
  and each kernel's ``cuda_util``/``cuda_mem`` (``kernel_gpu_stats``, over the GPUs the
  kernel is bound to) come from the same sample.

Every file system location is a parameter so tests can point the functions at
fake trees.  Cgroup limits are looked up along the process's cgroup path and
all its ancestors (a parent's limit applies to its children).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from agents.protocol import format_count

__all__ = [
    "CudaInfo", "GpuDevice", "GpuProbe", "GpuReading", "HostStats", "Resources", "cgroup_cpu_limit",
    "cgroup_memory_limit", "cpu_capacity", "discover", "kernel_gpu_stats", "memory_capacity", "read_meminfo",
]

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
MEMINFO = Path("/proc/meminfo")
PCI_ROOT = Path("/sys/bus/pci/devices")
#: cgroup v1 reports "no limit" as a huge page-aligned number; anything above this is unlimited.
_UNLIMITED_BYTES = 1 << 60


# -- cgroups ------------------------------------------------------------------------------------

def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _self_cgroups(self_cgroup: Path) -> dict[str, str]:
    """``/proc/self/cgroup`` as {controller: path}; the v2 entry is under ``""``."""
    result: dict[str, str] = {}
    for line in (_read(self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            result[""] = path
        for controller in controllers.split(","):
            if controller:
                result[controller] = path
    return result


def _lineage(base: Path, rel: str | None) -> list[Path]:
    """The cgroup directory for ``rel`` under ``base`` and its ancestors, deepest first.

    Inside a container the cgroup namespace often makes the path in
    ``/proc/self/cgroup`` meaningless under the mount; then only ``base`` counts.
    """
    dirs = []
    if rel and rel.strip("/"):
        current = base / rel.strip("/")
        if current.is_dir():
            while current != base and base in current.parents:
                dirs.append(current)
                current = current.parent
    dirs.append(base)
    return dirs


def _is_v2(cgroup_root: Path) -> bool:
    return (cgroup_root / "cgroup.controllers").exists()


def _v1_dir(cgroup_root: Path, controller: str) -> Path | None:
    for name in (controller, f"{controller},cpuacct", f"cpuacct,{controller}"):
        candidate = cgroup_root / name
        if candidate.is_dir():
            return candidate
    return None


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> Decimal | None:
    """The CPU quota as a number of cores (``Decimal("1.5")``), or ``None`` when unlimited."""
    groups = _self_cgroups(self_cgroup)
    limits: list[Decimal] = []
    if _is_v2(cgroup_root):
        for directory in _lineage(cgroup_root, groups.get("")):
            text = _read(directory / "cpu.max")
            if not text:
                continue
            quota, _, period = text.partition(" ")
            if quota != "max":
                try:
                    limits.append(Decimal(int(quota)) / Decimal(int(period or "100000")))
                except (ValueError, ArithmeticError):
                    log.debug("unreadable %s: %r", directory / "cpu.max", text)
    else:
        base = _v1_dir(cgroup_root, "cpu")
        if base is not None:
            for directory in _lineage(base, groups.get("cpu")):
                quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
                try:
                    if quota is not None and int(quota) > 0 and period and int(period) > 0:
                        limits.append(Decimal(int(quota)) / Decimal(int(period)))
                except ValueError:
                    log.debug("unreadable CFS quota under %s", directory)
    return min(limits) if limits else None


def cgroup_memory_limit(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int | None:
    """The memory limit in bytes, or ``None`` when unlimited."""
    groups = _self_cgroups(self_cgroup)
    limits: list[int] = []
    if _is_v2(cgroup_root):
        dirs, name = _lineage(cgroup_root, groups.get("")), "memory.max"
    else:
        base = _v1_dir(cgroup_root, "memory")
        dirs, name = (_lineage(base, groups.get("memory")) if base else []), "memory.limit_in_bytes"
    for directory in dirs:
        text = _read(directory / name)
        if not text or text == "max":
            continue
        try:
            value = int(text)
        except ValueError:
            log.debug("unreadable %s: %r", directory / name, text)
            continue
        if 0 < value < _UNLIMITED_BYTES:
            limits.append(value)
    return min(limits) if limits else None


def read_meminfo(meminfo: Path = MEMINFO) -> dict[str, int]:
    """``/proc/meminfo`` in bytes."""
    result = {}
    for line in (_read(meminfo) or "").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            result[key.strip()] = int(fields[0]) * (1024 if len(fields) > 1 and fields[1] == "kB" else 1)
    return result


def cpu_capacity(affinity: Iterable[int] | None = None, cgroup_root: Path = CGROUP_ROOT,
                 self_cgroup: Path = SELF_CGROUP) -> Decimal:
    """CPU cores this process may use: the affinity mask, capped by the cgroup quota."""
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            affinity = range(os.cpu_count() or 1)
    count = Decimal(len(set(affinity)))
    quota = cgroup_cpu_limit(cgroup_root, self_cgroup)
    return min(count, quota) if quota is not None else count


def memory_capacity(meminfo: Path = MEMINFO, cgroup_root: Path = CGROUP_ROOT,
                    self_cgroup: Path = SELF_CGROUP) -> int:
    """Bytes of memory this process may use: ``MemTotal`` capped by the cgroup limit."""
    total = read_meminfo(meminfo).get("MemTotal", 0)
    limit = cgroup_memory_limit(cgroup_root, self_cgroup)
    return min(total, limit) if limit is not None and total else (limit or total)


# -- GPUs ---------------------------------------------------------------------------------------

@dataclass
class GpuDevice:
    """One CUDA GPU offered as a ``cuda.device``."""

    index: int
    uuid: str
    model: str
    memory: int
    bus_id: str | None = None
    numa_node: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"slot": "cuda.device", "id": str(self.index), "uuid": self.uuid, "model": self.model,
                "memory": self.memory, "numa_node": self.numa_node, "bus_id": self.bus_id}


@dataclass(frozen=True)
class GpuReading:
    """One GPU's utilisation (percent, 0..100) and used memory (bytes) at one moment."""

    index: int
    uuid: str
    util: int
    mem_used: int

    def to_wire(self) -> dict[str, str]:
        return {"id": str(self.index), "util": str(self.util), "mem_used": str(self.mem_used)}


def kernel_gpu_stats(readings: Iterable[GpuReading], bound: Iterable[str]) -> dict[str, str]:
    """A kernel's GPU figures from the readings of the GPUs it is bound to (``bound``: their UUIDs):
    ``cuda_util``, the mean utilisation in percent over those GPUs, and ``cuda_mem``, the bytes used
    on them.  ``{}`` for a kernel bound to no GPU, or when a bound GPU has no reading (a partial
    figure would mislead)."""
    uuids = list(dict.fromkeys(u.lower() for u in bound if u))
    if not uuids:
        return {}
    by_uuid = {r.uuid.lower(): r for r in readings}
    found = [by_uuid[u] for u in uuids if u in by_uuid]
    if len(found) != len(uuids):
        log.debug("no reading for GPU(s) %s: no GPU figures for this kernel", sorted(set(uuids) - set(by_uuid)))
        return {}
    mean = Decimal(sum(r.util for r in found)) / len(found)
    return {"cuda_util": format_count(mean.quantize(Decimal("0.1"))), "cuda_mem": str(sum(r.mem_used for r in found))}


@dataclass
class CudaInfo:
    driver_version: str | None
    cuda_version: str | None
    nvml_version: str | None
    devices: list[GpuDevice] = field(default_factory=list)

    def plugin(self) -> dict[str, Any]:
        return {"driver_version": self.driver_version, "cuda_version": self.cuda_version,
                "nvml_version": self.nvml_version}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _cuda_version(value: Any) -> str | None:
    """NVML's CUDA driver version integer (12040) as ``"12.4"``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return f"{number // 1000}.{(number % 1000) // 10}"


def _sysfs_bus_id(bus_id: str) -> str:
    """NVML's ``00000000:19:00.0`` as sysfs names it (``0000:19:00.0``)."""
    domain, _, rest = bus_id.lower().partition(":")
    return f"{domain[-4:].rjust(4, '0')}:{rest}" if rest else bus_id.lower()


class GpuProbe:
    """NVML access for discovery and statistics.

    ``nvml`` is anything shaped like the :mod:`pynvml` module (the default); the
    probe keeps NVML initialised between :meth:`discover` and :meth:`close`.
    ``mask`` restricts the offered devices to these indices or UUIDs.
    """

    def __init__(self, nvml: Any = None, mask: Sequence[str] | None = None, pci_root: Path = PCI_ROOT):
        self._nvml = nvml
        self._mask = tuple(m.strip().lower() for m in mask) if mask else None
        self._pci_root = pci_root
        self._initialised = False
        self._lock = threading.Lock()
        self.info: CudaInfo | None = None

    def _module(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml  # noqa: PLC0415 - optional at run time
            except ImportError:
                log.debug("nvidia-ml-py is not installed: no CUDA devices")
                return None
            self._nvml = pynvml
        return self._nvml

    def _errors(self, nvml: Any) -> tuple[type[BaseException], ...]:
        error = getattr(nvml, "NVMLError", None)
        return (error,) if isinstance(error, type) and issubclass(error, BaseException) else (OSError,)

    def _is_absent(self, nvml: Any, exc: BaseException) -> bool:
        absent = tuple(t for t in (getattr(nvml, "NVMLError_LibraryNotFound", None),
                                   getattr(nvml, "NVMLError_DriverNotLoaded", None)) if isinstance(t, type))
        return bool(absent) and isinstance(exc, absent)

    def _selected(self, index: int, uuid: str) -> bool:
        return self._mask is None or str(index) in self._mask or uuid.lower() in self._mask

    def discover(self) -> CudaInfo | None:
        """Initialise NVML and list the offered GPUs; ``None`` when there are none."""
        nvml = self._module()
        if nvml is None:
            return None
        errors = self._errors(nvml)
        with self._lock:
            try:
                nvml.nvmlInit()
                self._initialised = True
            except errors as exc:
                if self._is_absent(nvml, exc):
                    log.debug("no NVIDIA driver/library (%s): no CUDA devices", exc)
                else:
                    log.debug("NVML initialisation failed (%s): no CUDA devices", exc)
                return None
            try:
                info = self._read_devices(nvml)
            except errors as exc:
                log.debug("NVML query failed (%s): no CUDA devices", exc)
                self._shutdown_locked(nvml)
                return None
            if not info.devices:
                log.debug("NVML reports no usable devices: no CUDA devices")
                self._shutdown_locked(nvml)
                return None
            self.info = info
            return info

    def _read_devices(self, nvml: Any) -> CudaInfo:
        errors = self._errors(nvml)

        def optional(fn_name: str, *args: Any) -> Any:
            fn = getattr(nvml, fn_name, None)
            if fn is None:
                return None
            try:
                return fn(*args)
            except errors:
                return None

        driver = optional("nvmlSystemGetDriverVersion")
        cuda = optional("nvmlSystemGetCudaDriverVersion")
        nvml_version = optional("nvmlSystemGetNVMLVersion")
        info = CudaInfo(driver_version=_text(driver) if driver is not None else None,
                        cuda_version=_cuda_version(cuda),
                        nvml_version=_text(nvml_version) if nvml_version is not None else None)
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            if not self._selected(index, uuid):
                log.debug("GPU %d (%s) is masked out", index, uuid)
                continue
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            pci = optional("nvmlDeviceGetPciInfo", handle)
            bus_id = (_text(getattr(pci, "busId", "")) or None) if pci is not None else None
            numa = optional("nvmlDeviceGetNumaNodeId", handle)
            if numa is None and bus_id:
                text = _read(self._pci_root / _sysfs_bus_id(bus_id) / "numa_node")
                numa = int(text) if text and text.lstrip("-").isdigit() else None
            info.devices.append(GpuDevice(
                index=index, uuid=uuid, model=_text(nvml.nvmlDeviceGetName(handle)),
                memory=int(memory.total), bus_id=bus_id,
                numa_node=int(numa) if numa is not None and int(numa) >= 0 else None,
            ))
        return info

    def readings(self) -> list[GpuReading]:
        """One NVML reading per offered GPU (a GPU whose query fails is left out, with a debug line)."""
        if self.info is None:
            return []
        nvml = self._module()
        errors = self._errors(nvml)
        result = []
        with self._lock:
            for device in self.info.devices:
                try:
                    handle = nvml.nvmlDeviceGetHandleByIndex(device.index)
                    util = nvml.nvmlDeviceGetUtilizationRates(handle)
                    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                except errors as exc:
                    log.debug("NVML stats for GPU %d failed: %s", device.index, exc)
                    continue
                result.append(GpuReading(index=device.index, uuid=device.uuid, util=int(util.gpu),
                                         mem_used=int(memory.used)))
        return result

    def stats(self) -> list[dict[str, str]]:
        """Utilisation (%) and used memory (bytes) of each offered GPU (the agent's ``stats.devices``)."""
        return [r.to_wire() for r in self.readings()]

    def _shutdown_locked(self, nvml: Any) -> None:
        if self._initialised:
            try:
                nvml.nvmlShutdown()
            except self._errors(nvml) as exc:
                log.debug("nvmlShutdown failed: %s", exc)
            self._initialised = False

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                self._shutdown_locked(self._nvml)
            self.info = None


# -- the whole node -----------------------------------------------------------------------------

@dataclass
class Resources:
    """The capacity an agent offers (after reservations and caps)."""

    cpu: Decimal
    mem: int
    cuda: CudaInfo | None = None
    detected_cpu: Decimal | None = None
    detected_mem: int | None = None

    def capacity(self) -> dict[str, str]:
        slots = {"cpu": format_count(self.cpu), "mem": str(self.mem)}
        if self.cuda and self.cuda.devices:
            slots["cuda.device"] = str(len(self.cuda.devices))
        return slots

    def slot_types(self) -> dict[str, str]:
        types = {"cpu": "count", "mem": "bytes"}
        if self.cuda and self.cuda.devices:
            types["cuda.device"] = "count"
        return types

    def compute_plugins(self) -> dict[str, Any]:
        return {"cuda": self.cuda.plugin()} if self.cuda and self.cuda.devices else {}

    def devices(self) -> list[dict[str, Any]]:
        return [d.to_wire() for d in self.cuda.devices] if self.cuda else []

    def to_json(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity(), "slot_types": self.slot_types(),
            "compute_plugins": self.compute_plugins(), "devices": self.devices(),
            "detected": {"cpu": format_count(self.detected_cpu or self.cpu), "mem": str(self.detected_mem or self.mem)},
        }


def discover(*, reserved_cpu: Decimal = Decimal(0), reserved_mem: int = 0, cpu_limit: Decimal | None = None,
             mem_limit: int | None = None, gpu_probe: GpuProbe | None = None, affinity: Iterable[int] | None = None,
             cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP, meminfo: Path = MEMINFO) -> Resources:
    """Discover the node and apply reservations (subtracted) and limits (caps)."""
    detected_cpu = cpu_capacity(affinity, cgroup_root, self_cgroup)
    detected_mem = memory_capacity(meminfo, cgroup_root, self_cgroup)
    cpu = detected_cpu - reserved_cpu
    if cpu_limit is not None:
        cpu = min(cpu, cpu_limit)
    mem = detected_mem - reserved_mem
    if mem_limit is not None:
        mem = min(mem, mem_limit)
    if cpu <= 0 or mem <= 0:
        log.warning("reservations leave nothing to offer (cpu %s of %s, mem %s of %s)",
                    cpu, detected_cpu, mem, detected_mem)
    cpu = max(cpu, Decimal(0)).quantize(Decimal("0.001"), rounding=ROUND_FLOOR)
    cuda = gpu_probe.discover() if gpu_probe is not None else None
    return Resources(cpu=cpu, mem=max(mem, 0), cuda=cuda, detected_cpu=detected_cpu, detected_mem=detected_mem)


class HostStats:
    """Host-wide CPU utilisation (percent of one core, so up to 100 x cores) and used memory."""

    def __init__(self, proc_stat: Path = Path("/proc/stat"), meminfo: Path = MEMINFO):
        self._proc_stat = proc_stat
        self._meminfo = meminfo
        self._last: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def _sample(self) -> tuple[int, int, int] | None:
        text = _read(self._proc_stat) or ""
        ncpu = 0
        totals = None
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] == "cpu":
                values = [int(v) for v in fields[1:]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)
                totals = (sum(values[:8]), idle)
            elif fields and fields[0].startswith("cpu"):
                ncpu += 1
        if totals is None:
            return None
        return totals[0], totals[1], max(ncpu, 1)

    def snapshot(self) -> dict[str, str]:
        sample = self._sample()
        util = Decimal(0)
        with self._lock:
            if sample is not None:
                total, idle, ncpu = sample
                if self._last is not None and total > self._last[0]:
                    busy = (total - self._last[0]) - (idle - self._last[1])
                    util = Decimal(max(busy, 0) * 100 * ncpu) / Decimal(total - self._last[0])
                self._last = (total, idle)
        info = read_meminfo(self._meminfo)
        used = info.get("MemTotal", 0) - info.get("MemAvailable", info.get("MemFree", 0))
        return {"cpu_util": format_count(util.quantize(Decimal("0.1"))), "mem_used": str(max(used, 0))}
