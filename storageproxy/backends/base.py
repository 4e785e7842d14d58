"""The volume backend interface.

A volume is a directory tree holding quota scopes (``<kind>-<uuid hex>``) and, inside
them, folders (``<hex[0:2]>/<hex[2:4]>/<hex[4:]>``).  A backend decides how a scope's
limit is kept: ``vfs`` counts bytes in software, ``loopquota`` lets a filesystem refuse
them.  Every method here blocks (disk I/O, subprocesses): the web layer calls them in a
thread, never on the event loop.

To add a backend, subclass :class:`Volume`, implement the abstract methods and add it to
``BACKENDS`` in ``storageproxy.backends``."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from storageproxy import fs, treecopy
from storageproxy.paths import (
    NoSuchPath,
    PathConflict,
    StorageError,
    clean_relpath,
    folder_relpath,
    parse_qsid,
    scope_dirname,
)

log = logging.getLogger(__name__)

SCOPES_DIRNAME = ".scopes"  # per-scope limits (and loopquota images) live here


class FolderMissing(StorageError):
    """The folder's directory does not exist on the volume."""


class QuotaFull(StorageError):
    """More bytes than the scope's limit leaves room for."""

    def __init__(self, message: str, *, limit: int | None = None, used: int | None = None,
                 requested: int | None = None):
        super().__init__(message)
        self.data = {k: v for k, v in (("limit", limit), ("used", used), ("requested", requested)) if v is not None}


class BadLimit(StorageError):
    """A limit the backend cannot apply (below what the scope already holds)."""


@dataclass(frozen=True)
class Allowance:
    """How many more bytes one upload chunk may write, and what stops it there."""

    max_bytes: int
    reason: str  # "size" (the declared size) or "quota" (the scope's room)


class Volume(ABC):
    backend = "abstract"
    capabilities: tuple[str, ...] = ()

    def __init__(self, name: str, root: Path, *, dir_mode: int = 0o755, file_mode: int = 0o644):
        self.name = name
        self.root = Path(root)
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # --- layout ---------------------------------------------------------------------------------
    def scope_dir(self, qsid: str) -> Path:
        return self.root / scope_dirname(qsid)

    def folder_path(self, vfid: str) -> Path:
        return self.root.joinpath(*folder_relpath(vfid))

    def limit_file(self, qsid: str) -> Path:
        return self.root / SCOPES_DIRNAME / f"{scope_dirname(qsid)}.json"

    def staging_dir(self, qsid: str) -> Path:
        """Where the scope's uploads wait (``<root>/.staging/<scope>`` unless a backend says otherwise)."""
        return self.root / fs.STAGING_DIRNAME / scope_dirname(qsid)

    def scope_lock(self, qsid: str) -> threading.Lock:
        key = scope_dirname(qsid)
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    # --- life ----------------------------------------------------------------------------------
    def startup(self) -> None:
        """Prepare the volume when the proxy starts."""
        (self.root / SCOPES_DIRNAME).mkdir(mode=0o700, exist_ok=True)

    def shutdown(self) -> None:
        """Release what the proxy holds (mounts stay: folders are in use by sessions)."""

    # --- quota scopes --------------------------------------------------------------------------
    def get_limit(self, qsid: str) -> int | None:
        try:
            data = json.loads(self.limit_file(qsid).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("volume %s: unreadable limit of %s: %s", self.name, qsid, exc)
            return None
        limit = data.get("limit_bytes") if isinstance(data, dict) else None
        return limit if isinstance(limit, int) and limit >= 0 else None

    def _write_limit(self, qsid: str, limit: int | None) -> None:
        path = self.limit_file(qsid)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        if limit is None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            return
        temp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        with open(temp, "w") as fh:
            json.dump({"qsid": qsid, "limit_bytes": limit}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)

    def scope_exists(self, qsid: str) -> bool:
        return self.scope_dir(qsid).is_dir()

    def create_scope(self, qsid: str, limit: int | None) -> None:
        """Create the scope (nothing if it exists) and set its limit (None: unlimited)."""
        parse_qsid(qsid)
        with self.scope_lock(qsid):
            directory = self.scope_dir(qsid)
            if not directory.is_dir():
                directory.mkdir(mode=self.dir_mode, exist_ok=True)
                os.chmod(directory, self.dir_mode)
            self._apply_limit(qsid, limit)

    def set_limit(self, qsid: str, limit: int | None) -> None:
        if not self.scope_exists(qsid):
            raise NoSuchPath(f"No such quota scope on volume {self.name}: {qsid}")
        with self.scope_lock(qsid):
            self._apply_limit(qsid, limit)

    @abstractmethod
    def _apply_limit(self, qsid: str, limit: int | None) -> None:
        """Make ``limit`` the scope's limit (the scope exists; the caller holds its lock)."""

    def delete_scope(self, qsid: str) -> None:
        """Remove an empty scope (no folders left) and its limit; nothing if it is missing."""
        with self.scope_lock(qsid):
            directory = self.scope_dir(qsid)
            if directory.is_dir():
                left = [e for e in os.listdir(directory) if e not in self._scope_internal_names()]
                if left:
                    raise PathConflict(f"The quota scope {qsid} still holds folders")
            self._remove_scope(qsid)
            self._write_limit(qsid, None)
            fs.remove_tree(self.root / fs.STAGING_DIRNAME / scope_dirname(qsid))

    def _scope_internal_names(self) -> frozenset[str]:
        return frozenset()

    def _remove_scope(self, qsid: str) -> None:
        directory = self.scope_dir(qsid)
        if directory.is_dir():
            shutil.rmtree(directory)

    def scope_usage(self, qsid: str) -> tuple[int, int]:
        """(bytes, regular files) the scope holds; staged uploads count in the bytes only."""
        used, files = fs.usage(self.scope_dir(qsid))
        staging = self.staging_dir(qsid)
        staged, staged_files = fs.usage(staging)
        if _is_below(staging, self.scope_dir(qsid)):
            return used, files - staged_files
        return used + staged, files

    def check_room(self, qsid: str, more_bytes: int) -> None:
        """Refuse ``more_bytes`` that do not fit the scope's limit now."""
        limit = self.get_limit(qsid)
        if limit is None:
            return
        used, _ = self.scope_usage(qsid)
        if used + more_bytes > limit:
            raise QuotaFull(f"The quota scope {qsid} holds {used} of {limit} bytes; {more_bytes} more do not fit",
                            limit=limit, used=used, requested=more_bytes)

    @abstractmethod
    def upload_allowance(self, qsid: str, size: int, offset: int) -> Allowance:
        """What one chunk of an upload of ``size`` bytes, now at ``offset``, may write.
        Raises :class:`QuotaFull` when the upload can no longer fit."""

    def is_quota_error(self, exc: OSError) -> bool:
        """Whether a failed write means the scope is full (a filesystem-enforced limit)."""
        return False

    # --- folders ---------------------------------------------------------------------------------
    def create_folder(self, vfid: str) -> None:
        qsid, _ = _split(vfid)
        if not self.scope_exists(qsid):
            self.create_scope(qsid, None)
        path = self.folder_path(vfid)
        if path.is_dir() and not path.is_symlink():
            if any(os.scandir(path)):
                raise PathConflict(f"The folder {vfid} already exists and is not empty")
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=self.dir_mode)
        fs.create_directory(path, self.dir_mode)

    def delete_folder(self, vfid: str) -> None:
        path = self.folder_path(vfid)
        for stale in (path, treecopy.staging_path(path)):
            if os.path.lexists(stale):
                treecopy.discard(stale)
        fs.remove_tree(path)

    def folder_root(self, vfid: str) -> fs.FolderRoot:
        path = self.folder_path(vfid)
        if not path.is_dir() or path.is_symlink():
            raise FolderMissing(f"The directory of the folder {vfid} is missing on its storage host "
                                f"(volume {self.name})")
        return fs.FolderRoot(path)

    def clone_folder(self, source: Volume, src_vfid: str, dst_vfid: str) -> tuple[int, int]:
        """Copy ``src_vfid`` (on ``source``) to the new folder ``dst_vfid`` here, within the
        destination scope's limit; the destination holds nothing or the whole copy."""
        src = source.folder_root(src_vfid).path
        qsid, _ = _split(dst_vfid)
        if not self.scope_exists(qsid):
            self.create_scope(qsid, None)
        target = self.folder_path(dst_vfid)
        if os.path.lexists(target) and (not target.is_dir() or any(os.scandir(target))):
            raise PathConflict(f"The folder {dst_vfid} already exists")
        target.parent.mkdir(parents=True, exist_ok=True, mode=self.dir_mode)
        staging = treecopy.staging_path(target)
        treecopy.discard(staging)
        limit = self.get_limit(qsid)
        room = None
        if limit is not None:
            used, _ = self.scope_usage(qsid)
            room = max(0, limit - used)
        try:
            copied = treecopy.copy_tree(src, staging, max_bytes=room)
        except fs.TooMuchData as exc:
            treecopy.discard(staging)
            raise QuotaFull(f"{exc}; nothing was copied", limit=limit) from None
        except OSError as exc:
            treecopy.discard(staging)
            if self.is_quota_error(exc):
                raise QuotaFull(f"The quota scope {qsid} is full; nothing was copied", limit=limit) from None
            raise
        os.chmod(staging, self.dir_mode)
        treecopy.publish(staging, target)
        return copied

    def move_folder(self, src_vfid: str, dst_vfid: str) -> None:
        """Give a folder another id on this volume (an ownership change moves it to another scope):
        a rename, or a copy then a delete when the scopes are different filesystems."""
        source = self.folder_root(src_vfid).path
        qsid, _ = _split(dst_vfid)
        if not self.scope_exists(qsid):
            self.create_scope(qsid, None)
        target = self.folder_path(dst_vfid)
        if os.path.lexists(target):
            raise PathConflict(f"The folder {dst_vfid} already exists")
        target.parent.mkdir(parents=True, exist_ok=True, mode=self.dir_mode)
        try:
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            staging = treecopy.staging_path(target)
            treecopy.discard(staging)
            try:
                treecopy.copy_tree(source, staging)
            except OSError as copy_exc:
                treecopy.discard(staging)
                if self.is_quota_error(copy_exc):
                    raise QuotaFull(f"The quota scope {qsid} is full; nothing was moved") from None
                raise
            os.chmod(staging, stat.S_IMODE(os.stat(source).st_mode))
            treecopy.publish(staging, target)
            fs.remove_tree(source)
            return
        for parent in (source.parent, source.parent.parent):  # prune the empty <xx>/<yy> levels
            try:
                os.rmdir(parent)
            except OSError:
                break

    def mount_path(self, vfid: str, subpath) -> str:
        """The absolute path of the folder (or a directory inside it) on this host."""
        root = self.folder_root(vfid)
        parts = clean_relpath(subpath if subpath not in (None, "") else ".", what="subpath")
        fd = root.open_dir(parts)
        try:
            actual = fs._fd_path(fd)
        finally:
            os.close(fd)
        return actual or os.path.join(root.real, *parts)

    # --- the volume ------------------------------------------------------------------------------
    def fs_info(self) -> dict:
        info = os.statvfs(self.root)
        return {"capacity_bytes": info.f_blocks * info.f_frsize,
                "used_bytes": (info.f_blocks - info.f_bfree) * info.f_frsize,
                "available_bytes": info.f_bavail * info.f_frsize}

    def describe(self) -> dict:
        return {"name": self.name, "backend": self.backend, "path": str(self.root),
                "capabilities": list(self.capabilities), "fs": self.fs_info()}

    def staging_dirs(self) -> list[Path]:
        """Every directory holding staged uploads (for the sweeper)."""
        base = self.root / fs.STAGING_DIRNAME
        try:
            return [p for p in base.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []

    def sweep(self, older_than: float) -> int:
        cutoff = time.time() - older_than
        removed = 0
        for directory in self.staging_dirs():
            try:
                items = list(directory.iterdir())
            except OSError:
                continue
            for item in items:
                try:
                    if item.is_file() and item.stat().st_mtime < cutoff:
                        item.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed


def _split(vfid: str) -> tuple[str, str]:
    from storageproxy.paths import parse_vfid

    return parse_vfid(vfid)


def _is_below(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
    except ValueError:
        return False
    return True
