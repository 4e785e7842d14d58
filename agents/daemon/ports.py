"""Host ports for kernel services, allocated from the agent's port range.

A port is handed out only if no kernel of this agent holds it and the OS lets
us bind it on the publish address right now (so ports used by other programs
are skipped).  Allocation continues after the last port handed out, so a port
just released is not reused at once.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterable

__all__ = ["PortPool", "PortsExhausted", "port_is_free"]

log = logging.getLogger(__name__)


class PortsExhausted(RuntimeError):
    """Not enough free ports left in the range."""


def port_is_free(host: str, port: int) -> bool:
    """Whether a TCP socket can bind ``host:port`` right now."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class PortPool:
    """Thread-safe allocator over the inclusive range ``[low, high]``."""

    def __init__(self, low: int, high: int, host: str = "127.0.0.1", probe: bool = True):
        if not 0 < low <= high < 65536:
            raise ValueError(f"bad port range {low}-{high}")
        self.low, self.high, self.host, self.probe = low, high, host, probe
        self._held: set[int] = set()
        self._cursor = low
        self._lock = threading.Lock()

    @property
    def held(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._held)

    def reserve(self, ports: Iterable[int | None]) -> None:
        """Mark ports as held (e.g. by a re-adopted kernel); ports outside the range are ignored."""
        with self._lock:
            self._held.update(p for p in ports if p is not None and self.low <= p <= self.high)

    def release(self, ports: Iterable[int | None]) -> None:
        with self._lock:
            self._held.difference_update(p for p in ports if p is not None)

    def allocate(self, count: int) -> list[int]:
        """Hold and return ``count`` free ports; raises :class:`PortsExhausted`."""
        if count <= 0:
            return []
        size = self.high - self.low + 1
        chosen: list[int] = []
        with self._lock:
            for step in range(size):
                port = self.low + (self._cursor - self.low + step) % size
                if port in self._held:
                    continue
                if self.probe and not port_is_free(self.host, port):
                    continue
                chosen.append(port)
                if len(chosen) == count:
                    self._cursor = self.low + (port - self.low + 1) % size
                    self._held.update(chosen)
                    return chosen
        raise PortsExhausted(f"no {count} free port(s) left in {self.low}-{self.high} on {self.host}")
