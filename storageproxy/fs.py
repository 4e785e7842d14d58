"""Disk work for virtual folders: safe path resolution, listing, file operations,
staged (resumable) uploads, streamed downloads and archives.

Imports nothing from Django, so the rules can be read (and tested) on their own.

Path safety.  Every user-supplied path is first cleaned lexically
(:func:`clean_relpath`, the rules of ``storageproxy.names``: no control
characters, no backslashes, not absolute, no ``..``, no padded or over-long
names; Windows-safe names for what gets created), then walked from the folder root one component at a time
with ``openat(O_NOFOLLOW)``.  A component that is a symbolic link is followed
only when its target resolves inside the folder, and every directory we end up
holding is checked again through ``/proc/self/fd`` (what was actually opened),
so swapping a directory for a link between the check and the use gains nothing.
Writes happen relative to those directory descriptors.

Archives (:func:`iter_zip`, :func:`plan_tar`) hold directories and regular
files only, never symbolic links, under names that ``names.ArchiveNames``
sanitises, whatever a session left on disk.

Uploads are written to ``<host root>/.staging/<scope>/<upload id>.part`` (never
inside a folder), fsynced before each chunk is acknowledged, and renamed into place only when
complete, so a failed upload leaves nothing in the folder.
"""
from __future__ import annotations

import errno
import fcntl
import io
import logging
import os
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storageproxy import names
from storageproxy.paths import (  # re-exported: the disk code's callers catch these from here
    NoSuchPath,
    OffsetMismatch,
    PathConflict,
    StorageError,
    TooMuchData,
    UnsafePath,
    UploadBusy,
    display_path,
)

log = logging.getLogger(__name__)

MAX_NAME_BYTES = names.NAME_MAX_BYTES
MAX_PATH_BYTES = names.PATH_MAX_BYTES
IO_CHUNK = 1024 * 1024
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16, 1024) or 16
def write_pieces(fd: int, pieces: list, offset: int) -> int:
    """Write every piece (bytes-like) at ``offset`` with as few ``pwritev`` calls as it takes (no
    joining copy); returns the bytes written."""
    views = [memoryview(piece) for piece in pieces if len(piece)]
    total = first = 0
    while first < len(views):
        done = os.pwritev(fd, views[first:first + _IOV_MAX], offset + total)
        total += done
        while done:
            size = len(views[first])
            if done >= size:
                done -= size
                first += 1
            else:
                views[first] = views[first][done:]
                done = 0
    return total
STAGING_DIRNAME = ".staging"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC



# --- descriptors ------------------------------------------------------------------------------

def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class FolderRoot:
    """A folder's directory, with descriptor-based walking that cannot leave it."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.real = os.path.realpath(self.path)

    # -- walking --
    def open_root(self) -> int:
        try:
            return os.open(self.real, _DIR_FLAGS)
        except FileNotFoundError:
            raise NoSuchPath("The folder's directory is missing on its storage host") from None

    def _verify(self, fd: int, shown: str) -> None:
        actual = _fd_path(fd)
        if actual is not None and not _inside(actual, self.real):
            os.close(fd)
            raise UnsafePath(f"{shown} leads outside the folder")

    def _child_dir(self, fd: int, name: str, shown: str, create: bool) -> int:
        for _attempt in range(3):
            try:
                child = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise NoSuchPath(f"No such directory: {shown}") from None
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(info.st_mode):
                    raise PathConflict(f"Not a directory: {shown}") from None
                child = self._follow_link(fd, name, shown)
                if child is None:
                    raise PathConflict(f"Not a directory: {shown}") from None
                return child
            self._verify(child, shown)
            return child
        raise PathConflict(f"Cannot create the directory {shown}")

    def _follow_link(self, fd: int, name: str, shown: str) -> int | None:
        """Open the directory a symlink points at, if it stays inside the folder."""
        base = _fd_path(fd)
        if base is None:
            raise UnsafePath(f"{shown} is a symbolic link")
        target = os.path.realpath(os.path.join(base, name))
        if not _inside(target, self.real):
            raise UnsafePath(f"{shown} is a symbolic link pointing outside the folder")
        try:
            child = os.open(target, _DIR_FLAGS)
        except (NotADirectoryError, FileNotFoundError):
            return None
        self._verify(child, shown)
        return child

    def open_dir(self, parts: tuple[str, ...], *, create: bool = False) -> int:
        """A descriptor of the directory at ``parts`` (the caller closes it)."""
        fd = self.open_root()
        try:
            for i, name in enumerate(parts):
                child = self._child_dir(fd, name, display_path(parts[: i + 1]), create)
                os.close(fd)
                fd = child
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise
        return fd

    def check(self, parts: tuple[str, ...]) -> None:
        """Walk the part of ``parts`` that exists; ``UnsafePath`` if it leads out of the folder."""
        fd = self.open_root()
        try:
            for i, name in enumerate(parts):
                try:
                    child = self._child_dir(fd, name, display_path(parts[: i + 1]), create=False)
                except (NoSuchPath, PathConflict):
                    return
                os.close(fd)
                fd = child
        finally:
            os.close(fd)

    def lstat(self, parts: tuple[str, ...]) -> os.stat_result:
        if not parts:
            return os.stat(self.real)
        fd = self.open_dir(parts[:-1])
        try:
            return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            raise NoSuchPath(f"No such file or directory: {display_path(parts)}") from None
        finally:
            os.close(fd)

    def kind(self, parts: tuple[str, ...]) -> str:
        """``file``, ``directory`` or ``symlink`` (a link inside the folder counts as its target)."""
        info = self.lstat(parts)
        if stat.S_ISLNK(info.st_mode):
            target = self._resolved_link(parts)
            return "directory" if os.path.isdir(target) else "file"
        if stat.S_ISDIR(info.st_mode):
            return "directory"
        if stat.S_ISREG(info.st_mode):
            return "file"
        raise PathConflict(f"Not a regular file or directory: {display_path(parts)}")

    def _resolved_link(self, parts: tuple[str, ...]) -> str:
        fd = self.open_dir(parts[:-1])
        try:
            base = _fd_path(fd)
        finally:
            os.close(fd)
        if base is None:
            raise UnsafePath(f"{display_path(parts)} is a symbolic link")
        target = os.path.realpath(os.path.join(base, parts[-1]))
        if not _inside(target, self.real):
            raise UnsafePath(f"{display_path(parts)} is a symbolic link pointing outside the folder")
        return target

    def open_file(self, parts: tuple[str, ...]) -> tuple[int, os.stat_result]:
        """A read descriptor of the regular file at ``parts`` and its stat."""
        if not parts:
            raise PathConflict("The folder itself is a directory")
        fd = self.open_dir(parts[:-1])
        try:
            try:
                handle = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                raise NoSuchPath(f"No such file: {display_path(parts)}") from None
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                target = self._resolved_link(parts)
                try:
                    handle = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    raise NoSuchPath(f"No such file: {display_path(parts)}") from None
                actual = _fd_path(handle)
                if actual is not None and not _inside(actual, self.real):
                    os.close(handle)
                    raise UnsafePath(f"{display_path(parts)} leads outside the folder") from None
        finally:
            os.close(fd)
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            os.close(handle)
            if stat.S_ISDIR(info.st_mode):
                raise PathConflict(f"{display_path(parts)} is a directory")
            raise PathConflict(f"Not a regular file: {display_path(parts)}")
        return handle, info

    # -- reading --
    def list_dir(self, parts: tuple[str, ...]) -> list[dict]:
        fd = self.open_dir(parts)
        try:
            entries = []
            with os.scandir(fd) as listing:
                for entry in listing:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISLNK(info.st_mode):
                        kind = "symlink"
                    elif stat.S_ISDIR(info.st_mode):
                        kind = "directory"
                    elif stat.S_ISREG(info.st_mode):
                        kind = "file"
                    else:
                        kind = "other"
                    entries.append({"name": entry.name, "type": kind, "size": info.st_size,
                                    "mtime": info.st_mtime, "mode": info.st_mode})
        finally:
            os.close(fd)
        entries.sort(key=lambda e: (e["type"] != "directory", e["name"]))
        return entries

    # -- changing --
    def mkdir(self, parts: tuple[str, ...], *, parents: bool, exist_ok: bool) -> None:
        if not parts:
            raise PathConflict("The folder itself already exists")
        try:
            fd = self.open_dir(parts[:-1], create=parents)
        except NoSuchPath:
            raise NoSuchPath(f"The parent directory of {display_path(parts)} does not exist "
                             "(use parents to create it)") from None
        try:
            os.mkdir(parts[-1], 0o755, dir_fd=fd)
        except FileExistsError:
            info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            if not (exist_ok and stat.S_ISDIR(info.st_mode)):
                raise PathConflict(f"Already exists: {display_path(parts)}") from None
        finally:
            os.close(fd)

    def rename(self, parts: tuple[str, ...], new_name: str) -> None:
        if not parts:
            raise PathConflict("The folder itself cannot be renamed here")
        fd = self.open_dir(parts[:-1])
        try:
            try:
                os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise NoSuchPath(f"No such file or directory: {display_path(parts)}") from None
            if _exists(fd, new_name):
                raise PathConflict(f"Already exists: {display_path(parts[:-1] + (new_name,))}")
            os.rename(parts[-1], new_name, src_dir_fd=fd, dst_dir_fd=fd)
            os.fsync(fd)
        finally:
            os.close(fd)

    def move(self, src: tuple[str, ...], dst: tuple[str, ...]) -> tuple[str, ...]:
        """Move ``src`` to ``dst``; into ``dst`` when that is an existing directory."""
        if not src:
            raise PathConflict("The folder itself cannot be moved")
        if dst[: len(src)] == src:
            raise PathConflict("Cannot move a directory into itself")
        src_fd = self.open_dir(src[:-1])
        try:
            try:
                os.stat(src[-1], dir_fd=src_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise NoSuchPath(f"No such file or directory: {display_path(src)}") from None
            target = dst
            if dst:
                try:
                    if self.kind(dst) == "directory":
                        target = dst + (src[-1],)
                except NoSuchPath:
                    pass
            else:
                target = (src[-1],)
            if target[: len(src)] == src:
                raise PathConflict("Cannot move a directory into itself")
            dst_fd = self.open_dir(target[:-1])
            try:
                if _exists(dst_fd, target[-1]):
                    raise PathConflict(f"Already exists: {display_path(target)}")
                os.rename(src[-1], target[-1], src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                os.fsync(dst_fd)
            finally:
                os.close(dst_fd)
            os.fsync(src_fd)
        finally:
            os.close(src_fd)
        return target

    def delete(self, paths: list[tuple[str, ...]], *, recursive: bool) -> None:
        """Delete files (and directories when ``recursive``); checks all before deleting any."""
        for parts in paths:
            if not parts:
                raise PathConflict("The folder itself cannot be deleted this way (delete the folder instead)")
            info = self.lstat(parts)
            if stat.S_ISDIR(info.st_mode) and not recursive:
                raise PathConflict(f"{display_path(parts)} is a directory (use recursive to delete it)")
        for parts in paths:
            fd = self.open_dir(parts[:-1])
            try:
                try:
                    info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # listed twice, or a parent was deleted first
                if stat.S_ISDIR(info.st_mode):
                    _rmtree_at(fd, parts[-1])
                else:
                    os.unlink(parts[-1], dir_fd=fd)
                os.fsync(fd)
            finally:
                os.close(fd)

    def walk_files(self, parts: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], os.stat_result]]:
        """Every directory and regular file under ``parts`` (depth first, sorted, no link
        followed), relative to ``parts``; directories come before their contents."""
        stack = [((), self.open_dir(parts))]
        try:
            while stack:
                rel, fd = stack.pop()
                try:
                    with os.scandir(fd) as listing:
                        entries = sorted(listing, key=lambda e: e.name)
                    children = []
                    for entry in entries:
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if stat.S_ISREG(info.st_mode):
                            yield rel + (entry.name,), info
                        elif stat.S_ISDIR(info.st_mode):
                            yield rel + (entry.name,), info
                            try:
                                child = os.open(entry.name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                            except OSError:
                                continue
                            children.append((rel + (entry.name,), child))
                    stack.extend(reversed(children))
                finally:
                    os.close(fd)
        finally:
            for _rel, fd in stack:
                os.close(fd)

    def open_relative(self, parts: tuple[str, ...], rel: tuple[str, ...]) -> int | None:
        """A read descriptor of ``parts/rel`` (a regular file, no link followed) or None."""
        try:
            fd = self.open_dir(parts + rel[:-1])
        except StorageError:
            return None
        try:
            return os.open(rel[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            return None
        finally:
            os.close(fd)


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _rmtree_at(dir_fd: int, name: str) -> None:
    import shutil

    shutil.rmtree(name, dir_fd=dir_fd)


# --- folders and usage ------------------------------------------------------------------------

def create_directory(path: Path, mode: int = 0o755) -> None:
    """The folder's own directory: parents as needed, the last one must be new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkdir(path, mode)
    os.chmod(path, mode)  # not narrowed by the umask


def remove_tree(path: Path) -> None:
    import shutil

    if os.path.lexists(path):
        shutil.rmtree(path)
    # prune the empty <xx>/<yy> levels above it
    for parent in (path.parent, path.parent.parent):
        try:
            os.rmdir(parent)
        except OSError:
            break


def usage(path: Path) -> tuple[int, int]:
    """(bytes, regular files) under ``path``; links are not followed; missing is zero."""
    total = files = 0
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            listing = os.scandir(current)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with listing:
            for entry in listing:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISREG(info.st_mode):
                    total += info.st_size
                    files += 1
    return total, files


# --- staged uploads ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Staging:
    """Where one upload's bytes wait: ``<host>/.staging/<scope>/<upload id>.part``."""

    directory: Path
    upload_id: str

    @property
    def part(self) -> Path:
        return self.directory / f"{self.upload_id}.part"

    @property
    def done(self) -> Path:
        return self.directory / f"{self.upload_id}.done"

    def offset(self) -> int | None:
        """Bytes received so far, or None when nothing was received yet."""
        try:
            return os.stat(self.part).st_size
        except FileNotFoundError:
            return None

    def settled_offset(self, wait: float = 5.0) -> int | None:
        """Like :meth:`offset`, but first waits (at most ``wait`` seconds) for a PATCH still writing
        this upload to finish (it holds the file's lock until its bytes are written and fsynced), so
        that a client resuming right after a cut connection learns everything that was kept."""
        try:
            fd = os.open(self.part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        break  # a PATCH is still receiving: its current size
                    time.sleep(0.01)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def completed(self) -> bool:
        return self.done.exists()

    def discard(self) -> None:
        for path in (self.part, self.done):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)

    def write(self, offset: int, stream: BinaryIO, length: int | None, max_bytes: int,
              max_reason: str = "size") -> int:
        """Append the request body at ``offset``; returns the new offset.

        ``length`` is the declared body length (None: read to the end).  Writing
        more than ``max_bytes`` raises ``TooMuchData`` (the caller discards the
        upload).  Bytes received before a dropped connection are kept (fsynced),
        so the client resumes from there."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UploadBusy("Another request is writing this upload") from None
            current = os.fstat(fd).st_size
            if current != offset:
                raise OffsetMismatch(current)
            if length is not None and length > max_bytes:
                raise TooMuchData(f"The chunk of {length} bytes goes past the allowed {max_bytes} bytes", max_reason)
            os.lseek(fd, offset, os.SEEK_SET)
            written = 0
            remaining = length
            while remaining is None or remaining > 0:
                want = IO_CHUNK if remaining is None else min(IO_CHUNK, remaining)
                try:
                    data = stream.read(want)
                except OSError:
                    break  # the client went away mid-body: keep what arrived
                if not data:
                    break
                if written + len(data) > max_bytes:
                    raise TooMuchData(f"The upload goes past the allowed {max_bytes} more bytes", max_reason)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                written += len(data)
                if remaining is not None:
                    remaining -= len(data)
            os.fsync(fd)
            return offset + written
        finally:
            os.close(fd)

    def finalize(self, root: FolderRoot, parts: tuple[str, ...], file_mode: int = 0o644) -> None:
        """Move the complete upload to ``parts`` inside the folder (atomic rename)."""
        os.chmod(self.part, file_mode)
        parent = root.open_dir(parts[:-1], create=True)
        try:
            try:
                info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                info = None
            if info is not None and stat.S_ISDIR(info.st_mode):
                raise PathConflict(f"A directory exists at {display_path(parts)}")
            staging_fd = os.open(self.directory, _DIR_FLAGS)
            try:
                try:
                    os.rename(self.part.name, parts[-1], src_dir_fd=staging_fd, dst_dir_fd=parent)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    _copy_across(self.part, parent, parts[-1], file_mode)
                    os.unlink(self.part)
            finally:
                os.close(staging_fd)
            os.fsync(parent)
        finally:
            os.close(parent)
        with open(self.done, "wb"):
            pass


def _copy_across(source: Path, dir_fd: int, name: str, file_mode: int) -> None:
    """Rename fallback across filesystems: copy to a hidden temp name, then rename."""
    temp = f".{name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode, dir_fd=dir_fd)
    try:
        with open(source, "rb") as src:
            while chunk := src.read(IO_CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
        os.fsync(out)
    except BaseException:
        os.close(out)
        os.unlink(temp, dir_fd=dir_fd)
        raise
    os.close(out)
    os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def sweep_staging(host_root: Path, older_than_seconds: float) -> int:
    """Remove staged uploads and completion marks untouched for a while."""
    base = Path(host_root) / STAGING_DIRNAME
    cutoff = time.time() - older_than_seconds
    removed = 0
    if not base.is_dir():
        return 0
    for scope_dir in base.iterdir():
        if not scope_dir.is_dir():
            continue
        for item in scope_dir.iterdir():
            try:
                if item.is_file() and item.stat().st_mtime < cutoff:
                    item.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
    return removed


# --- downloads --------------------------------------------------------------------------------

def iter_fd(fd: int, start: int, length: int, chunk: int = IO_CHUNK) -> Iterator[bytes]:
    """Exactly ``length`` bytes from ``start`` (zero-padded if the file shrank meanwhile);
    closes ``fd`` at the end."""
    try:
        position, remaining = start, length
        while remaining > 0:
            data = os.pread(fd, min(chunk, remaining), position)
            if not data:
                data = bytes(min(chunk, remaining))
            yield data
            position += len(data)
            remaining -= len(data)
    finally:
        os.close(fd)


class _Sink(io.RawIOBase):
    """A write-only, non-seekable buffer that zipfile writes into."""

    def __init__(self):
        super().__init__()
        self._buffer = bytearray()
        self._position = 0

    def writable(self):
        return True

    def write(self, data):
        self._buffer += data
        self._position += len(data)
        return len(data)

    def tell(self):
        return self._position

    def flush(self):
        pass

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def _zip_time(mtime: float) -> tuple:
    moment = time.localtime(max(mtime, 315532800))  # the zip epoch is 1980
    return moment[:6]


def _log_renamed(entries: names.ArchiveNames) -> None:
    if entries.renamed:
        log.warning("archive of %r: %d entries renamed to safe names: %s", entries.top, len(entries.renamed),
                    "; ".join(f"{old!r} -> {new!r}" for old, new in entries.renamed[:50]))


def iter_zip(root: FolderRoot, parts: tuple[str, ...], top: str) -> Iterator[bytes]:
    """The directory at ``parts`` as a ZIP (stored, ZIP64), produced as it is read.

    Only directories and regular files go in (symbolic links and special files
    are left out, so nothing outside the folder can leak in); entry names come
    from :class:`names.ArchiveNames` (no ``..``, no absolute path, no backslash,
    no control character, no ``:``), whatever the names on disk are."""
    sink = _Sink()
    entries = names.ArchiveNames(top)
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        top_info = zipfile.ZipInfo(entries.top + "/", date_time=_zip_time(time.time()))
        top_info.external_attr = (0o40755 << 16) | 0x10
        archive.writestr(top_info, b"")
        yield sink.take()
        for rel, info in root.walk_files(parts):
            name = entries.entry(rel)
            if stat.S_ISDIR(info.st_mode):
                entry = zipfile.ZipInfo(name + "/", date_time=_zip_time(info.st_mtime))
                entry.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(entry, b"")
                yield sink.take()
                continue
            fd = root.open_relative(parts, rel)
            if fd is None:
                continue
            entry = zipfile.ZipInfo(name, date_time=_zip_time(info.st_mtime))
            entry.external_attr = (stat.S_IMODE(info.st_mode) | stat.S_IFREG) << 16
            entry.compress_type = zipfile.ZIP_STORED
            try:
                with archive.open(entry, mode="w", force_zip64=True) as dest:
                    while True:
                        data = os.read(fd, IO_CHUNK)
                        if not data:
                            break
                        dest.write(data)
                        yield sink.take()
            finally:
                os.close(fd)
            yield sink.take()
    _log_renamed(entries)
    yield sink.take()


@dataclass
class TarPlan:
    """A tar archive of a directory, sized before the first byte is sent."""

    entries: list  # (header bytes, rel parts or None, size)
    length: int


def plan_tar(root: FolderRoot, parts: tuple[str, ...], top: str) -> TarPlan:
    """The tar entries of the directory at ``parts``: directories and regular
    files only, named like :func:`iter_zip` names them."""
    entries = []
    length = 0
    safe = names.ArchiveNames(top)
    top_info = tarfile.TarInfo(safe.top)
    top_info.type = tarfile.DIRTYPE
    top_info.mode = 0o755
    top_info.mtime = int(time.time())
    header = top_info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    entries.append((header, None, 0))
    length += len(header)
    for rel, info in root.walk_files(parts):
        item = tarfile.TarInfo(safe.entry(rel))
        item.mtime = int(info.st_mtime)
        item.mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            item.type = tarfile.DIRTYPE
            size = 0
        else:
            item.type = tarfile.REGTYPE
            item.size = size = info.st_size
        header = item.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        entries.append((header, rel if item.type == tarfile.REGTYPE else None, size))
        length += len(header) + _tar_padded(size)
    _log_renamed(safe)
    length += 2 * tarfile.BLOCKSIZE
    remainder = length % tarfile.RECORDSIZE
    if remainder:
        length += tarfile.RECORDSIZE - remainder
    return TarPlan(entries, length)


def _tar_padded(size: int) -> int:
    blocks, rest = divmod(size, tarfile.BLOCKSIZE)
    return (blocks + (1 if rest else 0)) * tarfile.BLOCKSIZE


def iter_tar(root: FolderRoot, parts: tuple[str, ...], plan: TarPlan) -> Iterator[bytes]:
    """Exactly ``plan.length`` bytes: a file that changed size is cut or zero-padded."""
    sent = 0
    for header, rel, size in plan.entries:
        yield header
        sent += len(header)
        if rel is None:
            continue
        fd = root.open_relative(parts, rel)
        if fd is None:
            body = iter(())
            remaining = size
        else:
            body = iter_fd(fd, 0, size)
            remaining = 0
        for data in body:
            yield data
            sent += len(data)
        while remaining > 0:
            piece = bytes(min(IO_CHUNK, remaining))
            yield piece
            sent += len(piece)
            remaining -= len(piece)
        padding = _tar_padded(size) - size
        if padding:
            yield bytes(padding)
            sent += padding
    if plan.length > sent:
        yield bytes(plan.length - sent)


# --- HTTP ranges ------------------------------------------------------------------------------

class RangeNotSatisfiable(StorageError):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range as (start, end inclusive); None for the whole file.

    Several ranges, other units or a malformed header are ignored (the whole file
    is sent, which RFC 9110 allows); a range starting past the end is refused."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    try:
        if first == "":
            if not last:
                return None
            suffix = int(last)
            if suffix <= 0:
                raise RangeNotSatisfiable("An empty suffix range")
            if size == 0:
                raise RangeNotSatisfiable("The file is empty")
            return max(0, size - suffix), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or (last and end < start):
        return None
    if start >= size:
        raise RangeNotSatisfiable(f"The range starts at {start}, past the end of a {size}-byte file")
    return start, min(end, size - 1)
