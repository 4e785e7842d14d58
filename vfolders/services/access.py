"""Who sees which folder and with what permission: ``Access``, ``get_folder``,
``list_folders`` and the folder's JSON as the listings show it."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q

from accounts.models import ProjectMembership, User
from backendai.api import errors
from storageproxy import names
from vfolders.models import (
    ALIVE_STATUSES,
    LISTED_STATUSES,
    USABLE_STATUSES,
    OwnershipType,
    VFolder,
    VFolderGrant,
    VFolderPermission,
)
from vfolders.services import proxy
from vfolders.services.inputs import check_text, parse_uuid

log = logging.getLogger(__name__)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


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


def personal_q(user: User) -> Q:
    """Folders a user owns, shares a project of, or was invited to (accepted)."""
    return (
        Q(ownership_type=OwnershipType.USER, user_id=user.pk)
        | Q(ownership_type=OwnershipType.GROUP,
            project_id__in=ProjectMembership.objects.filter(user_id=user.pk).values("project_id"))
        | Q(ownership_type=OwnershipType.USER,
            id__in=VFolderGrant.objects.filter(user_id=user.pk).values("vfolder_id"))
    )


def is_admin(user: User) -> bool:
    return user.is_superadmin or user.is_domain_admin


def scoped(query, user: User, *, with_admin: bool):
    """``query`` narrowed to what ``user`` may see (admins: their domain, or everything)."""
    if with_admin and user.is_superadmin:
        return query
    scope = personal_q(user)
    if with_admin and user.is_domain_admin:
        scope = scope | Q(domain_id=user.domain_id)
    return query.filter(scope)


def admin_covers(user: User, folder: VFolder) -> bool:
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
        if admin_covers(user, folder):
            shown = personal.shown_permission if personal else folder.permission
            return Access(folder, VFolderPermission.RW_DELETE, "admin", shown)
        return personal


def access_for(user: User, folder: VFolder) -> Access | None:
    return AccessContext(user, [folder.id]).access(folder)


def folders():
    """Folders with their host, owner and project loaded."""
    return VFolder.objects.select_related("host", "user", "project")


def get_folder(user: User, ref, *, statuses=ALIVE_STATUSES, need: str | None = None) -> Access:
    """The folder ``ref`` (a name, or an id dashed or hex) as ``user`` sees it."""
    folder = None
    if isinstance(ref, str) and (names.bad_character(ref) or len(ref) > 64):
        # no folder has such a name (refs are matched exactly, never trimmed)
        raise errors.object_not_found("virtual folder", f"No such virtual folder: {ref!r}")
    folder_id = parse_uuid(ref)
    if folder_id is not None:
        folder = scoped(folders(), user, with_admin=True).filter(pk=folder_id, status__in=list(statuses)).first()
    if folder is None and isinstance(ref, str) and ref:
        candidates = list(folders().filter(personal_q(user), name=ref, status__in=list(statuses))[:20])
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


def require_usable(folder: VFolder) -> None:
    """Files of a folder are used only when it is ready (or mounted); its storage proxy answers
    whether its directory exists with each operation."""
    if folder.status not in USABLE_STATUSES:
        raise errors.VFolderOperationFailed(
            f"The folder {folder.name!r} is {folder.status}; files can be used only when it is ready")


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
    query = scoped(folders(), user, with_admin=list_all).filter(status__in=list(statuses))
    if group_id:
        project_id = parse_uuid(group_id)
        if project_id is None:
            raise errors.InvalidAPIParameters("group_id must be a project id")
        query = query.filter(project_id=project_id)
    if owner_email:
        check_text(owner_email, "owner_user_email", max_chars=254)
        if not is_admin(user):
            raise errors.InsufficientPrivilege("Only admins list other users' folders")
        query = query.filter(user__email__iexact=owner_email)
    found = list(query.order_by("name", "created_at"))
    context = AccessContext(user, [f.id for f in found])
    result = []
    for folder in found:
        access = context.access(folder)
        if access is not None:
            result.append(access)
    return result


def folder_info(user: User, ref) -> dict:
    """``GET /folders/{x}``: the listing fields plus the file count and bytes used."""
    access = get_folder(user, ref, statuses=LISTED_STATUSES)
    body = folder_json(access)
    answer = proxy.folder_call(access.folder, "GET", "/folder/usage")
    used, files = int(answer.get("used_bytes") or 0), int(answer.get("file_count") or 0)
    body.update({"numFiles": files, "used_bytes": used, "cur_size": used})
    return body


def folder_id_by_name(user: User, name) -> str:
    return get_folder(user, name, statuses=LISTED_STATUSES).folder.id.hex
