"""The storage endpoints the manager serves itself: ``/storage/upload`` (tus 1.0)
and ``/storage/download``.  Unsigned: the ``?token=`` (signed, short-lived,
bound to folder, path, size, operation and user) is the credential.

The official client's tus uploader never POSTs or HEADs: it PATCHes from offset
0 and wants exactly 204 with ``Upload-Offset``.  Browsers may also create (POST)
and ask for the offset (HEAD) to resume.  Bodies are read from the request as a
stream, never ``request.body``, so memory stays flat; downloads are streamed in
fixed chunks with ``Content-Length`` (async iterators under ASGI, so Django does
not collect the whole body first).
"""
from __future__ import annotations

import os

from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header, http_date
from django.views.decorators.csrf import csrf_exempt

from backendai.api import errors
from backendai.streaming import streamed
from vfolders import names, services, storage

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination"


def _tus_headers(response):
    response["Tus-Resumable"] = TUS_VERSION
    response["Cache-Control"] = "no-store"
    return response


def _problem(exc: errors.BackendAIError):
    response = exc.as_response()
    offset = exc.data.get("offset") if isinstance(exc.data, dict) else None
    if offset is not None:
        response["Upload-Offset"] = str(offset)
    if isinstance(exc, errors.UnsupportedTusVersion):
        response["Tus-Version"] = TUS_VERSION
    return response


def _int_header(request, name: str, required: bool) -> int | None:
    raw = request.headers.get(name)
    if raw is None or raw.strip() == "":
        if required:
            raise errors.InvalidAPIParameters(f"The {name} header is required")
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise errors.InvalidAPIParameters(f"The {name} header must be a non-negative integer") from None
    if value < 0:
        raise errors.InvalidAPIParameters(f"The {name} header must be a non-negative integer")
    return value


@csrf_exempt
def upload(request):
    method = request.method
    if method == "OPTIONS":
        response = HttpResponse(status=204)
        response["Tus-Version"] = TUS_VERSION
        response["Tus-Extension"] = TUS_EXTENSIONS
        response["Tus-Max-Size"] = str(services.max_upload_size())
        return _tus_headers(response)
    try:
        if method not in ("PATCH", "HEAD", "POST", "DELETE"):
            raise errors.MethodNotAllowed(f"{method} is not a tus method here")
        version = request.headers.get("Tus-Resumable")
        if version is not None and version.strip() != TUS_VERSION:
            raise errors.UnsupportedTusVersion(f"Only tus {TUS_VERSION} is supported, not {version}")
        target = services.upload_target(request.GET.get("token"))
        if method == "HEAD":
            response = HttpResponse(status=200)
            response["Upload-Offset"] = str(services.upload_offset(target))
            response["Upload-Length"] = str(target.size)
        elif method == "POST":
            offset = services.upload_create(target, _int_header(request, "Upload-Length", required=False))
            response = HttpResponse(status=201)
            response["Location"] = request.build_absolute_uri()
            response["Upload-Offset"] = str(offset)
        elif method == "DELETE":
            services.upload_terminate(target)
            response = HttpResponse(status=204)
        else:
            media = (request.content_type or "").split(";")[0].strip().lower()
            if media != "application/offset+octet-stream":
                raise errors.UnsupportedMediaType("tus PATCH bodies are application/offset+octet-stream")
            offset = _int_header(request, "Upload-Offset", required=True)
            length = _int_header(request, "Content-Length", required=False)
            new_offset = services.upload_patch(target, offset, request, length)
            response = HttpResponse(status=204)
            response["Upload-Offset"] = str(new_offset)
    except errors.BackendAIError as exc:
        response = _problem(exc)
    return _tus_headers(response)


def _streamed(request, iterator):
    """Non-empty chunks of ``iterator`` (a file's), streamed (``backendai.streaming``); the
    iterator itself is closed with the response too."""
    def chunks():
        try:
            yield from (chunk for chunk in iterator if chunk)
        finally:
            getattr(iterator, "close", lambda: None)()

    return streamed(request, chunks())


def _attach(response, filename: str):
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["X-Content-Type-Options"] = "nosniff"
    return response


@csrf_exempt
def download(request):
    try:
        if request.method not in ("GET", "HEAD"):
            raise errors.MethodNotAllowed(f"{request.method} is not allowed here")
        target = services.download_target(request.GET.get("token"))
        with services.disk_errors("download"):
            kind = target.root.kind(target.parts)
        if kind == "directory":
            return _archive(request, target)
        with services.disk_errors("download"):
            fd, info = target.root.open_file(target.parts)
        return _file(request, target, fd, info)
    except errors.BackendAIError as exc:
        return exc.as_response()


def _file(request, target, fd, info):
    size = info.st_size
    last_modified = http_date(info.st_mtime)
    etag = f'"{size:x}-{info.st_mtime_ns:x}"'
    byte_range = None
    if_range = request.headers.get("If-Range")
    if request.headers.get("Range") and (not if_range or if_range.strip() in (last_modified, etag)):
        try:
            byte_range = storage.parse_range(request.headers["Range"], size)
        except storage.RangeNotSatisfiable as exc:
            os.close(fd)
            response = errors.RangeNotSatisfiable(str(exc)).as_response()
            response["Content-Range"] = f"bytes */{size}"
            return response
    start, length, code = 0, size, 200
    if byte_range is not None:
        start, end = byte_range
        length, code = end - start + 1, 206
    if request.method == "HEAD":
        os.close(fd)
        response = HttpResponse(status=code, content_type="application/octet-stream")
    else:
        response = StreamingHttpResponse(_streamed(request, storage.iter_fd(fd, start, length)), status=code,
                                         content_type="application/octet-stream")
    response["Content-Length"] = str(length)
    if code == 206:
        response["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    response["Last-Modified"] = last_modified
    response["ETag"] = etag
    response["Accept-Ranges"] = "bytes"
    return _attach(response, target.parts[-1])


def _archive(request, target):
    fmt = request.GET.get("format") or target.archive_format
    if fmt not in ("zip", "tar"):
        raise errors.InvalidAPIParameters("format must be zip or tar")
    top = names.archive_component(target.top_name)  # the entries' top directory and the file name
    if fmt == "tar":
        with services.disk_errors("archiving"):
            plan = storage.plan_tar(target.root, target.parts, top)
        body = storage.iter_tar(target.root, target.parts, plan)
        content_type, filename = "application/x-tar", f"{top}.tar"
    else:
        plan = None
        with services.disk_errors("archiving"):
            os.close(target.root.open_dir(target.parts))  # a bad path fails before streaming starts
        body = storage.iter_zip(target.root, target.parts, top)
        content_type, filename = "application/zip", f"{top}.zip"
    if request.method == "HEAD":
        response = HttpResponse(content_type=content_type)
    else:
        response = StreamingHttpResponse(_streamed(request, body), content_type=content_type)
    if plan is not None:
        response["Content-Length"] = str(plan.length)
    response["Accept-Ranges"] = "none"
    return _attach(response, filename)
