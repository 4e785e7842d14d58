"""The interface every kernel backend implements, and what they share."""
from __future__ import annotations

import logging
import select
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..discovery import GpuDevice
from agents.protocol import REASON_LIMIT, KernelSpec, KernelState
from ..ports import PortPool

__all__ = ["Backend", "BackendSettings", "ChunksEndpoint", "EmitFn", "ExecProcess", "KernelError", "StreamEndpoint", "TcpEndpoint", "choose_gpus",
           "local_address"]

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
    runtime_python: str | None = None  # the local backend's code runtime (None: the agent's own Python)

    @classmethod
    def from_config(cls, config: Any, gpus: Sequence[GpuDevice] = ()) -> BackendSettings:
        return cls(agent_id=config.agent_id, scratch_root=Path(config.scratch_root), host_address=config.host_address,
                   kernel_host=config.kernel_host, port_range=tuple(config.port_range),
                   stop_timeout=config.stop_timeout, gpus=list(gpus),
                   runtime_python=str(config.runtime_python) if getattr(config, "runtime_python", None) else None)


def local_address(host: str | None) -> str:
    """Where this node reaches a port published on ``host`` (a wildcard address means loopback)."""
    if not host or host in ("0.0.0.0", "*"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host


class StreamEndpoint(ABC):
    """A byte stream into a kernel (a PTY or a TCP connection), used from two threads.

    One thread calls :meth:`read` in a loop, another :meth:`write`; any thread
    may call :meth:`resize` and :meth:`close`.  :meth:`close` ends the other
    side (kills the terminal's processes, closes the connection) and makes a
    blocked :meth:`read` return ``b""`` within a fraction of a second.
    """

    poll_interval = 0.25

    def __init__(self) -> None:
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _wait_readable(self, handle: Any) -> bool:
        """Wait until ``handle`` (a socket or a file descriptor) is readable; False once closed."""
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([handle], [], [], self.poll_interval)
            except (OSError, ValueError):  # closed under our feet
                return False
            if ready:
                return True
        return False

    @abstractmethod
    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes as soon as some are available; ``b""`` at the end or after :meth:`close`."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Write all of ``data`` (blocks while the kernel does not read); raises ``OSError`` once ended."""

    def resize(self, rows: int, cols: int) -> None:
        """Change the terminal size (nothing for TCP)."""

    def write_eof(self) -> None:
        """The manager sent everything (``stream.eof``): a request/response endpoint answers now."""

    @abstractmethod
    def close(self) -> None:
        """End the stream (idempotent)."""

    def exit_code(self) -> int | None:
        """The exit code of the terminal's process, once it ended (``None`` for TCP or unknown)."""
        return None


class TcpEndpoint(StreamEndpoint):
    """A TCP connection to a kernel's service port."""

    def __init__(self, sock: socket.socket):
        super().__init__()
        self.sock = sock
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def read(self, size: int) -> bytes:
        if not self._wait_readable(self.sock):
            return b""
        try:
            return self.sock.recv(size)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        if self.closed:
            raise OSError("the connection is closed")
        self.sock.sendall(data)

    def write_eof(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class ChunksEndpoint(StreamEndpoint):
    """A stream that only answers: ``chunks`` is produced lazily (in the reading thread) and sent in order.

    ``chunks`` is a callable returning an iterator of bytes; it starts on the
    first :meth:`read`, so an opener returns at once and slow work (a listing, a
    tar of a large directory) never holds up ``stream.opened``.  Data the
    manager sends is refused.  :meth:`close` stops between two chunks and
    closes the iterator (its ``finally`` clauses run).  ``exit_code`` is 0 once
    every chunk went, 1 when producing them raised (the error text is the last chunk,
    when ``error_chunk`` turns it into bytes).
    """

    def __init__(self, chunks: Callable[[], Iterable[bytes]],
                 error_chunk: Callable[[BaseException], bytes] | None = None):
        super().__init__()
        self._make = chunks
        self._iter: Any = None
        self._pending = b""
        self._error_chunk = error_chunk
        self._code: int | None = None
        self._lock = threading.Lock()

    def read(self, size: int) -> bytes:
        with self._lock:
            while not self._pending:
                if self._closed.is_set() or self._code is not None:
                    return b""
                try:
                    if self._iter is None:
                        self._iter = iter(self._make())
                    self._pending = next(self._iter)
                except StopIteration:
                    self._code = 0
                    return b""
                except Exception as exc:  # noqa: BLE001 - reported to the manager
                    self._code = 1
                    if self._error_chunk is None:
                        raise
                    self._pending = self._error_chunk(exc)
            data, self._pending = self._pending[:size], self._pending[size:]
            return data

    def write(self, data: bytes) -> None:
        raise OSError("this stream takes no data")

    def exit_code(self) -> int | None:
        return self._code

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        closer = getattr(self._iter, "close", None)
        if closer is not None and self._lock.acquire(timeout=5):
            try:
                closer()
            except Exception:  # noqa: BLE001 - best effort
                pass
            finally:
                self._lock.release()


class ExecProcess:
    """A process started in a running kernel by :meth:`Backend.exec_process`: pipes, no terminal.

    ``stdin`` (binary, writable) and ``stdout`` (binary, readable, ``readline``)
    are its standard input and output; its standard error goes to the agent's
    log.  :meth:`kill` ends it (idempotent); :meth:`wait` returns its exit code
    (``None`` while it runs after ``timeout`` seconds).
    """

    def __init__(self, stdin: Any, stdout: Any, kill: Callable[[], None], wait: Callable[[float | None], int | None],
                 pid: int | None = None):
        self.stdin = stdin
        self.stdout = stdout
        self._kill = kill
        self._wait = wait
        self.pid = pid

    def kill(self) -> None:
        for close in (self.stdin.close,):
            try:
                close()
            except OSError:
                pass
        self._kill()

    def wait(self, timeout: float | None = None) -> int | None:
        return self._wait(timeout)


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

    def gpu_bindings(self) -> dict[str, list[str]]:
        """Per running kernel bound to GPUs: their UUIDs (the agent adds ``cuda_util``/``cuda_mem``
        to the kernel's stats from its NVML readings of them).  Kernels without GPUs are absent."""
        return {}

    def images(self) -> list[dict[str, Any]]:
        """Images available locally (for the sync body)."""
        return []

    def check_timeouts(self) -> list[KernelState]:
        """Kill batch kernels that ran past their ``batch_timeout``; returns their new states."""
        return []

    # -- streams (terminals and TCP relays over the manager link) ---------------------------------
    def open_pty(self, kernel_id: str, rows: int, cols: int, tag: str) -> StreamEndpoint:
        """A new terminal (a shell on a PTY) in a running kernel; raises :class:`KernelError`.

        ``tag`` identifies the terminal (``BAI_PTY_ID`` in its environment), so
        that :meth:`StreamEndpoint.close` can find and end all its processes.
        """
        raise KernelError("not-supported", f"the {self.name} backend has no terminals")

    def service_address(self, kernel_id: str, container_port: int) -> tuple[str, int]:
        """``(host, port)`` where this node reaches a kernel's service port; raises :class:`KernelError`."""
        raise KernelError("not-supported", f"the {self.name} backend cannot relay TCP")

    def open_tcp(self, kernel_id: str, container_port: int, timeout: float = 5.0) -> StreamEndpoint:
        """A TCP connection to a kernel's service port; raises :class:`KernelError`."""
        host, port = self.service_address(kernel_id, container_port)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise KernelError("connection-failed", f"cannot connect to {host}:{port} (container port "
                                                   f"{container_port}): {exc}") from exc
        return TcpEndpoint(sock)

    # -- processes in a kernel (the code runner) ------------------------------------------------------
    def runtime(self, kernel_id: str) -> tuple[str, str] | None:
        """``(runtime type, runtime path)`` of a running kernel's image (its ``ai.backend.runtime-type``
        and ``ai.backend.runtime-path`` labels), ``None`` when it declares none; raises :class:`KernelError`."""
        return None

    def exec_process(self, kernel_id: str, argv: list[str], env: dict[str, str]) -> ExecProcess:
        """Start ``argv`` in a running kernel (its working directory and environment, plus ``env``),
        with pipes for stdin and stdout; raises :class:`KernelError`."""
        raise KernelError("not-supported", f"the {self.name} backend cannot run processes in a kernel")

    def has_kernel(self, kernel_id: str) -> bool:
        return any(k.kernel_id == kernel_id for k in self.list_kernels())

    def close(self) -> None:
        """Release resources (connections); kernels keep running."""
