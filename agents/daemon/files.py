"""Files in a running kernel: the ``files``, ``download`` and ``upload`` stream kinds.

The manager opens one stream per request (``docs/agent-protocol.md``, "Files in a
kernel"); every path names something in the kernel's work directory,
``/home/work``: a relative path is relative to it, an absolute one must lie under
it, and no path may hold ``..``.

* ``files`` ``{path}``: answers one JSON document
  ``{"files": [{filename, size, mode, mtime}...], "abspath", "truncated"}``
  (``mode`` as ``ls -l`` prints it, ``mtime`` in epoch seconds) and ends;
* ``download`` ``{paths, raw?}``: answers a tar stream (PAX) holding each path
  under its base name (a directory with everything in it), produced while it is
  sent, never whole in memory; with ``raw: true`` (one path, a regular file)
  the file's bytes alone;
* ``upload`` ``{path, size}``: takes exactly ``size`` bytes, then
  ``stream.eof``; the file is written beside its target under a temporary name
  and renamed into place only when every byte arrived (missing parent
  directories are made, and removed again if the upload fails); answers
  ``{"path", "size"}`` and ends.

A refusal before any answer is a :class:`KernelError` (``stream.error``
``"<reason>: <detail>"``, reasons ``invalid-path``, ``not-found``,
``not-a-directory``, ``is-a-directory``, ``too-large``, ``unsupported``,
``kernel-not-running``); a failure while an upload runs answers
``{"error": reason, "message": ...}`` with exit code 1.

Backends: the local one works on ``<scratch>/<kernel>/home/work`` (a path may
follow a symlink only into the work directory or into one of the kernel's
mounts); the Docker one uses the engine's archive API (``get_archive``,
``put_archive``, streamed) and a few busybox-compatible ``sh`` commands in the
container (listing, ``mkdir``, the final ``mv``): the engine resolves paths
inside the container, so a symlink there cannot reach the host.
"""
from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import queue
import secrets
import stat
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from agents.protocol import CHUNK
from .backends.base import Backend, ChunksEndpoint, KernelError, StreamEndpoint
from .streams import register_kind

__all__ = ["MAX_ENTRIES", "MAX_PATHS", "WORKDIR", "open_download", "open_files", "open_upload", "work_parts"]

log = logging.getLogger(__name__)

WORKDIR = "/home/work"
#: The most paths one download may name, and the longest path.
MAX_PATHS = 100
MAX_PATH_LENGTH = 4096
#: The most entries one listing answers (``truncated`` says when there were more).
MAX_ENTRIES = 10_000
#: The largest upload an agent takes when the manager names no limit.
MAX_UPLOAD = 100 * 2**30
#: Temporary names of uploads in progress: ``.<name>.bai-upload-<random>``.
TEMP_MARK = ".bai-upload-"
_TAR_FORMAT = tarfile.PAX_FORMAT
_BLOCK = tarfile.BLOCKSIZE


# --- paths -------------------------------------------------------------------------------------

def work_parts(path: Any, *, allow_root: bool = True) -> tuple[str, ...]:
    """The components of ``path`` below ``/home/work``; :class:`KernelError` ``invalid-path`` if it leaves it."""
    if not isinstance(path, str):
        raise KernelError("invalid-path", "a path must be a string")
    if len(path) > MAX_PATH_LENGTH or "\x00" in path:
        raise KernelError("invalid-path", "the path is too long or holds a NUL character")
    text = path.strip() or "."
    if text.startswith("/"):
        if text != WORKDIR and not text.startswith(WORKDIR + "/"):
            raise KernelError("invalid-path", f"{path!r} is outside {WORKDIR}")
        text = text[len(WORKDIR):]
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if ".." in parts:
        raise KernelError("invalid-path", f"{path!r} holds '..'")
    if not parts and not allow_root:
        raise KernelError("invalid-path", f"{path!r} names the work directory itself")
    return parts


def _abspath(parts: tuple[str, ...]) -> str:
    return posixpath.join(WORKDIR, *parts) if parts else WORKDIR


def _entry(name: str, size: int, mode: int, mtime: float) -> dict[str, Any]:
    return {"filename": name, "size": int(size), "mode": stat.filemode(mode), "mtime": float(mtime)}


def _listing(entries: list[dict[str, Any]], parts: tuple[str, ...], truncated: bool) -> bytes:
    entries.sort(key=lambda e: e["filename"])
    return json.dumps({"files": entries, "abspath": _abspath(parts), "truncated": truncated}).encode()


# --- tar streaming -----------------------------------------------------------------------------

def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(_TAR_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    rest = size % _BLOCK
    return b"\0" * (_BLOCK - rest) if rest else b""


def _member_data(read: Callable[[int], bytes], size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes from ``read`` (zeros if the file shrank meanwhile), then the block padding."""
    left = size
    while left > 0:
        chunk = read(min(CHUNK * 4, left))
        if not chunk:
            yield b"\0" * left  # the file shrank while it was sent: keep the archive well formed
            break
        left -= len(chunk)
        yield chunk
    yield _padding(size)


def _end_of_archive() -> bytes:
    return b"\0" * (2 * _BLOCK)


# --- the local backend -------------------------------------------------------------------------

class LocalFiles:
    """The work directory of a local kernel (``<scratch>/<kernel>/home/work``)."""

    def __init__(self, backend: Any, kernel_id: str):
        state = backend._running_state(kernel_id)
        self.kernel_id = kernel_id
        self.work = (backend._dir(kernel_id) / "home" / "work").resolve()
        roots = [self.work]
        for host_path in state.get("mounts") or []:
            try:
                roots.append(Path(host_path).resolve())
            except (OSError, RuntimeError):
                continue
        self.roots = roots

    def _inside(self, real: Path) -> bool:
        return any(real == root or root in real.parents for root in self.roots)

    def resolve(self, parts: tuple[str, ...]) -> Path:
        """The real path of ``parts`` (symlinks followed), refused unless it stays in the work dir or a mount."""
        try:
            real = self.work.joinpath(*parts).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise KernelError("invalid-path", f"{_abspath(parts)}: {exc}") from None
        if not self._inside(real):
            raise KernelError("invalid-path", f"{_abspath(parts)} leads outside the work directory")
        return real

    def existing(self, parts: tuple[str, ...]) -> Path:
        real = self.resolve(parts)
        if not os.path.lexists(real):
            raise KernelError("not-found", f"{_abspath(parts)} does not exist")
        return real

    # files
    def listing(self, parts: tuple[str, ...]) -> bytes:
        real = self.existing(parts)
        if not real.is_dir():
            raise KernelError("not-a-directory", f"{_abspath(parts)} is not a directory")
        entries: list[dict[str, Any]] = []
        truncated = False
        try:
            with os.scandir(real) as it:
                for item in it:
                    if len(entries) >= MAX_ENTRIES:
                        truncated = True
                        break
                    try:
                        st = item.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile
                    entries.append(_entry(item.name, st.st_size, st.st_mode, st.st_mtime))
        except OSError as exc:
            raise KernelError("not-readable", f"{_abspath(parts)}: {exc.strerror}") from None
        return _listing(entries, parts, truncated)

    # download
    def tar(self, paths: list[tuple[str, ...]]) -> Callable[[], Iterator[bytes]]:
        reals = [(self.existing(parts), parts[-1] if parts else "work") for parts in paths]

        def chunks() -> Iterator[bytes]:
            for real, arcname in reals:
                yield from _local_tree(real, arcname)
            yield _end_of_archive()

        return chunks

    def raw(self, parts: tuple[str, ...]) -> Callable[[], Iterator[bytes]]:
        real = self.existing(parts)
        if not real.is_file():
            raise KernelError("is-a-directory", f"{_abspath(parts)} is not a regular file")

        def chunks() -> Iterator[bytes]:
            with open(real, "rb") as fh:
                while chunk := fh.read(CHUNK * 4):
                    yield chunk

        return chunks

    # upload
    def upload(self, parts: tuple[str, ...], size: int) -> StreamEndpoint:
        return LocalUpload(self, parts, size)


def _tarinfo(path: Path, arcname: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid, info.gid = st.st_uid, st.st_gid
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
    else:
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    return info


def _local_tree(top: Path, top_name: str) -> Iterator[bytes]:
    """A tar of ``top`` (already resolved and checked) named ``top_name``; symlinks below it stay links."""
    stack: list[tuple[Path, str, bool]] = [(top, top_name, True)]
    while stack:
        path, arcname, follow = stack.pop()
        try:
            st = path.stat() if follow else path.lstat()
        except OSError:
            continue  # removed meanwhile
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            continue  # sockets, fifos, devices: nothing to send
        try:
            info = _tarinfo(path, arcname, st)
        except OSError:
            continue
        if info.isreg():
            try:
                fh = open(path, "rb")
            except OSError:
                continue
            with fh:
                yield _header(info)
                yield from _member_data(fh.read, info.size)
            continue
        yield _header(info)
        if info.isdir():
            try:
                names = sorted(os.listdir(path), reverse=True)
            except OSError:
                names = []
            stack.extend((path / name, f"{arcname}/{name}", False) for name in names)


class _Answer(StreamEndpoint):
    """A stream that takes data, then answers one JSON document once the work is done."""

    def __init__(self) -> None:
        super().__init__()
        self._done = threading.Event()
        self._answer: bytes | None = None
        self._code: int | None = None
        self.received = 0

    def _finish(self, body: dict[str, Any], code: int) -> None:
        if self._done.is_set():
            return
        self._answer = json.dumps(body).encode()
        self._code = code
        self._done.set()

    def _fail(self, reason: str, message: str) -> None:
        self._finish({"error": reason, "message": message}, 1)

    @property
    def failed(self) -> bool:
        return self._done.is_set() and self._code != 0

    def read(self, size: int) -> bytes:
        while not self._done.wait(self.poll_interval):
            if self.closed:
                return b""
        if self.closed:
            return b""
        answer, self._answer = self._answer or b"", b""
        return answer

    def exit_code(self) -> int | None:
        return self._code


class _Upload(_Answer):
    """One file's bytes (exactly ``size`` of them), then ``stream.eof``: put in place, answer ``{path, size}``.

    The bytes go to a temporary name (:meth:`_append`), which :meth:`_complete`
    moves onto the target; whatever goes wrong, :meth:`_discard` removes the
    temporary file and the directories made for it, and the answer says why."""

    def __init__(self, files: Any, parts: tuple[str, ...], size: int):
        super().__init__()
        self.files = files
        self.size = size
        self.target_name = _abspath(parts)
        self._lock = threading.Lock()

    def _append(self, data: bytes) -> None:
        """Write ``data`` after what came before; raises ``OSError`` with the reason."""
        raise OSError("not writable")

    def _complete(self) -> str | None:
        """Every byte came: move the file into place; the reason it failed, or None."""
        return "not writable"

    def _discard(self) -> None:
        """Remove the temporary file and the directories made for it."""

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._done.is_set() or self.closed:
                raise OSError("the upload is over")
            self.received += len(data)
            if self.received > self.size:
                self._discard()
                self._fail("too-large", f"more than the announced {self.size} bytes for {self.target_name}")
                raise OSError("too many bytes")
            try:
                self._append(data)
            except OSError as exc:
                self._discard()
                self._fail("not-writable", f"{self.target_name}: {exc.strerror or exc}")
                raise

    def write_eof(self) -> None:
        with self._lock:
            if self._done.is_set() or self.closed:
                return
            if self.received != self.size:
                self._discard()
                self._fail("incomplete", f"{self.received} of {self.size} bytes arrived for {self.target_name}")
                return
            error = self._complete()
            if error is not None:
                self._discard()
                self._fail("not-writable", f"{self.target_name}: {error}")
                return
            log.info("kernel %s: uploaded %s (%d bytes)", self.files.kernel_id, self.target_name, self.size)
            self._finish({"path": self.target_name, "size": self.size}, 0)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            if not self._done.is_set():
                self._discard()
                self._fail("cancelled", "the upload was cancelled")


class LocalUpload(_Upload):
    """Bytes into ``.<name>.bai-upload-<random>`` beside the target, renamed into place at the end."""

    def __init__(self, files: LocalFiles, parts: tuple[str, ...], size: int):
        super().__init__(files, parts, size)
        self.created: list[Path] = []
        parent = self._parent(parts[:-1])
        target = parent / parts[-1]
        if target.is_dir() and not target.is_symlink():
            self._undo_dirs()
            raise KernelError("is-a-directory", f"{self.target_name} is a directory")
        self.target = target
        try:
            fd, tmp = _mkstemp(parent, parts[-1])
        except OSError as exc:
            self._undo_dirs()
            raise KernelError("not-writable", f"{self.target_name}: {exc.strerror}") from None
        self.tmp = Path(tmp)
        self.fh = os.fdopen(fd, "wb")

    def _parent(self, parts: tuple[str, ...]) -> Path:
        """The directory the file goes into, made one checked component at a time."""
        current = self.files.work
        for name in parts:
            step = current / name
            if step.is_symlink():
                step = step.resolve()
                if not self.files._inside(step):
                    self._undo_dirs()
                    raise KernelError("invalid-path", f"{self.target_name} leads outside the work directory")
            if not os.path.lexists(step):
                try:
                    step.mkdir()
                except OSError as exc:
                    self._undo_dirs()
                    raise KernelError("not-writable", f"{self.target_name}: {exc.strerror}") from None
                self.created.append(step)
            elif not step.is_dir():
                self._undo_dirs()
                raise KernelError("not-a-directory", f"{step.name} in {self.target_name} is not a directory")
            current = step
        return current

    def _undo_dirs(self) -> None:
        for path in reversed(self.created):
            try:
                path.rmdir()
            except OSError:
                break
        self.created = []

    def _discard(self) -> None:
        try:
            self.fh.close()
        except OSError:
            pass
        try:
            self.tmp.unlink()
        except OSError:
            pass
        self._undo_dirs()

    def _append(self, data: bytes) -> None:
        self.fh.write(data)

    def _complete(self) -> str | None:
        try:
            self.fh.flush()
            os.fchmod(self.fh.fileno(), 0o644)
            self.fh.close()
            os.replace(self.tmp, self.target)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None


def _mkstemp(parent: Path, name: str) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f".{name[:100]}{TEMP_MARK}", dir=parent)


# --- the Docker backend ------------------------------------------------------------------------

#: Lists a directory: per entry ``<size> <raw mode, hex> <mtime>\n<name>\0``; exit 2 missing, 3 not a directory.
_LIST_SCRIPT = r"""p=$1; n=0
[ -e "$p" ] || exit 2
[ -d "$p" ] || exit 3
cd -- "$p" || exit 4
for f in * .[!.]* ..?*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  n=$((n+1)); [ "$n" -gt "$2" ] && { printf 'truncated\0'; exit 0; }
  s=$(stat -c '%s %f %Y' -- "$f") || continue
  printf '%s\n%s\0' "$s" "$f"
done
"""
#: Prints the first path that does not exist (exit 1), else nothing.
_EXISTS_SCRIPT = r"""for p; do [ -e "$p" ] || [ -L "$p" ] || { printf '%s' "$p"; exit 1; }; done"""
#: Makes the missing directories of $2 (each printed), owned by $1 (uid:gid); exit 3 if a component is no directory.
_MKDIR_SCRIPT = r"""o=$1; shift; d=/
for c in "$@"; do
  d="${d%/}/$c"
  if [ -e "$d" ]; then [ -d "$d" ] || { printf '%s' "$d"; exit 3; }; continue; fi
  mkdir -- "$d" || exit 4
  chown "$o" "$d" 2>/dev/null
  printf '%s\0' "$d"
done
"""


class DockerFiles:
    """The work directory of a kernel's running container."""

    def __init__(self, backend: Any, kernel_id: str):
        self.kernel_id = kernel_id
        self.container = backend._running_container(kernel_id)
        self.api = backend.client.api

    def _exec(self, argv: list[str], user: str = "") -> tuple[int, bytes]:
        try:
            created = self.api.exec_create(self.container.id, argv, stdout=True, stderr=False, user=user)
            output = self.api.exec_start(created["Id"])
            code = self.api.exec_inspect(created["Id"]).get("ExitCode")
        except Exception as exc:  # noqa: BLE001 - docker.errors.APIError and connection errors
            raise KernelError("exec-failed", f"kernel {self.kernel_id}: {exc}") from None
        return (code if code is not None else 1), output or b""

    def listing(self, parts: tuple[str, ...]) -> bytes:
        path = _abspath(parts)
        code, out = self._exec(["/bin/sh", "-c", _LIST_SCRIPT, "sh", path, str(MAX_ENTRIES)])
        if code == 2:
            raise KernelError("not-found", f"{path} does not exist")
        if code == 3:
            raise KernelError("not-a-directory", f"{path} is not a directory")
        if code != 0:
            raise KernelError("not-readable", f"{path} cannot be listed (exit {code})")
        entries: list[dict[str, Any]] = []
        truncated = False
        for record in out.split(b"\0"):
            if record == b"truncated":
                truncated = True
                continue
            head, sep, name = record.partition(b"\n")
            fields = head.split()
            if not sep or len(fields) != 3:
                continue
            try:
                size, mode, mtime = int(fields[0]), int(fields[1], 16), int(fields[2])
            except ValueError:
                continue
            entries.append(_entry(name.decode("utf-8", "surrogateescape"), size, mode, mtime))
        return _listing(entries, parts, truncated)

    def _check_exist(self, paths: list[str]) -> None:
        code, out = self._exec(["/bin/sh", "-c", _EXISTS_SCRIPT, "sh", *paths])
        if code == 1:
            raise KernelError("not-found", f"{out.decode('utf-8', 'replace') or 'a path'} does not exist")
        if code != 0:
            raise KernelError("not-readable", f"cannot check the paths (exit {code})")

    def tar(self, paths: list[tuple[str, ...]]) -> Callable[[], Iterator[bytes]]:
        absolute = [_abspath(parts) for parts in paths]
        self._check_exist(absolute)

        def chunks() -> Iterator[bytes]:
            for path in absolute:
                stream, _stat = self.api.get_archive(self.container.id, path, chunk_size=CHUNK * 4)
                source = tarfile.open(fileobj=_IterReader(stream), mode="r|")
                try:
                    for member in source:
                        yield _header(member)
                        if member.isreg():
                            data = source.extractfile(member)
                            yield from _member_data(data.read if data else (lambda n: b""), member.size)
                finally:
                    source.close()
                    getattr(stream, "close", lambda: None)()
            yield _end_of_archive()

        return chunks

    def raw(self, parts: tuple[str, ...]) -> Callable[[], Iterator[bytes]]:
        path = _abspath(parts)
        code, _ = self._exec(["/bin/sh", "-c", '[ -e "$1" ] || exit 2; [ -f "$1" ] || exit 3', "sh", path])
        if code == 2:
            raise KernelError("not-found", f"{path} does not exist")
        if code != 0:
            raise KernelError("is-a-directory", f"{path} is not a regular file")

        def chunks() -> Iterator[bytes]:
            stream, _stat = self.api.get_archive(self.container.id, path, chunk_size=CHUNK * 4)
            source = tarfile.open(fileobj=_IterReader(stream), mode="r|")
            try:
                member = source.next()
                data = source.extractfile(member) if member is not None and member.isreg() else None
                if data is None:
                    raise OSError(f"{path} is no longer a regular file")
                while chunk := data.read(CHUNK * 4):
                    yield chunk
            finally:
                source.close()
                getattr(stream, "close", lambda: None)()

        return chunks

    def owner(self) -> str:
        code, out = self._exec(["/bin/sh", "-c", 'stat -c "%u:%g" "$1"', "sh", WORKDIR])
        text = out.decode("ascii", "replace").strip()
        return text if code == 0 and text.replace(":", "").isdigit() else "0:0"

    def upload(self, parts: tuple[str, ...], size: int) -> StreamEndpoint:
        return DockerUpload(self, parts, size)


class _IterReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (the engine's archive stream)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it = iter(chunks)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            try:
                self._rest = next(self._it)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


_ABORT = object()


class DockerUpload(_Upload):
    """Bytes into the container through ``put_archive`` (a tar of one file, streamed), then an ``mv`` into place."""

    def __init__(self, files: DockerFiles, parts: tuple[str, ...], size: int):
        super().__init__(files, parts, size)
        self.parent = _abspath(parts[:-1])
        self.tmp_name = f".{parts[-1][:100]}{TEMP_MARK}{secrets.token_hex(6)}"
        self.owner = files.owner()
        self.created: list[str] = []
        code, out = files._exec(["/bin/sh", "-c", _MKDIR_SCRIPT, "sh", self.owner, *WORKDIR.strip("/").split("/"),
                                 *parts[:-1]])
        *made, tail = out.split(b"\0")
        self.created = [p.decode("utf-8", "surrogateescape") for p in made if p]
        if code == 3:
            self._undo_dirs()
            raise KernelError("not-a-directory", f"{tail.decode('utf-8', 'replace')} is not a directory")
        if code != 0:
            self._undo_dirs()
            raise KernelError("not-writable", f"cannot make the directories of {self.target_name} (exit {code})")
        code, _ = files._exec(["/bin/sh", "-c", '[ -d "$1" ] && [ ! -L "$1" ] && exit 3; exit 0', "sh",
                               self.target_name])
        if code == 3:
            self._undo_dirs()
            raise KernelError("is-a-directory", f"{self.target_name} is a directory")
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=8)
        self._put_error: str | None = None
        self._thread = threading.Thread(target=self._put, daemon=True, name=f"upload-{files.kernel_id[:8]}")
        self._thread.start()

    def _body(self) -> Iterator[bytes]:
        info = tarfile.TarInfo(self.tmp_name)
        info.size, info.mode = self.size, 0o644
        uid, _, gid = self.owner.partition(":")
        info.uid, info.gid = int(uid or 0), int(gid or 0)
        info.mtime = int(time.time())
        yield _header(info)
        while True:
            item = self.queue.get()
            if item is None:
                break
            if item is _ABORT:
                raise OSError("the upload was abandoned")
            yield item
        yield _padding(self.size)
        yield _end_of_archive()

    def _put(self) -> None:
        try:
            if not self.files.api.put_archive(self.files.container.id, self.parent, self._body()):
                self._put_error = "the engine refused the archive"
        except Exception as exc:  # noqa: BLE001 - reported in the answer
            self._put_error = str(exc)

    def _undo_dirs(self) -> None:
        if self.created:
            self.files._exec(["/bin/sh", "-c", 'for d; do rmdir -- "$d" 2>/dev/null; done', "sh",
                              *reversed(self.created)])
            self.created = []

    def _discard(self) -> None:
        self.queue_put(_ABORT)
        self._thread.join(timeout=30)
        self.files._exec(["/bin/sh", "-c", 'rm -f -- "$1"', "sh", posixpath.join(self.parent, self.tmp_name)])
        self._undo_dirs()

    def queue_put(self, item: Any) -> None:
        while self._thread.is_alive():
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _append(self, data: bytes) -> None:
        if not self._thread.is_alive():
            raise OSError(self._put_error or "the engine stopped reading")
        self.queue_put(data)

    def _complete(self) -> str | None:
        self.queue_put(None)
        self._thread.join()
        if self._put_error is not None:
            return self._put_error
        code, _ = self.files._exec(["/bin/sh", "-c", 'mv -f -- "$1" "$2"', "sh",
                                    posixpath.join(self.parent, self.tmp_name), self.target_name])
        return f"mv failed (exit {code})" if code != 0 else None


# --- leftovers of uploads cut short -------------------------------------------------------------

#: Most entries of a work directory looked at when sweeping (a huge tree must not stall the start).
SWEEP_LIMIT = 200_000


def sweep_uploads(backend: Backend, kernel_id: str) -> int:
    """Remove the temporary files of uploads that were in progress when the daemon died (``kill -9``
    leaves ``.<name>.bai-upload-<random>`` behind, and nobody else will finish or discard it).

    Called for each kernel the restarted daemon re-adopts, before any new upload can start, so every
    such file is a leftover.  Only the kernel's own work directory is swept: mounted folders (the
    local backend's symlinks, the container's bind mounts) may be shared with sessions on other
    agents whose uploads are still running.  Returns how many were removed (-1 when it could not look)."""
    try:
        if backend.name == "local":
            removed = _sweep_local(LocalFiles(backend, kernel_id).work)
        elif backend.name == "docker":
            removed = _sweep_docker(backend, kernel_id)
        else:
            return 0
    except (KernelError, OSError) as exc:
        log.warning("kernel %s: could not sweep leftover uploads: %s", kernel_id, exc)
        return -1
    if removed:
        log.warning("kernel %s: removed %d leftover upload file(s) of uploads cut short", kernel_id, removed)
    return removed


def _sweep_local(work: Path) -> int:
    removed = seen = 0
    for top, dirs, names in os.walk(work, followlinks=False):  # mounts are symlinks: not followed
        for name in names:
            seen += 1
            if TEMP_MARK in name:
                path = Path(top) / name
                if not path.is_symlink():
                    try:
                        path.unlink()
                        removed += 1
                    except OSError:
                        pass
        seen += len(dirs)
        if seen > SWEEP_LIMIT:
            break
    return removed


def _sweep_docker(backend: Any, kernel_id: str) -> int:
    files = DockerFiles(backend, kernel_id)
    mounts = [m.get("Destination") for m in (files.container.attrs.get("Mounts") or [])]
    prune: list[str] = []
    for dest in mounts:
        if isinstance(dest, str) and dest.startswith(WORKDIR + "/"):
            prune += ["-path", dest, "-prune", "-o"]
    code, output = files._exec(["find", WORKDIR, "-xdev", *prune, "-type", "f", "-name", f"*{TEMP_MARK}*",
                                "-print", "-exec", "rm", "-f", "--", "{}", "+"], user="root")  # busybox has no -delete
    if code != 0:
        raise KernelError("exec-failed", f"find exited with {code}")
    return len([line for line in output.splitlines() if line.strip()])


# --- the openers -------------------------------------------------------------------------------

def _files_of(backend: Backend, kernel_id: str) -> LocalFiles | DockerFiles:
    if backend.name == "local":
        return LocalFiles(backend, kernel_id)
    if backend.name == "docker":
        return DockerFiles(backend, kernel_id)
    raise KernelError("unsupported", f"the {backend.name} backend has no file access")


def open_files(backend: Backend, kernel_id: str, frame: dict[str, Any]) -> StreamEndpoint:
    parts = work_parts(frame.get("path", "."))
    answer = _files_of(backend, kernel_id).listing(parts)
    return ChunksEndpoint(lambda: iter([answer]))


def open_download(backend: Backend, kernel_id: str, frame: dict[str, Any]) -> StreamEndpoint:
    paths = frame.get("paths")
    if not isinstance(paths, list) or not paths or len(paths) > MAX_PATHS:
        raise KernelError("invalid-path", f"paths must be a list of 1 to {MAX_PATHS} paths")
    parts = [work_parts(p, allow_root=False) for p in paths]
    if frame.get("raw") is True:
        if len(parts) != 1:
            raise KernelError("invalid-path", "a raw download names exactly one file")
        chunks = _files_of(backend, kernel_id).raw(parts[0])
    else:
        chunks = _files_of(backend, kernel_id).tar(parts)
    log.info("kernel %s: download of %s", kernel_id, ", ".join(_abspath(p) for p in parts))
    return ChunksEndpoint(chunks)


def open_upload(backend: Backend, kernel_id: str, frame: dict[str, Any]) -> StreamEndpoint:
    parts = work_parts(frame.get("path"), allow_root=False)
    if TEMP_MARK in parts[-1]:
        raise KernelError("invalid-path", f"{parts[-1]!r} is a name reserved for uploads in progress")
    size, limit = frame.get("size"), frame.get("limit", MAX_UPLOAD)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        limit = MAX_UPLOAD
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise KernelError("invalid-size", "size must be a non-negative integer")
    if size > min(limit, MAX_UPLOAD):
        raise KernelError("too-large", f"{size} bytes is more than the limit of {min(limit, MAX_UPLOAD)}")
    return _files_of(backend, kernel_id).upload(parts, size)


register_kind("files", open_files)
register_kind("download", open_download)
register_kind("upload", open_upload)
