"""Files in a running session (Backend.AI's ``upload``, ``download``, ``download_single``, ``files``).

Thin: parse and check the request, find the session's main kernel
(``sessions.streams.http_target``), then ``sessions.files`` does the work.

The official client sends:

* ``POST /session/{s}/upload``: ``multipart/form-data``, one ``src`` part per file
  whose *filename* is the path relative to its working directory (``sub/a.txt``);
* ``GET /session/{s}/download`` with the JSON body ``{"files": [...]}``: the
  answer is ``multipart/mixed`` with one ``application/x-tar`` part that the client
  extracts (``POST`` and ``?files=`` are taken too);
* ``GET /session/{s}/files`` with the JSON body ``{"path": ...}`` (or ``?path=``):
  ``{"files": "<JSON text of [{filename, size, mode, mtime}]>", "errors", "abspath"}``.
"""
from __future__ import annotations

import posixpath
import secrets
from urllib.parse import quote, unquote

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFilesSent
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import StreamingHttpResponse
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from backendai.api import errors
from backendai.streaming import is_asgi
from sessions import files as service
from sessions.streams import http_target

#: Room for the multipart framing around the files themselves.
MULTIPART_OVERHEAD = 1 * 2**20


def _owner(request) -> str | None:
    value = request.query_params.get("owner_access_key")
    if value is None and request.method != "POST" and isinstance(request.data, dict):
        value = request.data.get("owner_access_key")
    if value is not None and (not isinstance(value, str) or len(value) > 64):
        raise errors.InvalidAPIParameters("owner_access_key: must be an access key")
    return value or None


_MISSING = object()


def _param(request, name: str, default=_MISSING):
    """``name`` from the JSON body, else from the query string (a list when repeated), else ``default``
    (a missing value is passed on as ``None``, which the checks refuse)."""
    data = request.data if isinstance(request.data, dict) else {}
    if name in data:
        return data[name]
    values = request.query_params.getlist(name)
    if not values:
        return None if default is _MISSING else default
    return values if len(values) > 1 else values[0]


# --- upload -------------------------------------------------------------------------------------

class _SpoolToDisk(FileUploadHandler):
    """Every part to a temporary file (never to memory), counting against the request's limit;
    the part's file name is kept whole as ``relative_path`` (Django keeps only its base name)."""

    def __init__(self, request=None, limit: int = 0):
        super().__init__(request)
        self.limit = limit
        self.total = 0

    def new_file(self, field_name, file_name, *args, **kwargs):
        super().new_file(field_name, file_name, *args, **kwargs)
        self.file = TemporaryUploadedFile("upload", self.content_type, 0, self.charset, self.content_type_extra)

    def receive_data_chunk(self, raw_data, start):
        self.total += len(raw_data)
        if self.total > self.limit:
            self.file.close()
            raise errors.PayloadTooLarge(f"The upload is larger than the limit of {self.limit} bytes")
        self.file.write(raw_data)
        return None

    def file_complete(self, file_size):
        self.file.seek(0)
        self.file.size = file_size
        self.file.relative_path = self.file_name
        return self.file


class _PathKeepingParser(DjangoMultiPartParser):
    def sanitize_file_name(self, file_name):
        # the client's file name is a relative path, percent-encoded by aiohttp ("sub%2Fa.txt", "%25" for
        # "%"), as Backend.AI's aiohttp server reads it; sessions.files.clean_path checks it
        file_name = unquote(file_name or "")
        return file_name or None


class UploadParser(BaseParser):
    media_type = "multipart/form-data"

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        handler = _SpoolToDisk(request, service.upload_limit())
        try:
            parser = _PathKeepingParser(request.META, stream, [handler], settings.DEFAULT_CHARSET)
            data, files = parser.parse()
        except (MultiPartParserError, TooManyFilesSent, RequestDataTooBig, SuspiciousOperation) as exc:
            raise errors.InvalidAPIParameters(f"The multipart body is malformed: {exc}") from None
        return _Parsed(data, files)


class _Parsed:
    def __init__(self, data, files):
        self.data, self.files = data, files


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise errors.InvalidAPIParameters("Content-Length: not a number") from None


class SessionUploadView(APIView):
    """``POST /session/{s}/upload``: each ``src`` part into the work directory, at its relative path."""

    parser_classes = [UploadParser]

    def post(self, request, name):
        limit = service.upload_limit()
        if _content_length(request) > limit + MULTIPART_OVERHEAD:
            raise errors.PayloadTooLarge(f"The upload is larger than the limit of {limit} bytes")
        if not (request.content_type or "").startswith("multipart/form-data"):
            raise errors.UnsupportedMediaType("Send the files as multipart/form-data")
        target = http_target(request.user, request.auth, name, _owner(request))
        attached = []
        for _field, items in request.FILES.lists():
            attached.extend(items)
        try:
            uploads = [service.Upload(service.clean_path(getattr(f, "relative_path", f.name), "src.filename",
                                                         allow_root=False), f.size, f.read) for f in attached]
            service.check_uploads(uploads)
            done = service.upload_files(target, uploads, is_asgi(request))
        finally:
            for f in attached:
                f.close()
        return Response({"files": done}, status=200)


# --- download -----------------------------------------------------------------------------------

class SessionDownloadView(APIView):
    """``GET|POST /session/{s}/download``: ``multipart/mixed``, one tar of every named path."""

    def get(self, request, name):
        paths = service.clean_paths(_param(request, "files"), "files")
        target = http_target(request.user, request.auth, name, _owner(request))
        download = service.open_download(target, paths, single=False, asgi=is_asgi(request))
        boundary = secrets.token_hex(16)
        head = (f"--{boundary}\r\nContent-Type: application/x-tar\r\n"
                f'Content-Disposition: attachment; filename="files.tar"\r\n\r\n').encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        response = StreamingHttpResponse(download.body(head, tail),
                                         content_type=f"multipart/mixed; boundary={boundary}")
        response["Cache-Control"] = "no-store"
        return response

    post = get


class SessionDownloadSingleView(APIView):
    """``GET|POST /session/{s}/download_single``: one regular file's bytes."""

    def get(self, request, name):
        path = service.clean_path(_param(request, "file"), "file", allow_root=False)
        target = http_target(request.user, request.auth, name, _owner(request))
        download = service.open_download(target, [path], single=True, asgi=is_asgi(request))
        response = StreamingHttpResponse(download.body(), content_type="application/octet-stream")
        response["Content-Disposition"] = _attachment(posixpath.basename(path))
        response["Cache-Control"] = "no-store"
        return response

    post = get


def _attachment(filename: str) -> str:
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


# --- listing ------------------------------------------------------------------------------------

class SessionFilesView(APIView):
    """``GET /session/{s}/files``: the entries of one directory of the work directory."""

    def get(self, request, name):
        path = service.clean_path(_param(request, "path", "."), "path")
        target = http_target(request.user, request.auth, name, _owner(request))
        return Response(service.list_files(target, path, is_asgi(request)))

    post = get
