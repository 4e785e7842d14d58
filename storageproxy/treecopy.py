"""Copying a folder's tree for ``vfolder clone``, streamed and atomic.  Imports
nothing from Django (like ``storageproxy.fs``).

:func:`copy_tree` walks the source with directory descriptors and never follows a
symbolic link: directories and regular files are copied (modes and times kept,
each file streamed in ``IO_CHUNK`` pieces and fsynced), symbolic links are copied
as links (their text, never what they point at, so a link to ``/etc`` in a folder
copies no file of the host), and other kinds (sockets, pipes, devices) are left
out.  The copy goes to a new *staging* directory beside the target; only
:func:`publish` puts it in place, with one ``rename`` over the target's empty
directory, so the target holds either nothing or the whole copy.
:func:`discard` removes a staging directory that will not be published.

Only descriptors along the current path are open at any time, so a wide tree
costs no more descriptors than a deep one."""
from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from storageproxy.fs import IO_CHUNK, TooMuchData

_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_FILE_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
REPORT_EVERY_BYTES = 8 * 2**20
REPORT_EVERY_FILES = 200

Progress = Callable[[int, int], None]  # (bytes copied, files copied)


def staging_path(target: Path) -> Path:
    """Where a copy for ``target`` is built: a hidden sibling on the same filesystem."""
    return target.parent / f".{target.name}.cloning"


class _Counter:
    def __init__(self, max_bytes: int | None, progress: Progress | None):
        self.max_bytes = max_bytes
        self.progress = progress
        self.bytes = self.files = 0
        self._reported = (0, 0)

    def add(self, size: int) -> None:
        if self.max_bytes is not None and self.bytes + size > self.max_bytes:
            raise TooMuchData(f"The copy needs more than the {self.max_bytes} bytes left in the quota scope",
                              "quota")
        self.bytes += size
        self.maybe_report()

    def file_done(self) -> None:
        self.files += 1
        self.maybe_report()

    def maybe_report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        last_bytes, last_files = self._reported
        if force or self.bytes - last_bytes >= REPORT_EVERY_BYTES or self.files - last_files >= REPORT_EVERY_FILES:
            self._reported = (self.bytes, self.files)
            self.progress(self.bytes, self.files)


def _copy_file(src_dir: int, dst_dir: int, name: str, counter: _Counter) -> None:
    try:
        src = os.open(name, _FILE_OPEN, dir_fd=src_dir)
    except (FileNotFoundError, OSError):
        return  # vanished, or swapped for something we do not open (a link, a pipe)
    try:
        info = os.fstat(src)
        if not stat.S_ISREG(info.st_mode):
            return
        os.set_blocking(src, True)
        dst = os.open(name, _FILE_CREATE, 0o600, dir_fd=dst_dir)
        try:
            while chunk := os.read(src, IO_CHUNK):
                counter.add(len(chunk))
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
            os.fchmod(dst, stat.S_IMODE(info.st_mode) & 0o777)
            os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns))
            os.fsync(dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    counter.file_done()


def _copy_entry(src_dir: int, dst_dir: int, name: str, counter: _Counter, stack: list) -> None:
    try:
        info = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        try:
            child = os.open(name, _DIR_OPEN, dir_fd=src_dir)
        except OSError:
            return  # swapped for a link meanwhile, or unreadable
        try:
            os.mkdir(name, 0o700, dir_fd=dst_dir)
            made = os.open(name, _DIR_OPEN, dir_fd=dst_dir)
        except BaseException:
            os.close(child)
            raise
        stack.append((child, made, os.scandir(child), info))
    elif stat.S_ISREG(info.st_mode):
        _copy_file(src_dir, dst_dir, name, counter)
    elif stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(name, dir_fd=src_dir), name, dir_fd=dst_dir)


def _finish_dir(src: int, dst: int, listing, info: os.stat_result) -> None:
    listing.close()
    try:
        os.fchmod(dst, stat.S_IMODE(info.st_mode) & 0o777)
        os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.fsync(dst)
    finally:
        os.close(src)
        os.close(dst)


def copy_tree(source: Path, staging: Path, *, max_bytes: int | None = None,
              progress: Progress | None = None) -> tuple[int, int]:
    """Copy the tree at ``source`` into the new directory ``staging``; returns (bytes,
    regular files) copied.  ``TooMuchData`` when the files need more than
    ``max_bytes`` (None: no limit); the partial copy stays for :func:`discard`."""
    counter = _Counter(max_bytes, progress)
    root = os.open(source, _DIR_OPEN)
    try:
        root_info = os.fstat(root)
        os.mkdir(staging, 0o700)
        made = os.open(staging, _DIR_OPEN)
    except BaseException:
        os.close(root)
        raise
    stack = [(root, made, os.scandir(root), root_info)]
    try:
        while stack:
            src, dst, listing, _ = stack[-1]
            entry = next(listing, None)
            if entry is None:
                _finish_dir(*stack.pop())
                continue
            _copy_entry(src, dst, entry.name, counter, stack)
    finally:
        for src, dst, listing, _ in stack:
            listing.close()
            os.close(src)
            os.close(dst)
    counter.maybe_report(force=True)
    return counter.bytes, counter.files


def publish(staging: Path, target: Path) -> None:
    """Put a finished copy in place of ``target`` (an empty directory, or nothing) at once."""
    os.rename(staging, target)
    parent = os.open(target.parent, _DIR_OPEN)
    try:
        os.fsync(parent)
    finally:
        os.close(parent)


def _writable_then_retry(function, path, _exc_info) -> None:
    """``rmtree``'s error handler: a copied read-only directory is made writable, then retried."""
    for directory in (os.path.dirname(path), path):
        if os.path.isdir(directory) and not os.path.islink(directory):
            os.chmod(directory, 0o700)
    function(path)


def discard(staging: Path) -> None:
    """Remove a copy that will not be published (nothing when it is not there)."""
    if os.path.lexists(staging):
        shutil.rmtree(staging, onerror=_writable_then_retry)
