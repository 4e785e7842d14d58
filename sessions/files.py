"""Files in a running session: list, upload, download (``docs/api.md``, "Files in a session").

The bytes travel over the agent link (``sessions.kernel_io.KernelIO``, kinds
``files``, ``upload`` and ``download`` of ``docs/agent-protocol.md``) and are
never held whole in memory here: an upload is read from Django's temporary file
in chunks, a download is relayed chunk by chunk into the response body.

Every request is checked before any work (:func:`clean_path`,
:func:`clean_paths`, :func:`check_uploads`); what the agent refuses comes back as
``stream.error`` ``"<reason>: <detail>"`` and becomes the matching API error
(:func:`api_error`).

The calls run on an event loop: under ASGI the server's own (``async_to_sync``
from the view's thread, and the response body an async generator in that same
loop); under WSGI and in the test client one background loop of the process, in
a thread of its own (:class:`Loop`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings

from backendai import admission
from backendai.actions import audited
from backendai.api import errors
from backendai.streaming import TransferBroken
from sessions.kernel_io import KernelIO, KernelIOError
from sessions.streams import StreamTarget

log = logging.getLogger(__name__)

__all__ = ["Download", "Loop", "api_error", "check_uploads", "clean_path", "clean_paths", "list_files",
           "open_download", "upload_files"]

WORKDIR = "/home/work"
MAX_PATH_LENGTH = 4096
MAX_DOWNLOAD_PATHS = 100
#: The longest listing answer taken from the agent (10,000 entries fit easily).
MAX_LISTING = 16 * 2**20
#: How long one chunk of an answer may take.
READ_TIMEOUT = 120.0
_READ_SIZE = 256 * 1024


# --- validation ---------------------------------------------------------------------------------

def clean_path(value: Any, field: str, *, allow_root: bool = True) -> str:
    """A path in the work directory as the agent takes it (relative, or absolute under /home/work)."""
    if not isinstance(value, str):
        raise errors.InvalidAPIParameters(f"{field}: must be a string")
    if len(value) > MAX_PATH_LENGTH:
        raise errors.InvalidAPIParameters(f"{field}: longer than {MAX_PATH_LENGTH} characters")
    if "\x00" in value or any(ord(c) < 32 for c in value):
        raise errors.InvalidAPIParameters(f"{field}: control characters are not allowed")
    text = value.strip() or "."
    if text.startswith("/") and text != WORKDIR and not text.startswith(WORKDIR + "/"):
        raise errors.InvalidAPIParameters(f"{field}: {value!r} is outside {WORKDIR}")
    parts = [p for p in text[len(WORKDIR):].split("/") if p not in ("", ".")] if text.startswith("/") else \
        [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise errors.InvalidAPIParameters(f"{field}: {value!r} leaves the work directory ('..')")
    if not parts and not allow_root:
        raise errors.InvalidAPIParameters(f"{field}: {value!r} names the work directory itself")
    return posixpath.join(*parts) if parts else "."


def clean_paths(value: Any, field: str = "files") -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise errors.InvalidAPIParameters(f"{field}: must be a non-empty list of paths")
    if len(value) > MAX_DOWNLOAD_PATHS:
        raise errors.InvalidAPIParameters(f"{field}: at most {MAX_DOWNLOAD_PATHS} paths")
    return [clean_path(item, f"{field}[{i}]", allow_root=False) for i, item in enumerate(value)]


@dataclass
class Upload:
    """One file of an upload request: where it goes, its size, and how to read it."""

    path: str
    size: int
    read: Callable[[int], bytes]


def upload_limit() -> int:
    return int(settings.SESSION_UPLOAD_MAX_SIZE)


def check_uploads(uploads: list[Upload]) -> None:
    if not uploads:
        raise errors.InvalidAPIParameters("src: no file was attached")
    if len(uploads) > settings.SESSION_UPLOAD_MAX_FILES:
        raise errors.InvalidAPIParameters(f"src: at most {settings.SESSION_UPLOAD_MAX_FILES} files per request")
    total = sum(u.size for u in uploads)
    if total > upload_limit():
        raise errors.PayloadTooLarge(f"The upload is {total} bytes, more than the limit of {upload_limit()}")
    seen = set()
    for upload in uploads:
        if upload.path in seen:
            raise errors.InvalidAPIParameters(f"src: {upload.path!r} is attached twice")
        seen.add(upload.path)


# --- agent errors -------------------------------------------------------------------------------

_REASONS = {
    "invalid-path": errors.InvalidAPIParameters,
    "invalid-size": errors.InvalidAPIParameters,
    "not-a-directory": errors.InvalidAPIParameters,
    "is-a-directory": errors.InvalidAPIParameters,
    "incomplete": errors.InvalidAPIParameters,
    "too-large": errors.PayloadTooLarge,
    "not-writable": errors.GenericForbidden,
    "not-readable": errors.GenericForbidden,
    "kernel-not-running": errors.GenericForbidden,
    "unsupported": errors.GenericBadRequest,
}


def api_error(exc: KernelIOError | dict, target: StreamTarget) -> errors.BackendAIError:
    """The API error for a refusal by the agent (``stream.error`` text, or an upload's error answer)."""
    if isinstance(exc, dict):
        reason, message = str(exc.get("error") or ""), str(exc.get("message") or "the agent refused")
    else:
        if exc.lost or exc.timeout:
            return errors.ServiceUnavailable(f"Session {target.session_name}: {exc.message}")
        reason = exc.message.partition(": ")[0]
        message = exc.message
    if reason == "not-found":
        return errors.object_not_found("file", message)
    return _REASONS.get(reason, errors.ServiceUnavailable)(message)


# --- running the calls --------------------------------------------------------------------------

class Loop:
    """Where the KernelIO calls of one request run (see the module's docstring)."""

    _shared: asyncio.AbstractEventLoop | None = None
    _shared_lock = threading.Lock()

    def __init__(self, asgi: bool):
        self.asgi = asgi
        self._loop = None if asgi else self._background_loop()

    @classmethod
    def _background_loop(cls) -> asyncio.AbstractEventLoop:
        """One event loop per process for the requests of a WSGI server (one channel layer, one loop:
        a channel layer refuses to receive on two loops at once)."""
        with cls._shared_lock:
            if cls._shared is None or cls._shared.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, daemon=True, name="session-files-io").start()
                cls._shared = loop
            return cls._shared

    def run(self, coro_fn: Callable[..., Any], *args: Any) -> Any:
        with admission.waiting():  # the bytes travel to or from the agent meanwhile
            if self._loop is None:
                return async_to_sync(coro_fn)(*args)
            return asyncio.run_coroutine_threadsafe(coro_fn(*args), self._loop).result()


def _io(target: StreamTarget, kind: str, fields: dict[str, Any]) -> KernelIO:
    return KernelIO(target, kind, fields)


# --- listing ------------------------------------------------------------------------------------

def list_files(target: StreamTarget, path: str, asgi: bool) -> dict[str, Any]:
    """The client's answer: ``{"files": <JSON text of the entries>, "errors": "", "abspath"}``."""

    async def call() -> bytes:
        io = _io(target, "files", {"path": path})
        try:
            await io.open()
            return await io.read_all(MAX_LISTING, timeout=READ_TIMEOUT)
        finally:
            await io.close()

    loop = Loop(asgi)
    try:
        raw = loop.run(call)
    except KernelIOError as exc:
        raise api_error(exc, target) from None
    try:
        answer = json.loads(raw)
        entries = answer["files"]
    except (ValueError, KeyError, TypeError):
        raise errors.ServiceUnavailable(f"Session {target.session_name}: the agent's listing is malformed") from None
    log.info("session %s (kernel %s, agent %s): listed %s", target.session_id, target.kernel_id, target.agent_id,
             path)
    return {"files": json.dumps(entries), "errors": "", "abspath": answer.get("abspath", WORKDIR),
            "truncated": bool(answer.get("truncated"))}


# --- upload -------------------------------------------------------------------------------------

@audited("session", "upload", lambda a, k, r: getattr(k.get("target", a[0] if a else None), "session_name", None))
def upload_files(target: StreamTarget, uploads: list[Upload], asgi: bool) -> list[dict[str, Any]]:
    """Send each file to the kernel in turn; stops at the first refusal (files before it stay)."""

    async def one(upload: Upload) -> dict[str, Any]:
        io = _io(target, "upload", {"path": upload.path, "size": upload.size, "limit": upload_limit()})
        try:
            await io.open()
            sent = 0
            try:
                while sent < upload.size:
                    chunk = upload.read(min(_READ_SIZE, upload.size - sent))
                    if not chunk:
                        break
                    sent += len(chunk)
                    await io.write(chunk)
                await io.eof()
            except KernelIOError:
                if not io.ended:
                    raise
            raw = await io.read_all(64 * 1024, timeout=READ_TIMEOUT)
        finally:
            await io.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"error": "malformed", "message": "the agent's answer is malformed"}
        if io.exit_code != 0 or "error" in answer:
            raise api_error(answer, target)
        return answer

    async def call() -> list[dict[str, Any]]:
        return [await one(upload) for upload in uploads]

    loop = Loop(asgi)
    try:
        done = loop.run(call)
    except KernelIOError as exc:
        raise api_error(exc, target) from None
    log.info("session %s (kernel %s, agent %s): uploaded %s", target.session_id, target.kernel_id, target.agent_id,
             ", ".join(f"{u.path} ({u.size} bytes)" for u in uploads))
    return done


# --- download -----------------------------------------------------------------------------------

class Download:
    """An opened ``download`` stream whose answer becomes a response body (:meth:`body`)."""

    def __init__(self, target: StreamTarget, paths: list[str], single: bool, asgi: bool):
        self.target = target
        self.paths = paths
        self.single = single
        self.loop = Loop(asgi)
        self.io = _io(target, "download", {"paths": paths, "raw": single})

    def open(self) -> Download:
        try:
            self.loop.run(self.io.open)
        except KernelIOError as exc:
            raise api_error(exc, self.target) from None
        log.info("session %s (kernel %s, agent %s): download of %s", self.target.session_id, self.target.kernel_id,
                 self.target.agent_id, ", ".join(self.paths))
        return self

    def _failed(self, exc: KernelIOError) -> None:
        log.warning("session %s (kernel %s): download of %s broke off: %s", self.target.session_id,
                    self.target.kernel_id, ", ".join(self.paths), exc.message)

    def body(self, prefix: bytes = b"", suffix: bytes = b"") -> AsyncIterator[bytes] | Iterator[bytes]:
        """The answer's chunks between ``prefix`` and ``suffix``; a break midway raises
        :class:`~backendai.streaming.TransferBroken`, so the connection is dropped and the client
        sees an incomplete body (never a shorter one that ends like a whole one)."""
        if self.loop.asgi:
            return self._async_body(prefix, suffix)
        return self._sync_body(prefix, suffix)

    async def _async_body(self, prefix: bytes, suffix: bytes) -> AsyncIterator[bytes]:
        try:
            if prefix:
                yield prefix
            while (chunk := await self.io.read(timeout=READ_TIMEOUT)) is not None:
                yield chunk
            if self.io.exit_code not in (0, None):
                raise KernelIOError(f"the agent's download ended with exit code {self.io.exit_code}")
            if suffix:
                yield suffix
        except KernelIOError as exc:
            self._failed(exc)
            raise TransferBroken(exc.message) from None  # the client must see an incomplete body, not a whole one
        finally:
            await self.io.close()

    def _sync_body(self, prefix: bytes, suffix: bytes) -> Iterator[bytes]:
        """:meth:`_async_body`, one chunk at a time on the process's background loop (WSGI)."""
        chunks = self._async_body(prefix, suffix)

        async def step() -> bytes | None:
            try:
                return await chunks.__anext__()
            except StopAsyncIteration:
                return None

        try:
            while (chunk := self.loop.run(step)) is not None:
                yield chunk
        finally:
            self.loop.run(chunks.aclose)


def open_download(target: StreamTarget, paths: list[str], *, single: bool, asgi: bool) -> Download:
    return Download(target, paths, single, asgi).open()
