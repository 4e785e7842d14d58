"""The files inside a folder: path checks, listing, mkdir, rename, move and delete."""
from __future__ import annotations

import json
import logging
import stat as stat_module
from contextlib import contextmanager
from datetime import datetime, timezone as dt_timezone

from django.utils import timezone

from accounts.models import User
from backendai.api import errors
from vfolders import storage
from vfolders.models import VFolder
from vfolders.services.access import get_folder, require_usable

log = logging.getLogger(__name__)


@contextmanager
def disk_errors(action: str):
    """Storage errors as the API reports them."""
    try:
        yield
    except storage.UnsafePath as exc:
        raise errors.InvalidAPIParameters(str(exc)) from None
    except storage.NoSuchPath as exc:
        raise errors.object_not_found("file or directory", str(exc)) from None
    except storage.PathConflict as exc:
        raise errors.VFolderOperationFailed(str(exc)) from None
    except OSError as exc:
        log.warning("%s failed: %s", action, exc)
        raise errors.VFolderOperationFailed(f"{action} failed: {exc.strerror or exc}") from None


def clean_path(raw, *, allow_root=True, what="path", new=False) -> tuple[str, ...]:
    """A path a request names (``vfolders.names`` rules); ``new`` when it names
    something to create (then it must be safe on Windows too)."""
    with disk_errors("checking the path"):
        return storage.clean_relpath(raw, allow_root=allow_root, what=what, new=new)


def check_new_name(raw, what: str = "name") -> str:
    """One new file or directory name (a single component, safe on Windows too)."""
    with disk_errors("checking the name"):
        return storage.clean_name(raw, what)


def folder_root(folder: VFolder) -> storage.FolderRoot:
    return storage.FolderRoot(folder.path)


def touch(folder: VFolder) -> None:
    """Record that the folder was just used."""
    VFolder.objects.filter(pk=folder.pk).update(last_used=timezone.now())


def list_files(user: User, ref, path=".") -> dict:
    access = get_folder(user, ref, need="read")
    folder = access.folder
    require_usable(folder)
    parts = clean_path(path if path not in (None, "") else ".")
    with disk_errors("listing"):
        entries = folder_root(folder).list_dir(parts)
    files = [{"filename": e["name"], "size": e["size"], "mtime": e["mtime"], "mode": stat_module.filemode(e["mode"])}
             for e in entries]
    items = [{"name": e["name"], "size": e["size"],
              "modified": datetime.fromtimestamp(e["mtime"], tz=dt_timezone.utc).isoformat(),
              "mode": stat_module.filemode(e["mode"]), "type": e["type"]} for e in entries]
    return {"path": storage.display_path(parts), "files": json.dumps(files), "items": items}


def make_dirs(user: User, ref, paths, *, parents: bool = False, exist_ok: bool = False) -> dict:
    """mkdir for one path (23.09) or a list (24.09): ``{"results": {"success": [...], "failed": [...]}}``."""
    access = get_folder(user, ref, need="write")
    folder = access.folder
    require_usable(folder)
    raw_paths = paths if isinstance(paths, list) else [paths]
    if not raw_paths:
        raise errors.InvalidAPIParameters("path is required")
    cleaned = [(raw, clean_path(raw, allow_root=False, new=True)) for raw in raw_paths]  # all checked before any change
    root = folder_root(folder)
    with disk_errors("mkdir"):
        for _raw, parts in cleaned:
            root.check(parts)
    success, failed = [], []
    for raw, parts in cleaned:
        try:
            with disk_errors("mkdir"):
                root.mkdir(parts, parents=parents, exist_ok=exist_ok)
        except errors.BackendAIError as exc:
            if not isinstance(paths, list):
                raise  # one path (23.09): the error itself, so the client reports it
            failed.append({"item": str(raw), "msg": exc.msg or exc.error_title})
        else:
            success.append({"item": str(raw), "msg": None})
    return {"results": {"success": success, "failed": failed}}


def rename_file(user: User, ref, target_path, new_name) -> None:
    access = get_folder(user, ref, need="write")
    require_usable(access.folder)
    parts = clean_path(target_path, allow_root=False, what="target_path")
    name = check_new_name(new_name, "new_name")
    with disk_errors("rename"):
        folder_root(access.folder).rename(parts, name)


def move_file(user: User, ref, src, dst) -> str:
    access = get_folder(user, ref, need="write")
    require_usable(access.folder)
    src_parts = clean_path(src, allow_root=False, what="src")
    dst_parts = clean_path(dst, what="dst", new=True)
    with disk_errors("move"):
        target = folder_root(access.folder).move(src_parts, dst_parts)
    return storage.display_path(target)


def delete_files(user: User, ref, files, *, recursive: bool = False) -> None:
    access = get_folder(user, ref, need="delete")
    folder = access.folder
    require_usable(folder)
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not files:
        raise errors.InvalidAPIParameters("files must be a non-empty list of paths")
    paths = [clean_path(f, allow_root=False, what="files") for f in files]
    with disk_errors("delete"):
        folder_root(folder).delete(paths, recursive=recursive)
