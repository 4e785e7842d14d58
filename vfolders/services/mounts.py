"""Folders in sessions: where a folder appears in a kernel (``container_path``) and
the folders a new session mounts (``resolve_mounts``, reference §9)."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from django.utils import timezone

from accounts.models import Project, User
from backendai.api import errors
from vfolders.models import USABLE_STATUSES, HostPermission, OwnershipType, VFolder, VFolderPermission
from vfolders.services import proxy
from vfolders.services.access import Access, get_folder, list_folders, require_usable
from vfolders.services.files import clean_path, display_path, relpath
from vfolders.services.hosts import host_permissions
from vfolders.services.inputs import PERMISSIONS, RESERVED_VFOLDERS, verify_vfolder_name

WORK_DIR = PurePosixPath("/home/work")
_SYSTEM_DIRS = tuple(PurePosixPath(p) for p in sorted(RESERVED_VFOLDERS) if p.startswith("/"))


def container_path(raw, name: str) -> str:
    """Where a folder appears in the kernel: ``/home/work/<name>`` by default, a
    relative target under ``/home/work``, an absolute one as given unless reserved."""
    if raw is None or raw == "":
        raw = str(WORK_DIR / name)
    if not isinstance(raw, str) or "\x00" in raw or "\\" in raw:
        raise errors.InvalidAPIParameters(f"Invalid mount destination for {name!r}")
    if not raw.startswith("/"):
        raw = f"{WORK_DIR}/{raw}"
    if ".." in raw.split("/"):
        raise errors.InvalidAPIParameters(f"The mount destination {raw!r} must not contain '..'")
    path = PurePosixPath(raw)
    if path in (PurePosixPath("/"), WORK_DIR, PurePosixPath("/home")):
        raise errors.InvalidAPIParameters(f"The mount destination {raw!r} is reserved")
    if path.is_relative_to(WORK_DIR):
        first = path.relative_to(WORK_DIR).parts[0]
        if not verify_vfolder_name(first):
            raise errors.InvalidAPIParameters(f"The mount destination {raw!r} shadows the session's {first}")
    else:
        for reserved in _SYSTEM_DIRS:
            if path == reserved or path.is_relative_to(reserved):
                raise errors.InvalidAPIParameters(f"The mount destination {raw!r} is a reserved system path")
    return str(path)


def agent_path(folder: VFolder) -> Path:
    """Where agents see the folder's directory: under the host's ``mount_path`` when set, else
    under the volume path its proxy reported (kept on the host: no call per mount)."""
    host = folder.host
    root = Path(host.mount_path) if host.mount_path else proxy.volume_root(host)
    return root / folder.relative_path


def _overlap(a: tuple, b: tuple) -> bool:
    short = min(len(a), len(b))
    return a[:short] == b[:short]


def _requested_mounts(mounts, mount_map: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    """The mounts asked for (``mount_map``'s keys count too) as ``(raw, ref, subpath parts)``."""
    mounts = list(mounts)
    for key in mount_map:
        if key not in mounts:
            mounts.append(key)
    requested = []
    for raw in mounts:
        if not isinstance(raw, str) or not raw.strip():
            raise errors.InvalidAPIParameters("Each mount must be a folder name or id")
        raw = raw.strip()
        ref, _, sub = raw.partition("/")
        sub_parts = clean_path(sub, what=f"the subpath of {raw!r}")
        requested.append((raw, ref, sub_parts))
    return requested


def _mount_mode(access: Access, raw: str, wanted) -> str:
    """``ro`` or ``rw``: the permission asked for, checked against the user's access
    (none asked: the most the user may have)."""
    if wanted not in (None, "", *PERMISSIONS):
        raise errors.InvalidAPIParameters(f"Mount permission for {raw!r} must be one of ro, rw, wd")
    if wanted == VFolderPermission.READ_ONLY:
        return "ro"
    if wanted in (VFolderPermission.READ_WRITE, VFolderPermission.RW_DELETE):
        if not access.can_write:
            raise errors.VFolderPermissionError(
                f"The folder {access.folder.name!r} is read-only for you; it cannot be mounted {wanted}")
        return "rw"
    return "rw" if access.can_write else "ro"


def _may_mount(perms: dict | None, folder: VFolder) -> bool:
    """Whether the host permissions (None: a superadmin's, all) allow mounting ``folder``."""
    return perms is None or HostPermission.MOUNT in perms.get(folder.host_id, set())


class _MountPlan:
    """The mounts of one session as they are added, with the sources and destinations
    they take (two mounts may not overlap in either)."""

    def __init__(self):
        self.result: list[dict] = []
        self.sources: list[tuple] = []
        self.destinations: list[tuple] = []
        self.mounted_ids: set = set()

    def add(self, access: Access, raw: str, sub_parts: tuple, wanted, destination, explicit: bool) -> None:
        """Add one mount; an automatic one (not ``explicit``) whose destination is taken is skipped."""
        folder = access.folder
        mode = _mount_mode(access, raw, wanted)
        target = container_path(destination, folder.name)
        target_parts = PurePosixPath(target).parts
        source = (folder.pk,) + sub_parts
        for other in self.sources:
            if other[0] == folder.pk and _overlap(other, source):
                raise errors.InvalidAPIParameters(f"The mount {raw!r} overlaps another mount of the same folder")
        for other in self.destinations:
            if _overlap(other, target_parts):
                if not explicit:
                    return
                raise errors.InvalidAPIParameters(f"The mount destination {target} overlaps another mount")
        host_path = agent_path(folder).joinpath(*sub_parts)
        self.sources.append(source)
        self.destinations.append(target_parts)
        self.mounted_ids.add(folder.pk)
        self.result.append({"vfolder_id": str(folder.pk), "name": folder.name, "host": folder.host_id,
                            "subpath": display_path(sub_parts), "host_path": str(host_path),
                            "container_path": target, "mode": mode, "permission": access.permission,
                            "usage_mode": folder.usage_mode})


def _add_requested(plan: _MountPlan, user: User, perms: dict | None, requested: list,
                   mount_map: dict, mount_options: dict) -> None:
    """The mounts the request names: usable folders on hosts the user may mount from,
    existing subpaths, the options and destinations the request gives."""
    for raw, ref, sub_parts in requested:
        access = get_folder(user, ref)
        folder = access.folder
        require_usable(folder)
        if not _may_mount(perms, folder):
            raise errors.VFolderPermissionError(
                f"Mounting folders of the storage host {folder.host_id} is not allowed for you "
                "(needs the 'mount-in-session' host permission)")
        if sub_parts:  # the proxy checks it is a directory inside the folder
            proxy.folder_call(folder, "GET", "/folder/mount", {"subpath": relpath(sub_parts)})
        options = mount_options.get(raw) or mount_options.get(ref) or {}
        if not isinstance(options, dict):
            raise errors.InvalidAPIParameters(f"mount_options for {raw!r} must be an object")
        plan.add(access, raw, sub_parts, options.get("permission"), mount_map.get(raw) or mount_map.get(ref), True)


def _add_dot_folders(plan: _MountPlan, user: User, perms: dict | None) -> None:
    """The user's usable dot-folders (``.local``...) not mounted yet, where the host
    allows it; a project's ``.local`` mounts a per-user subdirectory."""
    dot_folders = [a for a in list_folders(user, statuses=USABLE_STATUSES)
                   if a.folder.name.startswith(".") and a.folder.pk not in plan.mounted_ids]
    for access in dot_folders:
        folder = access.folder
        if not _may_mount(perms, folder):
            continue
        sub_parts = ()
        if folder.ownership_type == OwnershipType.GROUP and folder.name == ".local":
            sub_parts = (user.pk.hex,)  # a project's .local is per user
            proxy.folder_call(folder, "POST", "/folder/file/mkdir",
                              {"relpath": relpath(sub_parts), "parents": False, "exist_ok": True})
        plan.add(access, folder.name, sub_parts, None, None, False)


def resolve_mounts(user: User, project: Project | None, mounts: list, mount_map: dict, mount_options: dict,
                   keypair=None) -> list[dict]:
    """The folders a new session of ``user`` mounts (reference §9), as
    ``[{"vfolder_id", "name", "host_path", "container_path", "mode", ...}]``.

    ``mounts`` are folder names or ids, optionally ``name/sub/path``; ``mount_map``
    maps them to destinations; ``mount_options`` to ``{"permission": ro|rw|wd}``.
    The user's accessible dot-folders (``.local``...) are added."""
    mounts = list(mounts or [])
    mount_map = dict(mount_map or {})
    mount_options = dict(mount_options or {})
    requested = _requested_mounts(mounts, mount_map)
    perms = None if user.is_superadmin else host_permissions(user, keypair, project)
    plan = _MountPlan()
    _add_requested(plan, user, perms, requested, mount_map, mount_options)
    _add_dot_folders(plan, user, perms)
    if plan.mounted_ids:
        VFolder.objects.filter(pk__in=list(plan.mounted_ids)).update(last_used=timezone.now())
    return plan.result
