"""The interface every kernel backend implements, and what they share."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..discovery import GpuDevice
from ..kernel import REASON_LIMIT, KernelSpec, KernelState
from ..ports import PortPool

__all__ = ["Backend", "BackendSettings", "EmitFn", "KernelError", "choose_gpus"]

#: Called with each state a kernel moves through while it is being created.
EmitFn = Callable[[KernelState], None]


def _ignore(_state: KernelState) -> None:
    return None


class KernelError(Exception):
    """A kernel could not be created; ``reason`` is a short slug, ``detail`` the explanation."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason[:REASON_LIMIT]
        self.detail = detail


@dataclass
class BackendSettings:
    """What a backend needs from the agent's configuration."""

    agent_id: str
    scratch_root: Path
    host_address: str = "127.0.0.1"
    kernel_host: str | None = "127.0.0.1"
    port_range: tuple[int, int] = (30000, 31000)
    stop_timeout: float = 10.0
    gpus: Sequence[GpuDevice] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: Any, gpus: Sequence[GpuDevice] = ()) -> BackendSettings:
        return cls(agent_id=config.agent_id, scratch_root=Path(config.scratch_root), host_address=config.host_address,
                   kernel_host=config.kernel_host, port_range=tuple(config.port_range),
                   stop_timeout=config.stop_timeout, gpus=list(gpus))


def choose_gpus(devices: Sequence[GpuDevice], used: Iterable[str], count: int) -> list[GpuDevice]:
    """``count`` offered GPUs whose UUIDs are not in ``used``; raises :class:`KernelError`."""
    if count <= 0:
        return []
    taken = set(used)
    free = [d for d in devices if d.uuid not in taken]
    if len(free) < count:
        raise KernelError("insufficient-cuda-devices", f"asked for {count} GPU(s), {len(free)} free of {len(devices)}")
    return free[:count]


class Backend(ABC):
    """Runs kernels on this node.  Every method is safe to call from several threads.

    The agent calls :meth:`adopt` once at start, then :meth:`list_kernels`,
    :meth:`stats` and :meth:`images` for every sync, :meth:`check_timeouts`
    periodically, and :meth:`create` / :meth:`stop` from worker threads.
    """

    name: ClassVar[str] = "base"

    def __init__(self, settings: BackendSettings):
        self.settings = settings
        self.ports = PortPool(settings.port_range[0], settings.port_range[1], settings.host_address)
        self.log = logging.getLogger(f"agents.daemon.backends.{self.name}")

    @abstractmethod
    def adopt(self) -> list[KernelState]:
        """Find the kernels a previous daemon left behind and take them over."""

    @abstractmethod
    def list_kernels(self) -> list[KernelState]:
        """Every kernel this agent has, in any status (including finished ones not cleaned up yet)."""

    @abstractmethod
    def create(self, spec: KernelSpec, emit: EmitFn = _ignore) -> KernelState:
        """Create and start a kernel (idempotent: an existing kernel id is returned as is).

        ``emit`` receives the intermediate states (``PULLING``, ``PREPARING``)
        and the final ``RUNNING`` one.  Raises :class:`KernelError`.
        """

    @abstractmethod
    def stop(self, kernel_id: str, reason: str) -> KernelState | None:
        """Stop and clean up a kernel; returns its final ``TERMINATED`` state (``None``: unknown kernel)."""

    @abstractmethod
    def restart(self, kernel_id: str) -> KernelState | None:
        """Stop and start the same kernel again (same container or working directory, same ports).

        Returns its new state (``None``: unknown kernel).  While it runs,
        :meth:`list_kernels` may show the kernel in passing states; the agent
        leaves restarting kernels out of its reports.
        """

    @abstractmethod
    def logs(self, kernel_id: str) -> str | None:
        """The last 64 KiB of the kernel's output."""

    @abstractmethod
    def stats(self) -> dict[str, dict[str, str]]:
        """Per running kernel: ``{"cpu_util": percent, "mem_used": bytes}`` as strings."""

    def images(self) -> list[dict[str, Any]]:
        """Images available locally (for the sync body)."""
        return []

    def check_timeouts(self) -> list[KernelState]:
        """Kill batch kernels that ran past their ``batch_timeout``; returns their new states."""
        return []

    def has_kernel(self, kernel_id: str) -> bool:
        return any(k.kernel_id == kernel_id for k in self.list_kernels())

    def close(self) -> None:
        """Release resources (connections); kernels keep running."""
