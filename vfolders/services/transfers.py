"""Uploads and downloads: the manager checks who may transfer what, then asks the folder's
storage proxy for a token (``POST /folder/file/upload`` / ``/folder/file/download``) and answers
its ``{token, url}``: the URL is the proxy's client API, so clients and browsers send and fetch
the bytes there directly and the manager never sees them.

The one exception is the web UI's form upload for browsers without JavaScript
(``upload_file_object``): the browser posts the file to the manager, which relays it to the
proxy's tus endpoint in one PATCH (documented in docs/vfolders.md)."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx

from accounts.models import User
from backendai.actions import audited
from backendai.api import errors
from vfolders.models import HostPermission
from vfolders.services import proxy
from vfolders.services.access import get_folder, require_usable
from vfolders.services.config import max_upload_size, token_lifetime
from vfolders.services.files import check_new_name, clean_path, display_path, relpath, touch
from vfolders.services.hosts import require_host_permission
from vfolders.services.inputs import choice
from vfolders.services.quota import push_limit

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"


def _token_answer(folder, answer: dict) -> dict:
    """The proxy's ``{token, url}``, the URL on the proxy's client API as the ``StorageProxy`` row
    says clients reach it (``client_url``: behind a reverse proxy or a relay it differs from what
    the proxy itself knows; the web UI's CSP allows the same origin)."""
    token, url = answer.get("token"), answer.get("url")
    if not isinstance(token, str) or not isinstance(url, str) or not token or not url:
        raise proxy.unavailable(folder.host.proxy_name, "it gave no transfer token")
    base = proxy.client_base(folder.host)
    if base:
        url = base + "/" + urlsplit(url).path.rsplit("/", 1)[-1]
    return {"token": token, "url": url}


@audited("vfolder", "upload", "ref")
def request_upload(user: User, ref, path, size, *, keypair=None) -> dict:
    """``POST /folders/{x}/request-upload``: the proxy's upload token and client-API URL for one
    file of ``size`` bytes (the proxy checks the target and the scope's room; size 0 creates the
    empty file at once)."""
    access = get_folder(user, ref, need="write")
    folder = access.folder
    require_usable(folder)
    parts = clean_path(path, allow_root=False, new=True)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise errors.InvalidAPIParameters("size must be a non-negative integer (bytes)")
    if size > max_upload_size():
        raise errors.PayloadTooLarge(f"The upload is larger than the maximum of {max_upload_size()} bytes")
    require_host_permission(user, folder.host_id, HostPermission.UPLOAD, keypair)
    push_limit(folder.host, folder.quota_scope_id, create=True)  # the proxy enforces the limit decided here
    answer = proxy.folder_call(folder, "POST", "/folder/file/upload", {"relpath": relpath(parts), "size": size})
    touch(folder)
    return _token_answer(folder, answer)


def request_download(user: User, ref, path, *, archive: bool = False, keypair=None,
                     archive_format: str | None = None) -> dict:
    """``POST /folders/{x}/request-download``: the proxy's download token and client-API URL
    (a directory always comes as an archive, zip unless ``archive_format`` says tar)."""
    access = get_folder(user, ref, need="read")
    folder = access.folder
    require_usable(folder)
    parts = clean_path(path if path not in (None, "") else ".")
    if archive_format is not None:
        choice(archive_format, ["zip", "tar"], "format")
    require_host_permission(user, folder.host_id, HostPermission.DOWNLOAD, keypair)
    answer = proxy.folder_call(folder, "POST", "/folder/file/download",
                               {"relpath": relpath(parts), "archive": bool(archive),
                                "format": archive_format or "zip", "name": folder.name})
    touch(folder)
    return _token_answer(folder, answer)


def token_expires_in() -> int:
    """Seconds a transfer token is good for, as the web UI shows it (the proxy's lifetime)."""
    return token_lifetime()


@audited("vfolder", "upload", "ref")
def upload_file_object(user: User, ref, directory, name, fileobj, size: int, keypair=None) -> str:
    """A whole file from a web form (no JavaScript): the upload token is asked for as the API
    does, then the file goes to the proxy's tus endpoint in one PATCH."""
    access = get_folder(user, ref, need="write")
    folder = access.folder
    require_usable(folder)
    dir_parts = clean_path(directory or ".", new=True)
    filename = check_new_name(name, "file name")
    parts = dir_parts + (filename,)
    target = request_upload(user, ref, "/".join(parts), size, keypair=keypair)
    if size == 0:
        return display_path(parts)

    def chunks():
        while True:
            chunk = fileobj.read(1 << 20)
            if not chunk:
                return
            yield chunk

    try:
        response = httpx.patch(target["url"], params={"token": target["token"]}, content=chunks(),
                               headers={"Tus-Resumable": TUS_VERSION, "Upload-Offset": "0",
                                        "Content-Type": "application/offset+octet-stream",
                                        "Content-Length": str(size)},
                               timeout=httpx.Timeout(proxy.timeout(), write=None, read=None), trust_env=False)
    except httpx.HTTPError as exc:
        log.warning("relaying a form upload to folder %s failed: %s", folder.pk, exc)
        raise proxy.unavailable(folder.host.proxy_name, type(exc).__name__) from None
    if response.status_code >= 400:
        raise proxy.problem_error(folder.host.proxy_name, response)
    if response.headers.get("Upload-Offset") != str(size):
        raise errors.VFolderOperationFailed("The file arrived incomplete; nothing was saved")
    return display_path(parts)


def read_file(folder, path, max_bytes: int) -> bytes:
    """The bytes of one file of ``folder`` (at most ``max_bytes``), fetched from its storage proxy
    by the manager itself (a download token, then the proxy's client API, streamed and cut off
    past ``max_bytes``).  For small files the manager reads (a model definition); the caller has
    checked who may read the folder.  ``ObjectNotFound`` when there is no such file,
    ``VFolderOperationFailed`` for a directory, ``PayloadTooLarge`` past the cap."""
    require_usable(folder)
    parts = clean_path(path, allow_root=False)
    shown = display_path(parts)
    info = proxy.folder_call(folder, "POST", "/folder/file/stat", {"relpath": relpath(parts)})
    if info.get("type") not in ("file", "symlink"):
        raise errors.VFolderOperationFailed(f"{shown} in the folder {folder.name!r} is not a file")
    if info.get("type") == "file" and isinstance(info.get("size"), int) and info["size"] > max_bytes:
        raise errors.PayloadTooLarge(f"{shown} is larger than {max_bytes} bytes")
    answer = proxy.folder_call(folder, "POST", "/folder/file/download",
                               {"relpath": relpath(parts), "archive": False, "format": "zip"})
    target = _token_answer(folder, answer)
    data = bytearray()
    try:
        with httpx.stream("GET", target["url"], params={"token": target["token"]}, trust_env=False,
                          timeout=httpx.Timeout(proxy.timeout())) as response:
            if response.status_code >= 400:
                response.read()
                raise proxy.problem_error(folder.host.proxy_name, response)
            for chunk in response.iter_bytes(64 * 1024):
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise errors.PayloadTooLarge(f"{shown} is larger than {max_bytes} bytes")
    except httpx.HTTPError as exc:
        log.warning("reading %s of folder %s failed: %s", shown, folder.pk, exc)
        raise proxy.unavailable(folder.host.proxy_name, type(exc).__name__) from None
    return bytes(data)
