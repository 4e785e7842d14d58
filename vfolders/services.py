"""Business rules for virtual folders: the only place that changes folders,
permissions, invitations and the files inside folders.  REST views, web views,
admin actions, GraphQL resolvers, Celery tasks and session creation call these.

Who may do what (reference §9, with the choices this project made):

* the **owner** of a user folder has ``wd`` and manages it (rename, options,
  trash, restore, purge, invite);
* an **invitee** who accepted gets the invitation's permission;
* a **project member** gets the project folder's permission, or the one a
  share gave them (it overrides);
* a **domain admin** has ``wd`` on and manages every folder of the domain, a
  **superadmin** on every folder (admins find other people's folders by id;
  names resolve among the folders one owns, is invited to or shares a project of);
* ``ro`` reads and downloads, ``rw`` also writes (upload, mkdir, rename, move),
  ``wd`` also deletes files.
* Host permissions (``allowed_vfolder_hosts`` of the domain, the user's projects
  and the keypair policy, united) gate creating, modifying, deleting, mounting,
  uploading, downloading and inviting per storage host; superadmins pass.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat as stat_module
import uuid
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Domain, KeypairResourcePolicy, Project, ProjectMembership, ProjectType, User, UserStatus
from backendai.api import errors
from vfolders import names, storage
from vfolders.models import (
    ALIVE_STATUSES,
    ALL_HOST_PERMISSIONS,
    TRASH_STATUSES,
    USABLE_STATUSES,
    HostPermission,
    InvitationState,
    OwnershipType,
    QuotaScope,
    StorageHost,
    UsageMode,
    VFolder,
    VFolderGrant,
    VFolderInvitation,
    VFolderPermission,
    VFolderStatus,
)

log = logging.getLogger(__name__)

DEFAULT_HOST_NAME = "local:volume1"
TOKEN_SALT = "vfolders.transfer.v1"
PERMISSIONS = [p.value for p in VFolderPermission]
USAGE_MODES = [m.value for m in UsageMode]
LISTED_STATUSES = tuple(ALIVE_STATUSES) + tuple(TRASH_STATUSES)


# --- settings (read with defaults, so the app works before they are configured) -------------

def vfolder_root() -> Path:
    root = getattr(settings, "VFOLDER_ROOT", None)
    return Path(root) if root else Path(settings.DATA_DIR) / "vfroot"


def default_host_name() -> str:
    return getattr(settings, "VFOLDER_DEFAULT_HOST", None) or DEFAULT_HOST_NAME


def token_lifetime() -> int:
    return int(getattr(settings, "VFOLDER_TOKEN_LIFETIME", 3600))


def max_upload_size() -> int:
    return int(getattr(settings, "VFOLDER_MAX_UPLOAD_SIZE", 100 * 2**30))


def max_chunk_size() -> int:
    return int(getattr(settings, "VFOLDER_MAX_CHUNK_SIZE", 64 * 2**20))


def dir_mode() -> int:
    return int(getattr(settings, "VFOLDER_DIR_MODE", 0o755))


def file_mode() -> int:
    return int(getattr(settings, "VFOLDER_FILE_MODE", 0o644))


def public_base_url(request=None) -> str:
    """The base URL clients use for upload and download tokens."""
    configured = getattr(settings, "VFOLDER_PUBLIC_URL", None)
    if configured:
        return configured.rstrip("/") + "/"
    if request is not None:
        return request.build_absolute_uri("/")
    return "http://127.0.0.1:8091/"


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


# --- names ------------------------------------------------------------------------------------

RESERVED_VFOLDERS = names.RESERVED_VFOLDERS
ROUTE_NAMES = names.ROUTE_NAMES
verify_vfolder_name = names.verify_vfolder_name
WORK_DIR = PurePosixPath("/home/work")


@contextmanager
def name_errors():
    """``names.InvalidName`` as the API reports it (400 ``invalid-api-params``)."""
    try:
        yield
    except names.InvalidName as exc:
        raise errors.InvalidAPIParameters(str(exc)) from None


def validate_folder_name(name, what: str = "name") -> str:
    """The folder name rules of ``vfolders.names`` (create, rename, clone alike)."""
    with name_errors():
        return names.check_folder_name(name, what)


def check_text(value, what: str, max_chars: int | None = None) -> str:
    """A free-text reference (host, project, email): a string without control characters."""
    with name_errors():
        return names.check_text(value, what, max_chars=max_chars)


def _parse_uuid(value) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or len(value) not in (32, 36):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _choice(value, allowed, what):
    if value not in allowed:
        raise errors.InvalidAPIParameters(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


# --- storage hosts and host permissions -------------------------------------------------------

def _merge_permissions(current: dict, host: str, permissions) -> tuple[dict, bool]:
    merged = dict(current or {})
    have = list(merged.get(host) or [])
    missing = [p for p in permissions if p not in have]
    if not missing and host in merged:
        return merged, False
    merged[host] = have + missing
    return merged, True


@transaction.atomic
def ensure_default_storage_host() -> StorageHost:
    """``local:volume1`` under VFOLDER_ROOT with every host permission for the
    ``default`` domain and the ``default`` keypair policy (idempotent)."""
    from accounts import services as accounts_services

    defaults = accounts_services.ensure_defaults()
    host, created = StorageHost.objects.get_or_create(
        name=DEFAULT_HOST_NAME,
        defaults={"backend": "vfs", "capabilities": ["vfolder", "quota"],
                  "description": "Local volume under VFOLDER_ROOT"},
    )
    host.root.mkdir(parents=True, exist_ok=True)
    for obj in (defaults.domain, defaults.keypair_policy):
        merged, changed = _merge_permissions(obj.allowed_vfolder_hosts, host.name, ALL_HOST_PERMISSIONS)
        if changed:
            type(obj).objects.filter(pk=obj.pk).update(allowed_vfolder_hosts=merged)
    if created:
        log.info("created storage host %s at %s", host.name, host.root)
    return host


def grant_host_permissions(obj, host: str, permissions=None) -> None:
    """Add host permissions to a domain, project or keypair policy's ``allowed_vfolder_hosts``."""
    merged, changed = _merge_permissions(obj.allowed_vfolder_hosts, host, permissions or ALL_HOST_PERMISSIONS)
    if changed:
        type(obj).objects.filter(pk=obj.pk).update(allowed_vfolder_hosts=merged)
        obj.allowed_vfolder_hosts = merged


def host_permissions(user: User, keypair=None, project: Project | None = None) -> dict[str, set[str]]:
    """The union of ``allowed_vfolder_hosts`` of the user's domain, the given project
    (or all the user's projects) and the keypair's resource policy."""
    key = (getattr(keypair, "pk", None), getattr(project, "pk", None))
    cache = getattr(user, "_vfolder_host_permissions", None)
    if cache is not None and key in cache:
        return cache[key]
    result: dict[str, set[str]] = defaultdict(set)

    def merge(mapping):
        if not isinstance(mapping, dict):
            return
        for host, perms in mapping.items():
            if isinstance(perms, (list, tuple, set)):
                result[host].update(p for p in perms if isinstance(p, str))

    merge(Domain.objects.filter(pk=user.domain_id).values_list("allowed_vfolder_hosts", flat=True).first())
    if project is not None:
        merge(project.allowed_vfolder_hosts)
    else:
        for mapping in Project.objects.filter(memberships__user=user, is_active=True).values_list(
                "allowed_vfolder_hosts", flat=True):
            merge(mapping)
    if keypair is not None and getattr(keypair, "resource_policy_id", None):
        if "resource_policy" in getattr(keypair, "_state").fields_cache:
            merge(keypair.resource_policy.allowed_vfolder_hosts)
        else:
            merge(KeypairResourcePolicy.objects.filter(pk=keypair.resource_policy_id)
                  .values_list("allowed_vfolder_hosts", flat=True).first())
    elif user.main_keypair_id:
        merge(KeypairResourcePolicy.objects.filter(keypairs__access_key=user.main_keypair_id)
              .values_list("allowed_vfolder_hosts", flat=True).first())
    result = dict(result)
    if cache is None:
        cache = {}
        user._vfolder_host_permissions = cache
    cache[key] = result
    return result


def require_host_permission(user: User, host: str, permission: str, keypair=None, project=None) -> None:
    if user.is_superadmin:
        return
    permission = HostPermission(permission)
    if permission.value not in host_permissions(user, keypair, project).get(host, set()):
        raise errors.VFolderPermissionError(
            f"You are not allowed to {permission.label.lower()} on the storage host {host} "
            f"(needs the '{permission.value}' host permission)")


def allowed_hosts(user: User, keypair=None, project=None) -> list[StorageHost]:
    hosts = list(StorageHost.objects.filter(is_active=True))
    if user.is_superadmin:
        return hosts
    perms = host_permissions(user, keypair, project)
    return [h for h in hosts if perms.get(h.name)]


def hosts_info(user: User, keypair=None, group=None) -> dict:
    """``GET /folders/_/hosts``."""
    project = _project_for(user, group) if group else None
    hosts = allowed_hosts(user, keypair, project)
    names = [h.name for h in hosts]
    preferred = default_host_name()
    default = preferred if preferred in names else (names[0] if names else None)
    volume_info = {}
    for host in hosts:
        try:
            disk = shutil.disk_usage(host.root)
            percentage = round(100.0 * disk.used / disk.total, 2) if disk.total else 0.0
        except OSError:
            percentage = None
        volume_info[host.name] = {"backend": host.backend, "capabilities": list(host.capabilities or []),
                                  "usage": {"percentage": percentage}, "sftp_scaling_groups": []}
    return {"default": default, "allowed": names, "volume_info": volume_info}


def all_hosts_info() -> dict:
    names = list(StorageHost.objects.filter(is_active=True).values_list("name", flat=True))
    preferred = default_host_name()
    return {"default": preferred if preferred in names else (names[0] if names else None), "allowed": names}


# --- access -----------------------------------------------------------------------------------

@dataclass
class Access:
    """What one user may do with one folder."""

    folder: VFolder
    permission: str  # effective: ro, rw or wd
    via: str  # owner, invited, project, admin
    shown_permission: str  # what listings show (the folder's own permission for its owner)

    @property
    def is_owner(self) -> bool:
        return self.via == "owner"

    @property
    def can_write(self) -> bool:
        return self.permission in (VFolderPermission.READ_WRITE, VFolderPermission.RW_DELETE)

    @property
    def can_delete_files(self) -> bool:
        return self.permission == VFolderPermission.RW_DELETE

    @property
    def can_manage(self) -> bool:
        return self.via in ("owner", "admin")


def _personal_q(user: User) -> Q:
    """Folders a user owns, shares a project of, or was invited to (accepted)."""
    return (
        Q(ownership_type=OwnershipType.USER, user_id=user.pk)
        | Q(ownership_type=OwnershipType.GROUP,
            project_id__in=ProjectMembership.objects.filter(user_id=user.pk).values("project_id"))
        | Q(ownership_type=OwnershipType.USER,
            id__in=VFolderGrant.objects.filter(user_id=user.pk).values("vfolder_id"))
    )


def _is_admin(user: User) -> bool:
    return user.is_superadmin or user.is_domain_admin


def _scoped(query, user: User, *, with_admin: bool):
    """``query`` narrowed to what ``user`` may see (admins: their domain, or everything)."""
    if with_admin and user.is_superadmin:
        return query
    scope = _personal_q(user)
    if with_admin and user.is_domain_admin:
        scope = scope | Q(domain_id=user.domain_id)
    return query.filter(scope)


def _admin_covers(user: User, folder: VFolder) -> bool:
    return user.is_superadmin or (user.is_domain_admin and folder.domain_id == user.domain_id)


class AccessContext:
    """The memberships and grants of one user, loaded once for many folders."""

    def __init__(self, user: User, folder_ids=None):
        self.user = user
        self.projects = set(ProjectMembership.objects.filter(user_id=user.pk).values_list("project_id", flat=True))
        grants = VFolderGrant.objects.filter(user_id=user.pk)
        if folder_ids is not None:
            grants = grants.filter(vfolder_id__in=list(folder_ids))
        self.grants = dict(grants.values_list("vfolder_id", "permission"))

    def access(self, folder: VFolder) -> Access | None:
        user = self.user
        grant = self.grants.get(folder.id)
        personal = None
        if folder.ownership_type == OwnershipType.USER:
            if folder.user_id == user.pk:
                return Access(folder, VFolderPermission.RW_DELETE, "owner", folder.permission)
            if grant:
                personal = Access(folder, grant, "invited", grant)
        elif folder.project_id in self.projects:
            permission = grant or folder.permission
            personal = Access(folder, permission, "project", permission)
        if _admin_covers(user, folder):
            shown = personal.shown_permission if personal else folder.permission
            return Access(folder, VFolderPermission.RW_DELETE, "admin", shown)
        return personal


def access_for(user: User, folder: VFolder) -> Access | None:
    return AccessContext(user, [folder.id]).access(folder)


def _folders():
    return VFolder.objects.select_related("host", "user", "project")


def get_folder(user: User, ref, *, statuses=ALIVE_STATUSES, need: str | None = None) -> Access:
    """The folder ``ref`` (a name, or an id dashed or hex) as ``user`` sees it."""
    folder = None
    if isinstance(ref, str) and (names.bad_character(ref) or len(ref) > 64):
        # no folder has such a name (refs are matched exactly, never trimmed)
        raise errors.object_not_found("virtual folder", f"No such virtual folder: {ref!r}")
    folder_id = _parse_uuid(ref)
    if folder_id is not None:
        folder = _scoped(_folders(), user, with_admin=True).filter(pk=folder_id, status__in=list(statuses)).first()
    if folder is None and isinstance(ref, str) and ref:
        candidates = list(_folders().filter(_personal_q(user), name=ref, status__in=list(statuses))[:20])
        if len(candidates) > 1:
            owned = [f for f in candidates if f.user_id == user.pk]
            if len(owned) != 1:
                raise errors.TooManyVFoldersFound(
                    f"Several folders named {ref!r} are accessible; use the folder id instead",
                    data={"ids": [f.id.hex for f in candidates]})
            candidates = owned
        folder = candidates[0] if candidates else None
    if folder is None:
        raise errors.object_not_found("virtual folder", f"No such virtual folder: {ref}")
    access = access_for(user, folder)
    if access is None:  # matched by scope but (e.g.) a grant vanished meanwhile
        raise errors.object_not_found("virtual folder", f"No such virtual folder: {ref}")
    if need:
        require(access, need)
    return access


def require(access: Access, need: str) -> None:
    folder = access.folder
    if need == "read":
        return
    if need == "write" and not access.can_write:
        raise errors.VFolderPermissionError(f"You have read-only access to the folder {folder.name!r}")
    if need == "delete" and not access.can_delete_files:
        raise errors.VFolderPermissionError(
            f"Deleting files in {folder.name!r} needs the 'wd' permission; you have {access.permission!r}")
    if need == "manage" and not access.can_manage:
        who = "its owner" if folder.ownership_type == OwnershipType.USER else "domain admins"
        raise errors.VFolderPermissionError(f"Only {who} may change the folder {folder.name!r}")


def _require_usable(folder: VFolder) -> None:
    if folder.status not in USABLE_STATUSES:
        raise errors.VFolderOperationFailed(
            f"The folder {folder.name!r} is {folder.status}; files can be used only when it is ready")
    if not folder.path.is_dir():
        log.error("the directory of folder %s is missing at %s", folder.pk, folder.path)
        raise errors.VFolderOperationFailed(
            f"The directory of the folder {folder.name!r} is missing on the storage host {folder.host_id}")


def folder_json(access: Access) -> dict:
    """One folder as ``GET /folders`` lists it."""
    f = access.folder
    return {
        "name": f.name,
        "id": f.id.hex,
        "quota_scope_id": f.quota_scope_id,
        "host": f.host_id,
        "status": f.status,
        "usage_mode": f.usage_mode,
        "created_at": iso(f.created_at),
        "last_used": iso(f.last_used),
        "is_owner": access.is_owner,
        "permission": access.shown_permission,
        "user": str(f.user_id) if f.user_id else None,
        "group": str(f.project_id) if f.project_id else None,
        "user_email": f.user.email if f.user_id else None,
        "group_name": f.project.name if f.project_id else None,
        "creator": f.creator,
        "ownership_type": f.ownership_type,
        "type": f.ownership_type,
        "max_files": 0,
        "max_size": 0,
        "cur_size": 0,
        "cloneable": f.cloneable,
    }


def list_folders(user: User, *, list_all: bool = False, group_id=None, owner_email: str | None = None,
                 statuses=LISTED_STATUSES) -> list[Access]:
    """The folders ``user`` can use; admins with ``list_all`` see their domain (or everything)."""
    query = _scoped(_folders(), user, with_admin=list_all).filter(status__in=list(statuses))
    if group_id:
        project_id = _parse_uuid(group_id)
        if project_id is None:
            raise errors.InvalidAPIParameters("group_id must be a project id")
        query = query.filter(project_id=project_id)
    if owner_email:
        check_text(owner_email, "owner_user_email", max_chars=254)
        if not _is_admin(user):
            raise errors.InsufficientPrivilege("Only admins list other users' folders")
        query = query.filter(user__email__iexact=owner_email)
    folders = list(query.order_by("name", "created_at"))
    context = AccessContext(user, [f.id for f in folders])
    result = []
    for folder in folders:
        access = context.access(folder)
        if access is not None:
            result.append(access)
    return result


def folder_info(user: User, ref) -> dict:
    """``GET /folders/{x}``: the listing fields plus the file count and bytes used."""
    access = get_folder(user, ref, statuses=LISTED_STATUSES)
    body = folder_json(access)
    used, files = storage.usage(access.folder.path)
    body.update({"numFiles": files, "used_bytes": used, "cur_size": used})
    return body


def folder_id_by_name(user: User, name) -> str:
    return get_folder(user, name, statuses=LISTED_STATUSES).folder.id.hex


# --- quota ------------------------------------------------------------------------------------

def scope_dirname(quota_scope_id: str) -> str:
    kind, _, ident = quota_scope_id.partition(":")
    return f"{kind}-{uuid.UUID(ident).hex}"


def scope_limit(folder: VFolder) -> int:
    """Bytes the folder's quota scope may hold; negative is unlimited."""
    if folder.ownership_type == OwnershipType.USER:
        policy = folder.user.resource_policy if folder.user_id else None
    else:
        policy = folder.project.resource_policy if folder.project_id else None
    limit = policy.max_quota_scope_size if policy is not None else -1
    if limit is not None and limit >= 0:
        return limit
    return folder.host.default_quota if folder.host.default_quota is not None else -1


def scope_bytes(host_root: Path, quota_scope_id: str) -> int:
    """Bytes the scope holds on a host now: its folders (trash included) and its staged uploads."""
    dirname = scope_dirname(quota_scope_id)
    used, _ = storage.usage(Path(host_root) / dirname)
    staged, _ = storage.usage(Path(host_root) / storage.STAGING_DIRNAME / dirname)
    return used + staged


def measure_scope(host: StorageHost, quota_scope_id: str) -> QuotaScope:
    """Re-measure one quota scope from the disk and keep the figure for the admin."""
    dirname = scope_dirname(quota_scope_id)
    used, files = storage.usage(host.root / dirname)
    staged, _ = storage.usage(host.root / storage.STAGING_DIRNAME / dirname)
    scope, _ = QuotaScope.objects.update_or_create(
        host=host, quota_scope_id=quota_scope_id,
        defaults={"usage_bytes": used + staged, "usage_files": files, "measured_at": timezone.now()})
    return scope


def measure_all_scopes() -> int:
    pairs = set(VFolder.objects.exclude(status=VFolderStatus.DELETE_COMPLETE)
                .values_list("host_id", "quota_scope_id"))
    hosts = {h.name: h for h in StorageHost.objects.filter(name__in={h for h, _ in pairs})}
    for host_name, qsid in sorted(pairs):
        measure_scope(hosts[host_name], qsid)
    return len(pairs)


def scope_limit_for(quota_scope_id: str, host: StorageHost) -> int:
    kind, _, ident = quota_scope_id.partition(":")
    policy = None
    if kind == "user":
        user = User.objects.select_related("resource_policy").filter(pk=ident).first()
        policy = user.resource_policy if user else None
    elif kind == "project":
        project = Project.objects.select_related("resource_policy").filter(pk=ident).first()
        policy = project.resource_policy if project else None
    limit = policy.max_quota_scope_size if policy is not None else -1
    return limit if limit >= 0 else host.default_quota


def _check_room(folder: VFolder, more_bytes: int) -> None:
    limit = scope_limit(folder)
    if limit < 0:
        return
    used = scope_bytes(folder.host.root, folder.quota_scope_id)
    if used + more_bytes > limit:
        raise errors.QuotaExceeded(
            f"The quota scope {folder.quota_scope_id} holds {used} of {limit} bytes; "
            f"{more_bytes} more do not fit", data={"limit": limit, "used": used, "requested": more_bytes})


# --- folder lifecycle -------------------------------------------------------------------------

def _project_for(user: User, ref) -> Project:
    check_text(ref, "group", max_chars=64)
    query = Project.objects.select_related("resource_policy")
    if not user.is_superadmin:
        query = query.filter(domain_id=user.domain_id)
    project_id = _parse_uuid(ref)
    project = query.filter(pk=project_id).first() if project_id else None
    if project is None:
        project = query.filter(name=ref, domain_id=user.domain_id).first()
    if project is None:
        raise errors.object_not_found("group (project)", f"No such project: {ref}")
    if not (_is_admin(user) or project.memberships.filter(user_id=user.pk).exists()):
        raise errors.object_not_found("group (project)", f"No such project: {ref}")
    return project


def creatable_projects(user: User) -> list[Project]:
    """Projects ``user`` may create folders for: any of the domain for admins (every
    project for superadmins), model-store projects one belongs to otherwise."""
    query = Project.objects.filter(is_active=True).order_by("domain_id", "name")
    if user.is_superadmin:
        return list(query)
    if user.is_domain_admin:
        return list(query.filter(domain_id=user.domain_id))
    return list(query.filter(type=ProjectType.MODEL_STORE, memberships__user=user))


def _host(name: str | None, user: User, keypair=None, project=None) -> StorageHost:
    if name:
        check_text(name, "host", max_chars=128)
    if not name:
        hosts = allowed_hosts(user, keypair, project)
        names = [h.name for h in hosts]
        name = default_host_name() if default_host_name() in names else (names[0] if names else None)
        if name is None:
            raise errors.InvalidAPIParameters("No storage host is allowed for you; ask an admin")
    host = StorageHost.objects.filter(name=name, is_active=True).first()
    if host is None:
        raise errors.InvalidAPIParameters(f"Invalid vfolder host {name!r}")
    return host


def _name_taken(user: User, name: str, project: Project | None = None, exclude_id=None) -> bool:
    query = VFolder.objects.filter(name=name, status__in=list(ALIVE_STATUSES))
    scope = _personal_q(user)
    if project is not None:
        scope = scope | Q(ownership_type=OwnershipType.GROUP, project_id=project.pk)
    query = query.filter(scope)
    if exclude_id is not None:
        query = query.exclude(pk=exclude_id)
    return query.exists()


def _set_status(folder: VFolder, status: str, expected=None) -> bool:
    """Move a folder to ``status`` if it is still in one of ``expected``; True when it moved."""
    now = timezone.now()
    history = list(folder.status_history or []) + [{"status": status, "timestamp": now.isoformat()}]
    query = VFolder.objects.filter(pk=folder.pk)
    if expected is not None:
        query = query.filter(status__in=list(expected))
    moved = query.update(status=status, status_changed=now, status_history=history[-50:]) == 1
    if moved:
        folder.status, folder.status_changed, folder.status_history = status, now, history[-50:]
    return moved


def create_folder(user: User, *, name, host=None, group=None, usage_mode: str = UsageMode.GENERAL,
                  permission: str = VFolderPermission.READ_WRITE, cloneable: bool = False, keypair=None,
                  unmanaged_path=None) -> VFolder:
    name = validate_folder_name(name)
    _choice(usage_mode, USAGE_MODES, "usage_mode")
    _choice(permission, PERMISSIONS, "permission")
    if unmanaged_path:
        raise errors.InvalidAPIParameters("Unmanaged folders (unmanaged_path) are not supported")
    project = _project_for(user, group) if group else None
    if project is not None and not _is_admin(user) and project.type != ProjectType.MODEL_STORE:
        raise errors.GenericForbidden("Only domain admins create project folders")
    host_obj = _host(host, user, keypair, project)
    require_host_permission(user, host_obj.name, HostPermission.CREATE, keypair, project)
    owner = project.domain_id if project else user.domain_id
    with transaction.atomic():
        if project is not None:
            locked = Project.objects.select_for_update().select_related("resource_policy").get(pk=project.pk)
            policy = locked.resource_policy
            count = VFolder.objects.filter(project=locked).exclude(status=VFolderStatus.DELETE_COMPLETE).count()
            qsid = f"project:{locked.pk}"
        else:
            locked = User.objects.select_for_update().select_related("resource_policy").get(pk=user.pk)
            policy = locked.resource_policy
            count = VFolder.objects.filter(user=locked, ownership_type=OwnershipType.USER).exclude(
                status=VFolderStatus.DELETE_COMPLETE).count()
            qsid = f"user:{locked.pk}"
        if policy.max_vfolder_count > 0 and count >= policy.max_vfolder_count:
            raise errors.QuotaExceeded(
                f"You cannot create more folders: the limit is {policy.max_vfolder_count} "
                f"(folders in the trash count until purged)")
        if _name_taken(user, name, project):
            raise errors.VFolderAlreadyExists(f"A folder named {name!r} already exists")
        folder = VFolder(
            host=host_obj, domain_id=owner, quota_scope_id=qsid, name=name, usage_mode=usage_mode,
            permission=permission, ownership_type=OwnershipType.GROUP if project else OwnershipType.USER,
            user=None if project else user, project=project, creator=user.email, cloneable=bool(cloneable),
            status=VFolderStatus.READY, status_changed=timezone.now(),
            status_history=[{"status": VFolderStatus.READY, "timestamp": timezone.now().isoformat()}],
        )
        try:
            with transaction.atomic():
                folder.save(force_insert=True)
        except IntegrityError:
            raise errors.VFolderAlreadyExists(f"A folder named {name!r} already exists") from None
        QuotaScope.objects.get_or_create(host=host_obj, quota_scope_id=qsid)
        try:
            storage.create_directory(folder.path, dir_mode())
        except OSError as exc:
            log.error("cannot create the directory of folder %s at %s: %s", folder.pk, folder.path, exc)
            raise errors.VFolderCreationFailed(f"The storage host could not create the folder: {exc.strerror}") from None
    log.info("created folder %s (%s) on %s for %s", folder.pk, name, host_obj.name, qsid)
    return folder


def rename_folder(user: User, ref, new_name, keypair=None) -> VFolder:
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    new_name = validate_folder_name(new_name, "new_name")
    require_host_permission(user, folder.host_id, HostPermission.MODIFY, keypair)
    if new_name == folder.name:
        return folder
    owner = folder.user if folder.ownership_type == OwnershipType.USER else user
    if _name_taken(owner, new_name, folder.project, exclude_id=folder.pk):
        raise errors.VFolderAlreadyExists(f"A folder named {new_name!r} already exists")
    try:
        with transaction.atomic():
            VFolder.objects.filter(pk=folder.pk).update(name=new_name)
    except IntegrityError:
        raise errors.VFolderAlreadyExists(f"A folder named {new_name!r} already exists") from None
    folder.name = new_name
    return folder


def update_options(user: User, ref, *, permission=None, cloneable=None, keypair=None) -> VFolder:
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    require_host_permission(user, folder.host_id, HostPermission.MODIFY, keypair)
    changes = {}
    if permission is not None:
        changes["permission"] = _choice(permission, PERMISSIONS, "permission")
    if cloneable is not None:
        changes["cloneable"] = bool(cloneable)
    if changes:
        VFolder.objects.filter(pk=folder.pk).update(**changes)
        for key, value in changes.items():
            setattr(folder, key, value)
    return folder


def _active_mount_sessions(folder: VFolder) -> list[str]:
    try:
        from sessions.lifecycle import DEAD_SESSION, SessionStatus
        from sessions.models import Session
    except ImportError:  # the sessions app is optional for this one check
        return []
    dead = [str(s) for s in DEAD_SESSION] + [str(SessionStatus.ERROR)]
    return list(Session.objects.filter(vfolder_mounts__icontains=str(folder.pk)).exclude(status__in=dead)
                .values_list("name", flat=True)[:5])


def move_to_trash(user: User, ref, keypair=None) -> VFolder:
    """``DELETE /folders/{x}``: the folder goes to the trash (files kept until purged)."""
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    require_host_permission(user, folder.host_id, HostPermission.DELETE, keypair)
    busy = _active_mount_sessions(folder)
    if busy:
        raise errors.VFolderOperationFailed(
            f"The folder is mounted in active sessions ({', '.join(busy)}); terminate them first")
    if not _set_status(folder, VFolderStatus.DELETE_PENDING, expected=ALIVE_STATUSES):
        raise errors.VFolderOperationFailed("The folder changed meanwhile; try again")
    log.info("folder %s (%s) moved to the trash by %s", folder.pk, folder.name, user.pk)
    return folder


def _trash_folder(user: User, folder_id) -> Access:
    parsed = _parse_uuid(folder_id)
    if parsed is None:
        raise errors.InvalidAPIParameters("vfolder_id must be a folder id")
    return get_folder(user, parsed.hex, statuses=TRASH_STATUSES, need="manage")


def restore_from_trash(user: User, folder_id, keypair=None) -> VFolder:
    access = _trash_folder(user, folder_id)
    folder = access.folder
    require_host_permission(user, folder.host_id, HostPermission.DELETE, keypair)
    owner = folder.user if folder.ownership_type == OwnershipType.USER else user
    if _name_taken(owner, folder.name, folder.project, exclude_id=folder.pk):
        raise errors.VFolderAlreadyExists(
            f"Another folder named {folder.name!r} exists now; rename or delete it before restoring")
    try:
        with transaction.atomic():
            moved = _set_status(folder, VFolderStatus.READY, expected=TRASH_STATUSES)
    except IntegrityError:
        raise errors.VFolderAlreadyExists(f"Another folder named {folder.name!r} exists now") from None
    if not moved:
        raise errors.VFolderOperationFailed("The folder changed meanwhile; try again")
    return folder


def purge(user: User, folder_id, keypair=None) -> None:
    """Remove a folder in the trash for good (its files first)."""
    access = _trash_folder(user, folder_id)
    folder = access.folder
    require_host_permission(user, folder.host_id, HostPermission.DELETE, keypair)
    if not _set_status(folder, VFolderStatus.DELETE_ONGOING, expected=TRASH_STATUSES):
        raise errors.VFolderOperationFailed("The folder changed meanwhile; try again")
    _remove_files(folder)
    if folder.status == VFolderStatus.DELETE_ERROR:
        raise errors.VFolderOperationFailed("The folder's files could not be removed; it stays in the trash")


def _remove_files(folder: VFolder) -> None:
    try:
        storage.remove_tree(folder.path)
    except OSError as exc:
        log.error("cannot remove folder %s at %s: %s", folder.pk, folder.path, exc)
        _set_status(folder, VFolderStatus.DELETE_ERROR, expected=[VFolderStatus.DELETE_ONGOING])
        return
    with transaction.atomic():
        _set_status(folder, VFolderStatus.DELETE_COMPLETE, expected=[VFolderStatus.DELETE_ONGOING])
        VFolderGrant.objects.filter(vfolder=folder).delete()
        VFolderInvitation.objects.filter(vfolder=folder, state=InvitationState.PENDING).update(
            state=InvitationState.CANCELED, modified_at=timezone.now())
    log.info("purged folder %s (%s)", folder.pk, folder.name)
    try:
        measure_scope(folder.host, folder.quota_scope_id)
    except OSError:
        pass


def reconcile(stuck_after_seconds: int = 600) -> dict:
    """Finish deletions a crash interrupted and sweep abandoned staged uploads."""
    cutoff = timezone.now() - timedelta(seconds=stuck_after_seconds)
    stuck = list(_folders().filter(status=VFolderStatus.DELETE_ONGOING, status_changed__lt=cutoff))
    for folder in stuck:
        _remove_files(folder)
    swept = 0
    for host in StorageHost.objects.filter(is_active=True):
        swept += storage.sweep_staging(host.root, 2 * token_lifetime())
    return {"deletions_retried": len(stuck), "staged_files_swept": swept}


# --- files ------------------------------------------------------------------------------------

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


def _clean(raw, *, allow_root=True, what="path", new=False) -> tuple[str, ...]:
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


def list_files(user: User, ref, path=".") -> dict:
    access = get_folder(user, ref, need="read")
    folder = access.folder
    _require_usable(folder)
    parts = _clean(path if path not in (None, "") else ".")
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
    _require_usable(folder)
    raw_paths = paths if isinstance(paths, list) else [paths]
    if not raw_paths:
        raise errors.InvalidAPIParameters("path is required")
    cleaned = [(raw, _clean(raw, allow_root=False, new=True)) for raw in raw_paths]  # all checked before any change
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
    _require_usable(access.folder)
    parts = _clean(target_path, allow_root=False, what="target_path")
    name = check_new_name(new_name, "new_name")
    with disk_errors("rename"):
        folder_root(access.folder).rename(parts, name)


def move_file(user: User, ref, src, dst) -> str:
    access = get_folder(user, ref, need="write")
    _require_usable(access.folder)
    src_parts = _clean(src, allow_root=False, what="src")
    dst_parts = _clean(dst, what="dst", new=True)
    with disk_errors("move"):
        target = folder_root(access.folder).move(src_parts, dst_parts)
    return storage.display_path(target)


def delete_files(user: User, ref, files, *, recursive: bool = False) -> None:
    access = get_folder(user, ref, need="delete")
    folder = access.folder
    _require_usable(folder)
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not files:
        raise errors.InvalidAPIParameters("files must be a non-empty list of paths")
    paths = [_clean(f, allow_root=False, what="files") for f in files]
    with disk_errors("delete"):
        folder_root(folder).delete(paths, recursive=recursive)


def _touch(folder: VFolder) -> None:
    VFolder.objects.filter(pk=folder.pk).update(last_used=timezone.now())


# --- transfers --------------------------------------------------------------------------------

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
    _require_usable(folder)
    parts = _clean(path, allow_root=False, new=True)
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
    _check_room(folder, size)
    upload_id = uuid.uuid4().hex
    token = _sign({"op": "upload", "vf": folder.id.hex, "p": "/".join(parts), "sz": size, "u": user.pk.hex,
                   "sid": upload_id})
    if size == 0:  # the official client sends no PATCH for an empty file
        target = upload_target(token)
        with disk_errors("upload"):
            target.staging.create()
            target.staging.finalize(target.root, target.parts, file_mode())
    _touch(folder)
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
    _require_usable(folder)
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
        _touch(target.folder)
        log.info("upload of %s bytes to folder %s completed", target.size, target.folder.pk)
    return new_offset


def request_download(user: User, ref, path, *, base_url: str, archive: bool = False, keypair=None,
                     archive_format: str | None = None) -> dict:
    access = get_folder(user, ref, need="read")
    folder = access.folder
    _require_usable(folder)
    parts = _clean(path if path not in (None, "") else ".")
    if archive_format is not None:
        _choice(archive_format, ["zip", "tar"], "format")
    require_host_permission(user, folder.host_id, HostPermission.DOWNLOAD, keypair)
    with disk_errors("checking the download"):
        kind = folder_root(folder).kind(parts)
    token = _sign({"op": "download", "vf": folder.id.hex, "p": "/".join(parts), "u": user.pk.hex,
                   "ar": bool(archive) or kind == "directory", "fmt": archive_format or "zip"})
    _touch(folder)
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
    _require_usable(folder)
    if access_for(user, folder) is None:
        raise errors.GenericForbidden("You no longer have access to this folder")
    parts = tuple(p for p in data.get("p", "").split("/") if p)
    return DownloadTarget(folder, parts, bool(data.get("ar")), data.get("fmt") or "zip", folder_root(folder))


def upload_file_object(user: User, ref, directory, name, fileobj, size: int, keypair=None) -> str:
    """A whole file from a web form (no JavaScript): staged, checked, then moved into place."""
    access = get_folder(user, ref, need="write")
    folder = access.folder
    _require_usable(folder)
    dir_parts = _clean(directory or ".", new=True)
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


# --- invitations and sharing ------------------------------------------------------------------

MAX_EMAILS = 100


def _users_by_email(emails, domain_id=None):
    if isinstance(emails, str):
        emails = [emails]
    if not isinstance(emails, (list, tuple)) or not all(isinstance(e, str) for e in emails):
        raise errors.InvalidAPIParameters("emails: must be a list of email addresses")
    if len(emails) > MAX_EMAILS:
        raise errors.InvalidAPIParameters(f"emails: at most {MAX_EMAILS} at once")
    for email in emails:
        check_text(email, "emails", max_chars=254)
    wanted = {e.strip().lower() for e in emails if e.strip()}
    if not wanted:
        raise errors.InvalidAPIParameters("At least one email is required")
    query = User.objects.filter(status=UserStatus.ACTIVE)
    if domain_id is not None:
        query = query.filter(domain_id=domain_id)
    found = Q()
    for email in wanted:
        found |= Q(email__iexact=email)
    return list(query.filter(found))


def invitation_json(inv: VFolderInvitation) -> dict:
    return {
        "id": str(inv.id),
        "inviter": inv.inviter.email,
        "invitee": inv.invitee.email,
        "perm": inv.permission,
        "state": inv.state,
        "created_at": iso(inv.created_at),
        "modified_at": iso(inv.modified_at),
        "vfolder_id": str(inv.vfolder_id),
        "vfolder_name": inv.vfolder.name,
    }


def invite(user: User, ref, permission, emails, keypair=None) -> list[str]:
    """Invite users of the folder's domain to a user folder; returns the invited emails."""
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    if folder.ownership_type != OwnershipType.USER:
        raise errors.VFolderOperationFailed("Project folders are shared with share/unshare, not invitations")
    _choice(permission, PERMISSIONS, "perm")
    require_host_permission(user, folder.host_id, HostPermission.INVITE, keypair)
    invitees = [u for u in _users_by_email(emails, folder.domain_id) if u.pk != folder.user_id]
    granted = set(VFolderGrant.objects.filter(vfolder=folder).values_list("user_id", flat=True))
    pending = set(VFolderInvitation.objects.filter(vfolder=folder, state=InvitationState.PENDING)
                  .values_list("invitee_id", flat=True))
    fresh = [u for u in invitees if u.pk not in granted and u.pk not in pending]
    with transaction.atomic():
        VFolderInvitation.objects.bulk_create([
            VFolderInvitation(vfolder=folder, inviter=user, invitee=u, permission=permission) for u in fresh])
    log.info("folder %s: %s invited %s (%s)", folder.pk, user.pk, [u.email for u in fresh], permission)
    return [u.email for u in fresh]


def _invitations():
    return VFolderInvitation.objects.select_related("vfolder", "inviter", "invitee")


def invitations_received(user: User) -> list[VFolderInvitation]:
    return list(_invitations().filter(invitee=user, state=InvitationState.PENDING,
                                      vfolder__status__in=list(ALIVE_STATUSES)))


def invitations_sent(user: User) -> list[VFolderInvitation]:
    return list(_invitations().filter(inviter=user, state=InvitationState.PENDING))


def _invitation(inv_id) -> VFolderInvitation:
    parsed = _parse_uuid(inv_id) if isinstance(inv_id, str) else inv_id
    if not isinstance(parsed, uuid.UUID):
        raise errors.InvalidAPIParameters("inv_id must be an invitation id")
    inv = _invitations().filter(pk=parsed).first()
    if inv is None:
        raise errors.object_not_found("invitation")
    return inv


def accept_invitation(user: User, inv_id) -> VFolderGrant:
    inv = _invitation(inv_id)
    if inv.invitee_id != user.pk:
        raise errors.object_not_found("invitation")
    if inv.state != InvitationState.PENDING:
        raise errors.VFolderOperationFailed(f"The invitation is already {inv.state}")
    if inv.vfolder.status not in ALIVE_STATUSES:
        raise errors.VFolderOperationFailed("The folder is no longer available")
    if _name_taken(user, inv.vfolder.name, exclude_id=inv.vfolder_id):
        raise errors.VFolderAlreadyExists(
            f"You already have a folder named {inv.vfolder.name!r}; rename it before accepting")
    with transaction.atomic():
        if VFolderInvitation.objects.filter(pk=inv.pk, state=InvitationState.PENDING).update(
                state=InvitationState.ACCEPTED, modified_at=timezone.now()) != 1:
            raise errors.VFolderOperationFailed("The invitation changed meanwhile")
        grant, _ = VFolderGrant.objects.update_or_create(vfolder=inv.vfolder, user=user,
                                                         defaults={"permission": inv.permission})
    log.info("user %s accepted invitation %s to folder %s", user.pk, inv.pk, inv.vfolder_id)
    return grant


def delete_invitation(user: User, inv_id) -> str:
    """The invitee rejects, the inviter (or the folder's owner, or an admin) cancels."""
    inv = _invitation(inv_id)
    if inv.invitee_id == user.pk:
        state = InvitationState.REJECTED
    elif inv.inviter_id == user.pk or inv.vfolder.user_id == user.pk or _admin_covers(user, inv.vfolder):
        state = InvitationState.CANCELED
    else:
        raise errors.object_not_found("invitation")
    if inv.state != InvitationState.PENDING:
        raise errors.VFolderOperationFailed(f"The invitation is already {inv.state}")
    VFolderInvitation.objects.filter(pk=inv.pk, state=InvitationState.PENDING).update(
        state=state, modified_at=timezone.now())
    return state


def update_invitation(user: User, inv_id, permission) -> None:
    inv = _invitation(inv_id)
    if not (inv.inviter_id == user.pk or inv.vfolder.user_id == user.pk or _admin_covers(user, inv.vfolder)):
        raise errors.object_not_found("invitation")
    _choice(permission, PERMISSIONS, "perm")
    if inv.state != InvitationState.PENDING:
        raise errors.VFolderOperationFailed(f"The invitation is already {inv.state}")
    VFolderInvitation.objects.filter(pk=inv.pk).update(permission=permission, modified_at=timezone.now())


def share(user: User, ref, permission, emails) -> list[str]:
    """Give project members a permission of their own on a project folder."""
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    if folder.ownership_type != OwnershipType.GROUP:
        raise errors.VFolderOperationFailed("Only project folders are shared; invite users to a user folder")
    _choice(permission, PERMISSIONS, "permission")
    members = set(ProjectMembership.objects.filter(project_id=folder.project_id).values_list("user_id", flat=True))
    users = [u for u in _users_by_email(emails) if u.pk in members]
    with transaction.atomic():
        for u in users:
            VFolderGrant.objects.update_or_create(vfolder=folder, user=u, defaults={"permission": permission})
    return [u.email for u in users]


def unshare(user: User, ref, emails) -> list[str]:
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    if folder.ownership_type != OwnershipType.GROUP:
        raise errors.VFolderOperationFailed("Only project folders are unshared; use leave for user folders")
    users = _users_by_email(emails)
    removed = set(VFolderGrant.objects.filter(vfolder=folder, user__in=users).values_list("user_id", flat=True))
    VFolderGrant.objects.filter(vfolder=folder, user_id__in=removed).delete()
    return [u.email for u in users if u.pk in removed]


def leave(user: User, ref, shared_user_uuid=None) -> None:
    """An invitee leaves a user folder; its owner (or an admin) may remove an invitee."""
    access = get_folder(user, ref)
    folder = access.folder
    if folder.ownership_type != OwnershipType.USER:
        raise errors.VFolderOperationFailed("You cannot leave a project folder")
    target = user.pk
    if shared_user_uuid:
        parsed = _parse_uuid(str(shared_user_uuid))
        if parsed is None:
            raise errors.InvalidAPIParameters("shared_user_uuid must be a user id")
        if parsed != user.pk:
            require(access, "manage")
        target = parsed
    elif access.is_owner:
        raise errors.VFolderOperationFailed("You own this folder: delete it instead of leaving")
    deleted, _ = VFolderGrant.objects.filter(vfolder=folder, user_id=target).delete()
    if not deleted:
        raise errors.VFolderOperationFailed("That user does not share this folder")


def folder_grants(folder: VFolder) -> list[VFolderGrant]:
    return list(VFolderGrant.objects.filter(vfolder=folder).select_related("user").order_by("user__email"))


# --- mounts -----------------------------------------------------------------------------------

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


def _overlap(a: tuple, b: tuple) -> bool:
    short = min(len(a), len(b))
    return a[:short] == b[:short]


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
    for key in mount_map:
        if key not in mounts:
            mounts.append(key)
    requested = []
    for raw in mounts:
        if not isinstance(raw, str) or not raw.strip():
            raise errors.InvalidAPIParameters("Each mount must be a folder name or id")
        raw = raw.strip()
        ref, _, sub = raw.partition("/")
        sub_parts = _clean(sub, what=f"the subpath of {raw!r}")
        requested.append((raw, ref, sub_parts))
    perms = None if user.is_superadmin else host_permissions(user, keypair, project)
    result, sources, destinations = [], [], []
    mounted_ids = set()

    def add(access: Access, raw: str, sub_parts: tuple, wanted, destination, explicit: bool) -> None:
        folder = access.folder
        if wanted not in (None, "", *PERMISSIONS):
            raise errors.InvalidAPIParameters(f"Mount permission for {raw!r} must be one of ro, rw, wd")
        if wanted == VFolderPermission.READ_ONLY:
            mode = "ro"
        elif wanted in (VFolderPermission.READ_WRITE, VFolderPermission.RW_DELETE):
            if not access.can_write:
                raise errors.VFolderPermissionError(
                    f"The folder {folder.name!r} is read-only for you; it cannot be mounted {wanted}")
            mode = "rw"
        else:
            mode = "rw" if access.can_write else "ro"
        target = container_path(destination, folder.name)
        target_parts = PurePosixPath(target).parts
        source = (folder.pk,) + sub_parts
        for other in sources:
            if other[0] == folder.pk and _overlap(other, source):
                raise errors.InvalidAPIParameters(f"The mount {raw!r} overlaps another mount of the same folder")
        for other in destinations:
            if _overlap(other, target_parts):
                if not explicit:
                    return
                raise errors.InvalidAPIParameters(f"The mount destination {target} overlaps another mount")
        host_path = folder.agent_path.joinpath(*sub_parts) if sub_parts else folder.agent_path
        sources.append(source)
        destinations.append(target_parts)
        mounted_ids.add(folder.pk)
        result.append({"vfolder_id": str(folder.pk), "name": folder.name, "host": folder.host_id,
                       "subpath": storage.display_path(sub_parts), "host_path": str(host_path),
                       "container_path": target, "mode": mode, "permission": access.permission,
                       "usage_mode": folder.usage_mode})

    for raw, ref, sub_parts in requested:
        access = get_folder(user, ref)
        folder = access.folder
        _require_usable(folder)
        if perms is not None and HostPermission.MOUNT not in perms.get(folder.host_id, set()):
            raise errors.VFolderPermissionError(
                f"Mounting folders of the storage host {folder.host_id} is not allowed for you "
                "(needs the 'mount-in-session' host permission)")
        if sub_parts:
            with disk_errors("checking the mount subpath"):
                os.close(folder_root(folder).open_dir(sub_parts))
        options = mount_options.get(raw) or mount_options.get(ref) or {}
        if not isinstance(options, dict):
            raise errors.InvalidAPIParameters(f"mount_options for {raw!r} must be an object")
        add(access, raw, sub_parts, options.get("permission"), mount_map.get(raw) or mount_map.get(ref), True)

    dot_folders = [a for a in list_folders(user, statuses=USABLE_STATUSES)
                   if a.folder.name.startswith(".") and a.folder.pk not in mounted_ids]
    for access in dot_folders:
        folder = access.folder
        if perms is not None and HostPermission.MOUNT not in perms.get(folder.host_id, set()):
            continue
        sub_parts = ()
        if folder.ownership_type == OwnershipType.GROUP and folder.name == ".local":
            sub_parts = (user.pk.hex,)  # a project's .local is per user
            with disk_errors("preparing the per-user .local"):
                folder_root(folder).mkdir(sub_parts, parents=False, exist_ok=True)
        add(access, folder.name, sub_parts, None, None, False)

    if mounted_ids:
        VFolder.objects.filter(pk__in=list(mounted_ids)).update(last_used=timezone.now())
    return result
