"""``vfs``: a plain directory tree; a scope's limit is kept in software, exactly as the
manager kept it before the proxy existed: a request is refused when the scope's bytes on
disk (folders and staged uploads) plus what it asks for exceed the limit, and an upload
chunk may write no more than the room left."""
from __future__ import annotations

from storageproxy.backends.base import Allowance, QuotaFull, Volume


class VfsVolume(Volume):
    backend = "vfs"
    capabilities = ("quota", "file-ops", "clone")

    def _apply_limit(self, qsid: str, limit: int | None) -> None:
        self._write_limit(qsid, limit)

    def upload_allowance(self, qsid: str, size: int, offset: int) -> Allowance:
        allowance = Allowance(size - offset, "size")
        limit = self.get_limit(qsid)
        if limit is None:
            return allowance
        used, _ = self.scope_usage(qsid)
        others = used - offset  # what the scope holds besides this upload
        if others + size > limit:
            raise QuotaFull(f"The quota scope {qsid} no longer has room for this upload "
                            f"({others} of {limit} bytes are used); the partial upload was removed",
                            limit=limit, used=others, requested=size)
        room = limit - others - offset
        if room < allowance.max_bytes:
            return Allowance(room, "quota")
        return allowance
