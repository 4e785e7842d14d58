"""The client API: uploads (tus 1.0.0) and downloads, authorised by the ``?token=`` the
manager handed out, with no Backend.AI headers.

The official client's tus uploader never POSTs or HEADs: it PATCHes from offset 0 and wants
exactly 204 with ``Upload-Offset``, so the first PATCH creates the staged upload.  Bodies are
read from the socket in pieces and written by a worker thread (the event loop never waits on
the disk); the staged file's size is the tus offset, so what survives a crash of the proxy is
always a prefix of the upload and the client resumes from there."""
from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate

from aiohttp import web

from storageproxy import errors, fs, names, tokens
from storageproxy.app import CTX_KEY, ProxyContext, blocking, ctx_of, problem_middleware, translate
from storageproxy.backends import FolderMissing, QuotaFull, Volume
from storageproxy.paths import UnsafePath, clean_relpath, parse_vfid

log = logging.getLogger("storageproxy.client")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination"
WRITE_BATCH = 4 * 2**20  # bytes gathered from the socket per write (one pwritev in a worker thread)
STALL_FLUSH = 0.05  # seconds a received piece may wait for its batch to fill before it is written
DOWNLOAD_CHUNK = 4 * 2**20  # pread size when sendfile is not available
_SESSION_RE = re.compile(r"[0-9a-f]{32}")
CORS_ALLOW_HEADERS = ("Tus-Resumable, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Defer-Length, "
                      "Upload-Concat, Content-Type, Range, If-Range, X-Requested-With, X-HTTP-Method-Override")
CORS_EXPOSE_HEADERS = ("Upload-Offset, Upload-Length, Upload-Metadata, Tus-Resumable, Tus-Version, Tus-Extension, "
                       "Tus-Max-Size, Location, Content-Range, Content-Length, Content-Disposition, Accept-Ranges, "
                       "Last-Modified, ETag")


# --- CORS ----------------------------------------------------------------------------------------

@web.middleware
async def cors_middleware(request: web.Request, handler):
    if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        response = web.Response(status=204)
        response.headers.update({
            "Access-Control-Allow-Methods": "GET, HEAD, POST, PATCH, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
            "Access-Control-Max-Age": "86400",
        })
        if request.path == "/upload":
            _tus_headers(response, ctx_of(request))
    else:
        response = await handler(request)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    return response


def _tus_headers(response: web.StreamResponse, ctx: ProxyContext | None = None) -> web.StreamResponse:
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.headers["Cache-Control"] = "no-store"
    if ctx is not None:
        response.headers["Tus-Version"] = TUS_VERSION
        response.headers["Tus-Extension"] = TUS_EXTENSIONS
        response.headers["Tus-Max-Size"] = str(ctx.config.max_upload_size)
    return response


# --- uploads -------------------------------------------------------------------------------------

@dataclass
class UploadTarget:
    volume: Volume
    vfid: str
    qsid: str
    parts: tuple[str, ...]
    size: int
    staging: fs.Staging
    root: fs.FolderRoot

    def offset(self) -> int:
        if self.staging.completed():
            return self.size
        offset = self.staging.settled_offset() or 0
        return self.size if self.staging.completed() else offset


def _claim(claims: dict, key: str, kind: type):
    value = claims.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise errors.GenericForbidden(f"Invalid transfer token (bad {key})")
    return value


def _token_folder(ctx: ProxyContext, claims: dict) -> tuple[Volume, str, str]:
    volume = ctx.volumes.get(_claim(claims, "volume", str))
    if volume is None:
        raise errors.GenericForbidden("The token's volume is not served here")
    try:
        qsid, folder = parse_vfid(_claim(claims, "vfid", str))
    except UnsafePath:
        raise errors.GenericForbidden("Invalid transfer token (bad vfid)") from None
    return volume, f"{qsid}/{folder}", qsid


def _upload_target(ctx: ProxyContext, token) -> UploadTarget:
    claims = tokens.verify(ctx.config.secret, token, "upload")
    volume, vfid, qsid = _token_folder(ctx, claims)
    try:
        parts = clean_relpath(_claim(claims, "relpath", str), allow_root=False, new=True)
    except UnsafePath:
        raise errors.GenericForbidden("Invalid transfer token (bad relpath)") from None
    size = _claim(claims, "size", int)
    session = _claim(claims, "session", str)
    if not 0 <= size <= ctx.config.max_upload_size or not _SESSION_RE.fullmatch(session):
        raise errors.GenericForbidden("Invalid transfer token")
    try:
        root = volume.folder_root(vfid)
    except FolderMissing:
        raise errors.GenericForbidden("The token's folder is gone") from None
    return UploadTarget(volume, vfid, qsid, parts, size, fs.Staging(volume.staging_dir(qsid), session), root)


def _int_header(request: web.Request, name: str, required: bool) -> int | None:
    raw = request.headers.get(name)
    if raw is None or raw.strip() == "":
        if required:
            raise errors.InvalidAPIParameters(f"The {name} header is required")
        return None
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 19:
        raise errors.InvalidAPIParameters(f"The {name} header must be a non-negative integer")
    return int(raw)


def _open_locked(staging: fs.Staging, offset: int) -> int:
    """The staged file opened for appending at ``offset`` under an exclusive lock."""
    import fcntl

    staging.directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(staging.part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise fs.UploadBusy("Another request is writing this upload") from None
        current = os.fstat(fd).st_size
        if current != offset:
            raise fs.OffsetMismatch(current)
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_directory(path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_batch(fd: int, pieces: list[bytes], offset: int) -> int:
    """Write the pieces at ``offset`` (one ``pwritev``, no joining copy); the PATCH's ``fsync`` makes
    them durable.  (Starting their write-back at once with ``sync_file_range`` was tried: no clear
    gain on the development machine's disk, where it made a plain copy up to four times slower.)"""
    return fs.write_pieces(fd, pieces, offset)


class _BodyWriter:
    """Hands the body of one PATCH to worker threads in batches, in order: one write in flight at
    a time (at explicit offsets) while the next batch gathers from the socket.  A batch goes out
    when it reaches ``WRITE_BATCH`` bytes, at the end of the body, or ``STALL_FLUSH`` seconds after
    its first piece arrived (a slow or paused client), so a crash of the proxy loses at most what
    arrived in the last moments of an unacknowledged PATCH."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, offset: int):
        self.loop, self.fd = loop, fd
        self.queued = offset  # the offset after the bytes handed to writes so far
        self.written = 0  # bytes the finished writes put in the file
        self.batch: list[bytes] = []
        self.batched = 0
        self.pending: asyncio.Future | None = None
        self.timer: asyncio.TimerHandle | None = None

    def add(self, data: bytes) -> None:
        self.batch.append(data)
        self.batched += len(data)
        if self.timer is None:
            self.timer = self.loop.call_later(STALL_FLUSH, self._stalled)

    def full(self) -> bool:
        return self.batched >= WRITE_BATCH

    def _submit(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        future = self.loop.run_in_executor(None, _write_batch, self.fd, self.batch, self.queued)
        future.add_done_callback(self._written)  # runs before anything awaiting the future resumes
        self.pending = future
        self.queued += self.batched
        self.batch, self.batched = [], 0

    def _written(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is None:
            self.written += future.result()

    def _stalled(self) -> None:
        self.timer = None
        if not self.batch:
            return
        pending = self.pending
        if pending is not None:
            if not pending.done():
                self.timer = self.loop.call_later(STALL_FLUSH, self._stalled)
                return
            if pending.cancelled() or pending.exception() is not None:
                return  # nothing more is written; the handler reports the failure
        self._submit()

    async def settle(self) -> None:
        """Wait until no write is in flight (the timer may start one meanwhile); raises the OSError
        of a failed one."""
        while self.pending is not None:
            future = self.pending
            await asyncio.wait([future])
            if self.pending is future:
                self.pending = None
            future.result()

    async def flush(self) -> None:
        """The write in flight finished, the gathered batch handed to the next one."""
        await self.settle()
        if self.batch:
            self._submit()

    async def close(self, keep: bool) -> None:
        """No timer, no write in flight (its error retrieved); with ``keep`` (the upload goes on,
        e.g. the handler was cancelled by a cut connection) the gathered batch is written first."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        future, self.pending = self.pending, None
        if future is not None:
            await asyncio.wait([future])
            failed = future.cancelled() or future.exception() is not None
        else:
            failed = False
        if keep and self.batch and not failed:
            self._submit()
            future, self.pending = self.pending, None
            await asyncio.wait([future])
            if not future.cancelled():
                future.exception()


def _finish(fd: int, directory=None) -> None:
    """fsync (and close) the staged file; with ``directory``, the directory too (a first PATCH:
    the new file's name is as durable as its bytes)."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if directory is not None:
        _fsync_directory(directory)


class _Refused(Exception):
    def __init__(self, error: errors.ProxyError):
        self.error = error


async def _patch(ctx: ProxyContext, target: UploadTarget, offset: int, request: web.Request,
                 length: int | None) -> int:
    staging = target.staging
    if await blocking(staging.completed):
        if offset == target.size and not length:
            return target.size
        raise errors.UploadOffsetConflict("The upload is already complete", data={"offset": target.size})
    current = await blocking(staging.offset) or 0
    if offset != current:
        raise errors.UploadOffsetConflict(f"Upload-Offset {offset} does not match the stored offset {current}",
                                          data={"offset": current})
    try:
        allowance = await blocking(target.volume.upload_allowance, target.qsid, target.size, offset)
    except QuotaFull as exc:
        await blocking(staging.discard)
        raise errors.UploadQuotaExceeded(str(exc), exc.data or None) from None
    max_chunk = ctx.config.max_chunk_size
    if length is not None and length > allowance.max_bytes:
        await blocking(staging.discard)
        raise _too_much(target, allowance.reason, allowance.max_bytes)
    try:
        fd = await blocking(_open_locked, staging, offset)
    except fs.OffsetMismatch as exc:
        raise errors.UploadOffsetConflict(str(exc), data={"offset": exc.current}) from None
    except fs.UploadBusy as exc:
        raise errors.UploadOffsetConflict(str(exc), data={"offset": current}) from None

    def refusal(exc: OSError) -> errors.ProxyError:
        if target.volume.is_quota_error(exc):
            return errors.UploadQuotaExceeded(
                f"The quota scope {target.qsid} is full (the filesystem refused the bytes); "
                "the partial upload was removed")
        raise exc

    async def next_piece() -> bytes:
        """The next piece the socket brought (b"" at the end of the body)."""
        try:
            while True:
                data, end_of_http_chunk = await request.content.readchunk()
                if data or not end_of_http_chunk:
                    return data
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the client went away mid-body: keep what arrived
            log.info("upload %s: the body ended early (%s); %d bytes kept", staging.upload_id,
                     type(exc).__name__, received)
            return b""

    writer = _BodyWriter(asyncio.get_running_loop(), fd, offset)
    received = 0
    refused: errors.ProxyError | None = None
    try:
        while True:
            data = await next_piece()
            if data:
                if received + len(data) > allowance.max_bytes:
                    refused = _too_much(target, allowance.reason, allowance.max_bytes)
                    break
                if received + len(data) > max_chunk:
                    refused = errors.PayloadTooLarge(f"A chunk may be at most {max_chunk} bytes; "
                                                     "the partial upload was removed")
                    break
                received += len(data)
                writer.add(data)
                if writer.full():
                    try:
                        await writer.flush()
                    except OSError as exc:
                        refused = refusal(exc)
                        break
            else:
                try:
                    await writer.flush()
                    await writer.settle()
                except OSError as exc:
                    refused = refusal(exc)
                break
    finally:
        await writer.close(keep=refused is None)
        try:
            # fsync: the offset about to be acknowledged is on the disk
            await blocking(_finish, fd, staging.directory if offset == 0 else None)
        except OSError as exc:
            if refused is None and target.volume.is_quota_error(exc):
                refused = errors.UploadQuotaExceeded(f"The quota scope {target.qsid} is full; "
                                                     "the partial upload was removed")
            elif refused is None:
                raise
    written = writer.written
    if refused is not None:
        await blocking(staging.discard)
        raise refused
    new_offset = offset + written
    if new_offset == target.size:
        try:
            await blocking(staging.finalize, target.root, target.parts, target.volume.file_mode)
        except BaseException as exc:
            await blocking(staging.discard)
            if isinstance(exc, OSError) and target.volume.is_quota_error(exc):
                raise errors.UploadQuotaExceeded(f"The quota scope {target.qsid} is full; "
                                                 "the partial upload was removed") from None
            raise
        log.info("upload of %d bytes to %s:%s/%s completed", target.size, target.volume.name, target.vfid,
                 "/".join(target.parts))
    return new_offset


def _too_much(target: UploadTarget, reason: str, max_bytes: int) -> errors.ProxyError:
    if reason == "quota":
        return errors.UploadQuotaExceeded(
            f"The upload goes past the room left in the quota scope {target.qsid} ({max_bytes} more bytes); "
            "the partial upload was removed")
    return errors.PayloadTooLarge(
        f"The upload goes past its declared size of {target.size} bytes; the partial upload was removed")


def _tus_problem(exc: errors.ProxyError) -> web.Response:
    extra = {}
    offset = exc.data.get("offset") if isinstance(exc.data, dict) else None
    if offset is not None:
        extra["Upload-Offset"] = str(offset)
    if isinstance(exc, errors.UnsupportedTusVersion):
        extra["Tus-Version"] = TUS_VERSION
    return exc.response(extra)


async def upload(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    method = request.method
    if method == "OPTIONS":
        return _tus_headers(web.Response(status=204), ctx)
    try:
        if method not in ("PATCH", "HEAD", "POST", "DELETE"):
            raise errors.MethodNotAllowed(f"{method} is not a tus method here")
        version = request.headers.get("Tus-Resumable")
        if version is not None and version.strip() != TUS_VERSION:
            raise errors.UnsupportedTusVersion(f"Only tus {TUS_VERSION} is supported, not {version[:32]}")
        target = await blocking(_upload_target, ctx, request.query.get("token"))
        request["log_context"] = {"volume": target.volume.name, "vfid": target.vfid,
                                  "session": target.staging.upload_id}
        if method == "HEAD":
            response = web.Response(status=200)
            response.headers["Upload-Offset"] = str(await blocking(target.offset))
            response.headers["Upload-Length"] = str(target.size)
        elif method == "POST":
            length = _int_header(request, "Upload-Length", required=False)
            if length is not None and length != target.size:
                raise errors.InvalidAPIParameters(
                    f"Upload-Length {length} differs from the requested size {target.size}")
            if not await blocking(target.staging.completed) and await blocking(target.staging.offset) is None:
                await blocking(target.staging.create)
            response = web.Response(status=201)
            response.headers["Location"] = str(request.url)
            response.headers["Upload-Offset"] = str(await blocking(target.offset))
        elif method == "DELETE":
            await blocking(target.staging.discard)
            response = web.Response(status=204)
        else:
            media = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if media != "application/offset+octet-stream":
                raise errors.UnsupportedMediaType("tus PATCH bodies are application/offset+octet-stream")
            offset = _int_header(request, "Upload-Offset", required=True)
            length = _int_header(request, "Content-Length", required=False)
            if length is not None and length > ctx.config.max_chunk_size:
                raise errors.PayloadTooLarge(f"A chunk may be at most {ctx.config.max_chunk_size} bytes")
            new_offset = await _patch(ctx, target, offset, request, length)
            response = web.Response(status=204)
            response.headers["Upload-Offset"] = str(new_offset)
    except Exception as exc:
        mapped = translate(exc, upload=True)
        if mapped is None:
            raise
        response = _tus_problem(mapped)
    return _tus_headers(response)


# --- downloads -----------------------------------------------------------------------------------

@dataclass
class DownloadTarget:
    volume: Volume
    vfid: str
    parts: tuple[str, ...]
    archive_format: str
    root: fs.FolderRoot
    name: str | None = None

    @property
    def top_name(self) -> str:
        if self.parts:
            return self.parts[-1]
        return self.name or self.vfid.rsplit("/", 1)[-1]


def _download_target(ctx: ProxyContext, token) -> DownloadTarget:
    claims = tokens.verify(ctx.config.secret, token, "download")
    volume, vfid, _ = _token_folder(ctx, claims)
    try:
        parts = clean_relpath(_claim(claims, "relpath", str))
    except UnsafePath:
        raise errors.GenericForbidden("Invalid transfer token (bad relpath)") from None
    fmt = claims.get("format") or "zip"
    if fmt not in ("zip", "tar"):
        raise errors.GenericForbidden("Invalid transfer token (bad format)")
    try:
        root = volume.folder_root(vfid)
    except FolderMissing:
        raise errors.GenericForbidden("The token's folder is gone") from None
    name = claims.get("name")
    if name is not None and (not isinstance(name, str) or not name or len(name) > 255):
        raise errors.GenericForbidden("Invalid transfer token (bad name)")
    return DownloadTarget(volume, vfid, parts, fmt, root, name)


def _http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def _content_disposition(filename: str) -> str:
    from urllib.parse import quote

    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


@contextmanager
def _cut_on_failure(request: web.Request) -> Iterator[None]:
    """A download that fails after its head went out cannot answer with an error any more: log it
    and cut the connection, so the client sees a short body, never a complete-looking one.  A
    client that left (or a cancelled handler) goes on as it is."""
    try:
        yield
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("download of %s failed mid-stream", request.path)
        if request.transport is not None:
            request.transport.close()


async def _stream(request: web.Request, response: web.StreamResponse, iterator) -> web.StreamResponse:
    await response.prepare(request)
    try:
        with _cut_on_failure(request):
            while True:
                chunk = await blocking(next, iterator, None)
                if chunk is None:
                    break
                if chunk:
                    await response.write(chunk)
            await response.write_eof()
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            await blocking(close)
    return response


async def download(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    if request.method not in ("GET", "HEAD"):
        raise errors.MethodNotAllowed(f"{request.method} is not allowed here")
    target = await blocking(_download_target, ctx, request.query.get("token"))
    request["log_context"] = {"volume": target.volume.name, "vfid": target.vfid}
    kind = await blocking(target.root.kind, target.parts)
    if kind == "directory":
        return await _archive(request, target)
    fd, info = await blocking(target.root.open_file, target.parts)
    return await _file(request, target, fd, info)


async def _file(request: web.Request, target: DownloadTarget, fd: int, info: os.stat_result):
    size = info.st_size
    last_modified = _http_date(info.st_mtime)
    etag = f'"{size:x}-{info.st_mtime_ns:x}"'
    byte_range = None
    if_range = request.headers.get("If-Range")
    if request.headers.get("Range") and (not if_range or if_range.strip() in (last_modified, etag)):
        try:
            byte_range = fs.parse_range(request.headers["Range"], size)
        except fs.RangeNotSatisfiable as exc:
            os.close(fd)
            raise errors.RangeNotSatisfiable(str(exc), headers={"Content-Range": f"bytes */{size}"}) from None
    start, length, code = 0, size, 200
    if byte_range is not None:
        start, end = byte_range
        length, code = end - start + 1, 206
    response = web.StreamResponse(status=code)
    response.content_type = "application/octet-stream"
    response.content_length = length
    if code == 206:
        response.headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    response.headers["Last-Modified"] = last_modified
    response.headers["ETag"] = etag
    response.headers["Accept-Ranges"] = "bytes"
    _attach(response, target.parts[-1])
    if request.method == "HEAD":
        os.close(fd)
        await response.prepare(request)
        await response.write_eof()
        return response
    return await _send_file(request, response, fd, start, length)


async def _send_file(request: web.Request, response: web.StreamResponse, fd: int, start: int,
                     length: int) -> web.StreamResponse:
    """The body of a file download: ``loop.sendfile`` (``os.sendfile`` from the page cache to the
    socket, no copy through Python) on a plain TCP transport; ``pread`` in a worker thread and
    ``write`` elsewhere (TLS, an event loop without sendfile).  Exactly ``length`` bytes are sent,
    zero-padded if the file shrank meanwhile.  Owns ``fd``."""
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        with _cut_on_failure(request):
            await response.prepare(request)
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("Connection lost")
            sendfile = getattr(loop, "sendfile", None)
            if length and sendfile is not None:
                with open(fd, "rb", buffering=0, closefd=False) as file:
                    try:
                        sent = await sendfile(transport, file, start, length, fallback=False)
                    except (NotImplementedError, asyncio.SendfileNotAvailableError):
                        sent = 0  # nothing was sent: the checks come before the first byte
            while sent < length:
                want = min(DOWNLOAD_CHUNK, length - sent)
                data = await blocking(os.pread, fd, want, start + sent) or bytes(want)
                await response.write(data)
                sent += len(data)
            await response.write_eof()
    finally:
        os.close(fd)
    return response


def _attach(response: web.StreamResponse, filename: str) -> None:
    response.headers["Content-Disposition"] = _content_disposition(filename)
    response.headers["X-Content-Type-Options"] = "nosniff"


async def _archive(request: web.Request, target: DownloadTarget):
    fmt = request.query.get("format") or target.archive_format
    if fmt not in ("zip", "tar"):
        raise errors.InvalidAPIParameters("format must be zip or tar")
    top = names.archive_component(target.top_name)
    response = web.StreamResponse(status=200)
    if fmt == "tar":
        plan = await blocking(fs.plan_tar, target.root, target.parts, top)
        body = fs.iter_tar(target.root, target.parts, plan)
        response.content_type = "application/x-tar"
        response.content_length = plan.length
        filename = f"{top}.tar"
    else:
        await blocking(lambda: os.close(target.root.open_dir(target.parts)))  # a bad path fails before streaming
        body = fs.iter_zip(target.root, target.parts, top)
        response.content_type = "application/zip"
        filename = f"{top}.zip"
    response.headers["Accept-Ranges"] = "none"
    _attach(response, filename)
    if request.method == "HEAD":
        body.close()
        await response.prepare(request)
        await response.write_eof()
        return response
    return await _stream(request, response, body)


def build_client_app(ctx: ProxyContext) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024,
                          middlewares=[cors_middleware, problem_middleware(upload=True, api="client")])
    app[CTX_KEY] = ctx
    app.router.add_route("*", "/upload", upload)
    app.router.add_route("*", "/download", download)
    return app
