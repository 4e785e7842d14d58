"""Kernel backends: :class:`DockerBackend` (containers) and :class:`LocalBackend` (process groups)."""
from __future__ import annotations

from typing import Any

from .base import Backend, BackendSettings, KernelError

__all__ = ["Backend", "BackendSettings", "KernelError", "make_backend"]


def make_backend(name: str, settings: BackendSettings, **kwargs: Any) -> Backend:
    """The backend called ``name`` (``docker`` or ``local``)."""
    if name == "docker":
        from .docker import DockerBackend

        return DockerBackend(settings, **kwargs)
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(settings)
    raise ValueError(f"unknown backend {name!r}")
