"""The files inside a folder: path checks (here, before any call), then listing, mkdir,
rename, move and delete on the folder's storage proxy (``vfolders.services.proxy``)."""
from __future__ import annotations

import json
import logging
import stat as stat_module
from contextlib import contextmanager
from datetime import datetime
from datetime import timezone as dt_timezone

from django.utils import timezone

from accounts.models import User
from backendai.actions import audited
from backendai.api import errors
from storageproxy import paths
from vfolders.models import VFolder
from vfolders.services import proxy
from vfolders.services.access import get_folder, require_usable

log = logging.getLogger(__name__)


@contextmanager
def path_errors():
    """A path or name a request gives that the rules refuse, as the API reports it."""
    try:
        yield
    except paths.UnsafePath as exc:
        raise errors.InvalidAPIParameters(str(exc)) from None


def clean_path(raw, *, allow_root=True, what="path", new=False) -> tuple[str, ...]:
    """A path a request names (``storageproxy.names`` rules); ``new`` when it names
    something to create (then it must be safe on Windows too)."""
    with path_errors():
        return paths.clean_relpath(raw, allow_root=allow_root, what=what, new=new)


def check_new_name(raw, what: str = "name") -> str:
    """One new file or directory name (a single component, safe on Windows too)."""
    with path_errors():
        return paths.clean_name(raw, what)


def relpath(parts: tuple[str, ...]) -> str:
    """Checked components as the proxy takes them."""
    return "/".join(parts) if parts else "."


display_path = paths.display_path


def touch(folder: VFolder) -> None:
    """Record that the folder was just used."""
    VFolder.objects.filter(pk=folder.pk).update(last_used=timezone.now())


def list_files(user: User, ref, path=".") -> dict:
    access = get_folder(user, ref, need="read")
    folder = access.folder
    require_usable(folder)
    parts = clean_path(path if path not in (None, "") else ".")
    entries = proxy.folder_call(folder, "POST", "/folder/file/list", {"relpath": relpath(parts)}).get("items") or []
    files = [{"filename": e["name"], "size": e["size"], "mtime": e["mtime"], "mode": stat_module.filemode(e["mode"])}
             for e in entries]
    items = [{"name": e["name"], "size": e["size"],
              "modified": datetime.fromtimestamp(e["mtime"], tz=dt_timezone.utc).isoformat(),
              "mode": stat_module.filemode(e["mode"]), "type": e["type"]} for e in entries]
    return {"path": display_path(parts), "files": json.dumps(files), "items": items}


@audited("vfolder", "mkdir", "ref")
def make_dirs(user: User, ref, paths_, *, parents: bool = False, exist_ok: bool = False) -> dict:
    """mkdir for one path (23.09) or a list (24.09): ``{"results": {"success": [...], "failed": [...]}}``."""
    access = get_folder(user, ref, need="write")
    folder = access.folder
    require_usable(folder)
    raw_paths = paths_ if isinstance(paths_, list) else [paths_]
    if not raw_paths:
        raise errors.InvalidAPIParameters("path is required")
    cleaned = [(raw, clean_path(raw, allow_root=False, new=True)) for raw in raw_paths]  # all checked before any change
    body = {"parents": bool(parents), "exist_ok": bool(exist_ok)}
    if not isinstance(paths_, list):  # one path (23.09): the error itself, so the client reports it
        proxy.folder_call(folder, "POST", "/folder/file/mkdir", {"relpath": relpath(cleaned[0][1]), **body})
        return {"results": {"success": [{"item": str(cleaned[0][0]), "msg": None}], "failed": []}}
    answer = proxy.folder_call(folder, "POST", "/folder/file/mkdir",
                               {"relpaths": [relpath(parts) for _raw, parts in cleaned], **body})
    results = answer.get("results") if isinstance(answer.get("results"), dict) else answer
    success, failed = [], []
    reported_failed = {str(f.get("item")): f.get("msg") for f in results.get("failed") or [] if isinstance(f, dict)}
    for raw, parts in cleaned:
        key = relpath(parts)
        if key in reported_failed or str(raw) in reported_failed:
            failed.append({"item": str(raw), "msg": reported_failed.get(key, reported_failed.get(str(raw)))})
        else:
            success.append({"item": str(raw), "msg": None})
    return {"results": {"success": success, "failed": failed}}


@audited("vfolder", "rename-file", "ref")
def rename_file(user: User, ref, target_path, new_name) -> None:
    access = get_folder(user, ref, need="write")
    require_usable(access.folder)
    parts = clean_path(target_path, allow_root=False, what="target_path")
    name = check_new_name(new_name, "new_name")
    proxy.folder_call(access.folder, "POST", "/folder/file/rename", {"relpath": relpath(parts), "new_name": name})


@audited("vfolder", "move-file", "ref")
def move_file(user: User, ref, src, dst) -> str:
    access = get_folder(user, ref, need="write")
    require_usable(access.folder)
    src_parts = clean_path(src, allow_root=False, what="src")
    dst_parts = clean_path(dst, what="dst", new=True)
    answer = proxy.folder_call(access.folder, "POST", "/folder/file/move",
                               {"src_relpath": relpath(src_parts), "dst_relpath": relpath(dst_parts)})
    shown = answer.get("relpath")
    if not isinstance(shown, str):
        raise proxy.unavailable(access.folder.host.proxy_name, "it did not say where the file went")
    return shown


@audited("vfolder", "delete-files", "ref")
def delete_files(user: User, ref, files, *, recursive: bool = False) -> None:
    access = get_folder(user, ref, need="delete")
    folder = access.folder
    require_usable(folder)
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not files:
        raise errors.InvalidAPIParameters("files must be a non-empty list of paths")
    cleaned = [clean_path(f, allow_root=False, what="files") for f in files]
    proxy.folder_call(folder, "POST", "/folder/file/delete",
                      {"relpaths": [relpath(p) for p in cleaned], "recursive": bool(recursive)})
