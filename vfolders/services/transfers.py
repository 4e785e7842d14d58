"""Uploads and downloads: signed transfer tokens bound to folder, path and user,
the tus upload steps (create, offset, patch, terminate) and download targets."""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.core import signing

from accounts.models import User, UserStatus
from backendai.api import errors
from vfolders import storage
from vfolders.models import HostPermission, VFolder
from vfolders.services.access import access_for, get_folder, require, require_usable
from vfolders.services.config import file_mode, max_chunk_size, max_upload_size, public_base_url, token_lifetime
from vfolders.services.files import check_new_name, clean_path, disk_errors, folder_root, touch
from vfolders.services.hosts import require_host_permission
from vfolders.services.inputs import choice
from vfolders.services.quota import check_room, scope_bytes, scope_dirname, scope_limit

log = logging.getLogger(__name__)

TOKEN_SALT = "vfolders.transfer.v1"


def _sign(payload: dict) -> str:
    return signing.dumps(payload, salt=TOKEN_SALT, compress=True)


def _unsign(token, op: str) -> dict:
    if not token or not isinstance(token, str):
        raise errors.GenericForbidden("A transfer token is required (?token=)")
    try:
        data = signing.loads(token, salt=TOKEN_SALT, max_age=token_lifetime())
    except signing.SignatureExpired:
        raise errors.GenericForbidden("The transfer token has expired; request a new one") from None
    except signing.BadSignature:
        raise errors.GenericForbidden("Invalid transfer token") from None
    if not isinstance(data, dict) or data.get("op") != op:
        raise errors.GenericForbidden(f"This token is not for {op}s")
    return data


def _transfer_url(base_url: str, op: str) -> str:
    return base_url.rstrip("/") + f"/storage/{op}"


def request_upload(user: User, ref, path, size, *, base_url: str, keypair=None) -> dict:
    """``POST /folders/{x}/request-upload``: a token bound to folder, path, size and user."""
    access = get_folder(user, ref, need="write")
    folder = access.folder
    require_usable(folder)
    parts = clean_path(path, allow_root=False, new=True)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise errors.InvalidAPIParameters("size must be a non-negative integer (bytes)")
    if size > max_upload_size():
        raise errors.PayloadTooLarge(f"The upload is larger than the maximum of {max_upload_size()} bytes")
    require_host_permission(user, folder.host_id, HostPermission.UPLOAD, keypair)
    root = folder_root(folder)
    with disk_errors("checking the upload target"):
        try:
            kind = root.kind(parts)  # walks the existing parents safely
        except storage.NoSuchPath:
            kind = None  # missing parents are created when the upload completes
        if kind == "directory":
            raise storage.PathConflict(f"A directory exists at {storage.display_path(parts)}")
    check_room(folder, size)
    upload_id = uuid.uuid4().hex
    token = _sign({"op": "upload", "vf": folder.id.hex, "p": "/".join(parts), "sz": size, "u": user.pk.hex,
                   "sid": upload_id})
    if size == 0:  # the official client sends no PATCH for an empty file
        target = upload_target(token)
        with disk_errors("upload"):
            target.staging.create()
            target.staging.finalize(target.root, target.parts, file_mode())
    touch(folder)
    return {"token": token, "url": _transfer_url(base_url, "upload")}


@dataclass
class UploadTarget:
    folder: VFolder
    user: User
    parts: tuple[str, ...]
    size: int
    staging: storage.Staging
    root: storage.FolderRoot
    limit: int


def upload_target(token) -> UploadTarget:
    data = _unsign(token, "upload")
    folder = (VFolder.objects.select_related("host", "user__resource_policy", "project__resource_policy")
              .filter(pk=data.get("vf")).first())
    user = User.objects.filter(pk=data.get("u"), status=UserStatus.ACTIVE).first()
    if folder is None or user is None:
        raise errors.GenericForbidden("The token's folder or user is gone")
    require_usable(folder)
    access = access_for(user, folder)
    if access is None:
        raise errors.GenericForbidden("You no longer have access to this folder")
    require(access, "write")
    staging = storage.Staging(folder.host.root / storage.STAGING_DIRNAME / scope_dirname(folder.quota_scope_id),
                              data["sid"])
    return UploadTarget(folder, user, tuple(data["p"].split("/")), int(data["sz"]), staging,
                        folder_root(folder), scope_limit(folder))


def upload_offset(target: UploadTarget) -> int:
    if target.staging.completed():
        return target.size
    return target.staging.offset() or 0


def upload_create(target: UploadTarget, length: int | None) -> int:
    """tus creation (POST): the declared length must match the token's size."""
    if length is not None and length != target.size:
        raise errors.InvalidAPIParameters(f"Upload-Length {length} differs from the requested size {target.size}")
    if not target.staging.completed() and target.staging.offset() is None:
        with disk_errors("upload"):
            target.staging.create()
    return upload_offset(target)


def upload_terminate(target: UploadTarget) -> None:
    target.staging.discard()


def upload_patch(target: UploadTarget, offset: int, stream, length: int | None, *, whole_file: bool = False) -> int:
    """Append one tus chunk; returns the new offset (the file is in place when it reaches the size).
    ``whole_file`` lifts the chunk limit for a file that arrived whole (a web form)."""
    if not whole_file and length is not None and length > max_chunk_size():
        raise errors.PayloadTooLarge(f"A chunk may be at most {max_chunk_size()} bytes")
    if target.staging.completed():
        if offset == target.size and not length:
            return target.size
        raise errors.UploadOffsetConflict("The upload is already complete", data={"offset": target.size})
    current = target.staging.offset() or 0
    if offset != current:
        raise errors.UploadOffsetConflict(f"Upload-Offset {offset} does not match the stored offset {current}",
                                          data={"offset": current})
    max_bytes, reason = target.size - offset, "size"
    if target.limit >= 0:
        others = scope_bytes(target.folder.host.root, target.folder.quota_scope_id) - current
        if others + target.size > target.limit:
            target.staging.discard()
            raise errors.QuotaExceeded(
                f"The quota scope {target.folder.quota_scope_id} no longer has room for this upload "
                f"({others} of {target.limit} bytes are used); the partial upload was removed",
                data={"limit": target.limit, "used": others, "requested": target.size})
        room = target.limit - others - offset
        if room < max_bytes:
            max_bytes, reason = room, "quota"
    try:
        new_offset = target.staging.write(offset, stream, length, max_bytes, reason)
    except storage.OffsetMismatch as exc:
        raise errors.UploadOffsetConflict(str(exc), data={"offset": exc.current}) from None
    except storage.UploadBusy as exc:
        raise errors.UploadOffsetConflict(str(exc), data={"offset": current}) from None
    except storage.TooMuchData as exc:
        target.staging.discard()
        if exc.reason == "quota":
            raise errors.QuotaExceeded(f"{exc}; the partial upload was removed") from None
        raise errors.PayloadTooLarge(
            f"The upload goes past its declared size of {target.size} bytes; the partial upload was removed") from None
    except OSError as exc:
        log.warning("upload to folder %s failed: %s", target.folder.pk, exc)
        raise errors.VFolderOperationFailed(f"Writing the upload failed: {exc.strerror or exc}") from None
    if new_offset == target.size:
        try:
            with disk_errors("completing the upload"):
                target.staging.finalize(target.root, target.parts, file_mode())
        except errors.BackendAIError:
            target.staging.discard()
            raise
        touch(target.folder)
        log.info("upload of %s bytes to folder %s completed", target.size, target.folder.pk)
    return new_offset


def request_download(user: User, ref, path, *, base_url: str, archive: bool = False, keypair=None,
                     archive_format: str | None = None) -> dict:
    access = get_folder(user, ref, need="read")
    folder = access.folder
    require_usable(folder)
    parts = clean_path(path if path not in (None, "") else ".")
    if archive_format is not None:
        choice(archive_format, ["zip", "tar"], "format")
    require_host_permission(user, folder.host_id, HostPermission.DOWNLOAD, keypair)
    with disk_errors("checking the download"):
        kind = folder_root(folder).kind(parts)
    token = _sign({"op": "download", "vf": folder.id.hex, "p": "/".join(parts), "u": user.pk.hex,
                   "ar": bool(archive) or kind == "directory", "fmt": archive_format or "zip"})
    touch(folder)
    return {"token": token, "url": _transfer_url(base_url, "download")}


@dataclass
class DownloadTarget:
    folder: VFolder
    parts: tuple[str, ...]
    archive: bool
    archive_format: str
    root: storage.FolderRoot

    @property
    def top_name(self) -> str:
        return self.parts[-1] if self.parts else self.folder.name


def download_target(token) -> DownloadTarget:
    data = _unsign(token, "download")
    folder = VFolder.objects.select_related("host").filter(pk=data.get("vf")).first()
    user = User.objects.filter(pk=data.get("u"), status=UserStatus.ACTIVE).first()
    if folder is None or user is None:
        raise errors.GenericForbidden("The token's folder or user is gone")
    require_usable(folder)
    if access_for(user, folder) is None:
        raise errors.GenericForbidden("You no longer have access to this folder")
    parts = tuple(p for p in data.get("p", "").split("/") if p)
    return DownloadTarget(folder, parts, bool(data.get("ar")), data.get("fmt") or "zip", folder_root(folder))


def upload_file_object(user: User, ref, directory, name, fileobj, size: int, keypair=None) -> str:
    """A whole file from a web form (no JavaScript): staged, checked, then moved into place."""
    access = get_folder(user, ref, need="write")
    folder = access.folder
    require_usable(folder)
    dir_parts = clean_path(directory or ".", new=True)
    filename = check_new_name(name, "file name")
    parts = dir_parts + (filename,)
    result = request_upload(user, ref, "/".join(parts), size, base_url=public_base_url(), keypair=keypair)
    if size == 0:
        return storage.display_path(parts)
    target = upload_target(result["token"])
    try:
        offset = upload_patch(target, 0, fileobj, size, whole_file=True)
    except errors.BackendAIError:
        target.staging.discard()
        raise
    if offset != size:
        target.staging.discard()
        raise errors.VFolderOperationFailed("The file arrived incomplete; nothing was saved")
    return storage.display_path(parts)
