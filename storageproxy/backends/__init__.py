"""Volume backends by name (``--volume NAME=PATH:BACKEND``)."""
from __future__ import annotations

from storageproxy.backends.base import Allowance, BadLimit, FolderMissing, QuotaFull, Volume
from storageproxy.backends.loopquota import LoopQuotaVolume
from storageproxy.backends.vfs import VfsVolume

BACKENDS: dict[str, type[Volume]] = {"vfs": VfsVolume, "loopquota": LoopQuotaVolume}

__all__ = [
           "BACKENDS",
           "Allowance",
           "BadLimit",
           "FolderMissing",
           "LoopQuotaVolume",
           "QuotaFull",
           "VfsVolume",
           "Volume",
]
