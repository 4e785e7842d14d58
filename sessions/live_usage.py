"""Live resource usage of sessions, from what their agents last reported.

Each agent sync carries one ``stats`` entry per RUNNING kernel (``Kernel.last_stat``,
written by ``sessions.agent_sync``): ``{"cpu_util": "12.5", "mem_used": "1048576"}`` as
strings, where ``cpu_util`` is percent with 100 per core (as ``docker stats`` counts) and
``mem_used`` is bytes (without the page cache).  A kernel bound to GPUs also carries
``cuda_util`` (the mean utilisation in percent, 0..100, over the GPUs it is bound to) and
``cuda_mem`` (bytes used on them); these are read first.  For agents that do not report them
per kernel (older daemons), the agents' own GPU readings (``Agent.live_stat["devices"]
["cuda.device"]``, one ``{"id", "util", "mem_used"}`` per device) stand in for a kernel that
holds every GPU of its agent.

``session_usage(ids)`` answers, in one query for any number of sessions, a ``LiveUsage``
per session summed over its RUNNING kernels that reported; a session whose kernels have
not reported yet (or that does not run) gets ``LiveUsage()`` (all None), which
``templates/sessions/_usage.html`` shows as "waiting for the first report".
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from backendai.slots import humanize_binary_size
from sessions.lifecycle import KernelStatus
from sessions.models import Kernel

log = logging.getLogger(__name__)

GPU_DEVICE_SLOTS = ("cuda.device",)
GPU_SHARE_SLOTS = ("cuda.shares",)


@dataclass(frozen=True)
class LiveUsage:
    """One session's usage now.  CPU percentages count 100 per core: a session with 4 cores
    may use up to 400 %.  ``gpu_util`` is the mean utilisation (0..100 %) of the session's
    GPUs, each kernel weighted by the GPUs it holds; ``cpu_cores``/``gpu_devices`` are what
    it was given."""

    cpu_util: float | None = None  # percent of the allocated CPUs, 0..100*n
    mem_used: int | None = None  # bytes
    mem_limit: int | None = None  # bytes (allocated)
    gpu_util: float | None = None  # percent (0..100, the mean over its GPUs), None without GPU
    gpu_mem_used: int | None = None  # bytes used on its GPUs
    measured_at: datetime | None = None  # the oldest of the reporting agents' last syncs
    cpu_cores: float | None = None  # allocated cores of the reporting kernels
    gpu_devices: float | None = None  # allocated GPUs (devices or fractional shares)

    @property
    def reported(self) -> bool:
        return self.cpu_util is not None or self.mem_used is not None

    @property
    def mem_percent(self) -> float | None:
        if self.mem_used is None or not self.mem_limit:
            return None
        return self.mem_used / self.mem_limit * 100.0

    @property
    def mem_high(self) -> int | None:
        """Where the memory meter turns to a warning (90 % of the limit)."""
        return int(self.mem_limit * 0.9) if self.mem_limit else None

    @property
    def cpu_max(self) -> float:
        """The CPU meter's maximum (100 per allocated core)."""
        return 100.0 * (self.cpu_cores or 1)

    @property
    def cpu_percent(self) -> float | None:
        """CPU use as a share of the allocation (0..100)."""
        if self.cpu_util is None:
            return None
        return self.cpu_util / self.cpu_max * 100.0

    @property
    def cpu_cores_used(self) -> float | None:
        return None if self.cpu_util is None else self.cpu_util / 100.0

    @property
    def gpu_max(self) -> float:
        """The GPU meter's maximum (``gpu_util`` is a mean over the GPUs)."""
        return 100.0

    @property
    def has_gpu(self) -> bool:
        return self.gpu_util is not None or self.gpu_mem_used is not None or bool(self.gpu_devices)

    # -- text for people (templates/sessions/_usage.html) --
    @property
    def cpu_text(self) -> str:
        """``"1.3 of 4 cores (32 %)"``, or ``"12 %"`` without a known allocation."""
        if self.cpu_util is None:
            return "—"
        if not self.cpu_cores:
            return f"{_short(self.cpu_util)} %"
        return f"{_short(self.cpu_cores_used)} of {_short(self.cpu_cores)} cores ({_short(self.cpu_percent)} %)"

    @property
    def mem_text(self) -> str:
        """``"1.5 GiB of 4 GiB (37 %)"``."""
        if self.mem_used is None:
            return "—"
        used = humanize_binary_size(self.mem_used)
        if not self.mem_limit:
            return used
        return f"{used} of {humanize_binary_size(self.mem_limit)} ({_short(self.mem_percent)} %)"

    @property
    def gpu_text(self) -> str:
        """``"42 % of 2 GPUs · 3 GiB memory"`` (the mean utilisation, and the memory used on them)."""
        memory = f"{humanize_binary_size(self.gpu_mem_used)} memory" if self.gpu_mem_used is not None else None
        if self.gpu_util is None:
            return memory or ("not reported" if self.gpu_devices else "—")
        held = f" of {_short(self.gpu_devices)} GPU{'s' if self.gpu_devices != 1 else ''}" if self.gpu_devices else ""
        return f"{_short(self.gpu_util)} %{held}" + (f" · {memory}" if memory else "")


def _short(value: float | None) -> str:
    """12.0 -> "12", 1.25 -> "1.2", 0.04 -> "0"."""
    if value is None:
        return "—"
    if abs(value) >= 10:
        return str(round(value))
    return f"{value:.1f}".removesuffix(".0")


EMPTY = LiveUsage()


def _number(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return number if number.is_finite() and number >= 0 else None


def _slot_sum(slots: Any, names: Iterable[str]) -> Decimal:
    if not isinstance(slots, dict):
        return Decimal(0)
    return sum((_number(slots.get(name)) or Decimal(0) for name in names), Decimal(0))


def _agent_gpu(devices: Any, held: Decimal) -> tuple[Decimal | None, Decimal | None]:
    """For agents that report no per-kernel GPU figures: the mean utilisation and the summed used
    memory of the agent's GPU readings, when the kernel holds all of them (else ``(None, None)``:
    the manager does not know which of them are the kernel's)."""
    if not isinstance(devices, dict) or held <= 0:
        return None, None
    readings = devices.get("cuda.device")
    if not isinstance(readings, list) or not readings or Decimal(len(readings)) != held:
        return None, None
    if not all(isinstance(r, dict) for r in readings):
        return None, None
    utils = [_number(r.get("util")) for r in readings]
    mems = [_number(r.get("mem_used")) for r in readings]
    util = None if any(v is None for v in utils) else sum(utils, Decimal(0)) / len(utils)
    mem = None if any(v is None for v in mems) else sum(mems, Decimal(0))
    return util, mem


class _Sum:
    __slots__ = ("at", "cores", "cpu", "gpu_mem", "gpu_weight", "gpu_weighted", "gpus", "has_gpu", "limit", "mem")

    def __init__(self):
        self.cpu = self.mem = self.limit = self.cores = self.gpus = None
        self.gpu_weighted = self.gpu_weight = self.gpu_mem = None  # sum of mean x weight, of weights; GPU bytes
        self.has_gpu = False
        self.at = None

    @staticmethod
    def _add(total, value):
        if value is None:
            return total
        return value if total is None else total + value

    def add(self, stat: dict, slots: Any, heartbeat, devices: Any) -> None:
        cpu, mem = _number(stat.get("cpu_util")), _number(stat.get("mem_used"))
        if cpu is None and mem is None:
            return
        self.cpu = self._add(self.cpu, cpu)
        self.mem = self._add(self.mem, mem)
        memory = _slot_sum(slots, ("mem",))
        self.limit = self._add(self.limit, memory if memory > 0 else None)
        cores = _slot_sum(slots, ("cpu",))
        self.cores = self._add(self.cores, cores if cores > 0 else None)
        devices_held = _slot_sum(slots, GPU_DEVICE_SLOTS)
        gpus = devices_held + _slot_sum(slots, GPU_SHARE_SLOTS)
        reports_gpu = stat.get("cuda_util") is not None or stat.get("cuda_mem") is not None
        if gpus > 0 or reports_gpu:
            self.has_gpu = True
            self.gpus = self._add(self.gpus, gpus if gpus > 0 else None)
            if reports_gpu:  # the agent's own figures for this kernel's GPUs
                util, gpu_mem = _number(stat.get("cuda_util")), _number(stat.get("cuda_mem"))
            else:  # an older agent: its device readings, when the kernel holds them all
                util, gpu_mem = _agent_gpu(devices, devices_held)
            if util is not None:
                weight = gpus if gpus > 0 else Decimal(1)
                self.gpu_weighted = self._add(self.gpu_weighted, util * weight)
                self.gpu_weight = self._add(self.gpu_weight, weight)
            self.gpu_mem = self._add(self.gpu_mem, gpu_mem)
        if heartbeat is not None:
            self.at = heartbeat if self.at is None else min(self.at, heartbeat)

    def usage(self) -> LiveUsage:
        return LiveUsage(
            cpu_util=float(self.cpu) if self.cpu is not None else None,
            mem_used=int(self.mem) if self.mem is not None else None,
            mem_limit=int(self.limit) if self.limit is not None else None,
            gpu_util=(float(self.gpu_weighted / self.gpu_weight)
                      if self.has_gpu and self.gpu_weighted is not None and self.gpu_weight else None),
            gpu_mem_used=int(self.gpu_mem) if self.has_gpu and self.gpu_mem is not None else None,
            measured_at=self.at,
            cpu_cores=float(self.cores) if self.cores is not None else None,
            gpu_devices=float(self.gpus) if self.gpus is not None else None,
        )


def session_usage(session_ids: Iterable[uuid.UUID | str]) -> dict[uuid.UUID, LiveUsage]:
    """``{session id: LiveUsage}`` for every id asked (one query, whatever their number);
    sessions without a RUNNING kernel that reported get ``LiveUsage()``."""
    ids = []
    for value in session_ids:
        try:
            ids.append(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
        except (ValueError, TypeError, AttributeError):
            log.debug("session_usage: ignoring %r (not a session id)", value)
    if not ids:
        return {}
    sums: dict[uuid.UUID, _Sum] = {}
    rows = (Kernel.objects.filter(session_id__in=ids, status=KernelStatus.RUNNING, last_stat__isnull=False)
            .values_list("session_id", "last_stat", "occupied_slots", "agent__last_heartbeat",
                         "agent__live_stat__devices"))
    for session_id, stat, slots, heartbeat, devices in rows:
        if isinstance(stat, dict):
            sums.setdefault(session_id, _Sum()).add(stat, slots, heartbeat, devices)
    return {session_id: (sums[session_id].usage() if session_id in sums else EMPTY) for session_id in ids}


def kernel_usage(kernel: Kernel) -> LiveUsage:
    """One loaded kernel's usage from its own report (no query; without the agent's GPU readings or the time
    of its last sync); ``LiveUsage()`` unless it is RUNNING and reported."""
    if kernel.status != KernelStatus.RUNNING or not isinstance(kernel.last_stat, dict):
        return EMPTY
    total = _Sum()
    total.add(kernel.last_stat, kernel.occupied_slots, None, None)
    return total.usage()


def usage_of(session_id: uuid.UUID | str) -> LiveUsage:
    """One session's usage (``session_usage`` for one id)."""
    return next(iter(session_usage([session_id]).values()), EMPTY)
