"""Paginated folder listings as the GraphQL root fields answer them: ``vfolder_list``,
``vfolder_own_list``, ``vfolder_invited_list``, ``vfolder_project_list`` and the
single ``vfolder(id)``.

Who sees what (Backend.AI's scoping, with this project's choices):

* ``vfolder_list``: superadmins every folder, domain admins their domain's, other
  users the folders they own, share a project of or were invited to;
* ``vfolder_own_list``: the user folders the caller owns (whatever the role);
* ``vfolder_invited_list``: the user folders the caller was invited to (accepted);
* ``vfolder_project_list``: the folders of the projects the caller belongs to.

Every listing leaves out the folders whose deletion is under way or done
(``delete-ongoing``, ``delete-complete``: Backend.AI's dead statuses); folders in
the trash are listed.  Each list is newest first unless ``order`` says otherwise,
with the id as the tiebreak, and ``total_count`` counts exactly what the same
scope and filter return, so the client's ``offset += len(items)`` loop ends."""
from __future__ import annotations

import uuid

from accounts.models import Keypair, ProjectMembership, User
from backendai.api import errors
from backendai.prepared import Prepared
from vfolders.models import LISTED_STATUSES, OwnershipType, VFolder, VFolderGrant
from vfolders.services.access import Access, AccessContext, iso, personal_q
from vfolders.services.inputs import check_text, parse_uuid
from vfolders.services.queryfilter import parse_filter, parse_order

MAX_PAGE = 1000
KINDS = ("all", "own", "invited", "project")


def folder_item(access: Access) -> dict:
    """One folder as the GraphQL ``VirtualFolder`` type shows it."""
    f = access.folder
    return {
        "id": str(f.id),
        "host": f.host_id,
        "quota_scope_id": f.quota_scope_id,
        "name": f.name,
        "user": str(f.user_id) if f.user_id else None,
        "user_email": f.user.email if f.user_id else None,
        "group": str(f.project_id) if f.project_id else None,
        "group_name": f.project.name if f.project_id else None,
        "domain_name": f.domain_id,
        "creator": f.creator,
        "unmanaged_path": None,
        "usage_mode": f.usage_mode,
        "permission": access.shown_permission,
        "ownership_type": f.ownership_type,
        "max_files": 0,
        "max_size": 0,
        "created_at": iso(f.created_at),
        "last_used": iso(f.last_used),
        "num_files": 0,
        "cur_size": 0,
        "cloneable": f.cloneable,
        "status": f.status,
    }


def _listed():
    return VFolder.objects.filter(status__in=list(LISTED_STATUSES))


def _narrow_domain(query, user: User, domain_name):
    """``domain_name``: superadmins pick any domain; others may name only their own."""
    if domain_name is None:
        return query
    check_text(domain_name, "domain_name", max_chars=64)
    if not user.is_superadmin and domain_name != user.domain_id:
        raise errors.InsufficientPrivilege("Only superadmins list the folders of another domain")
    return query.filter(domain_id=domain_name)


def _keypair_owner(user: User, access_key) -> uuid.UUID:
    """The user behind ``access_key``: one's own keys, or (admins) a key of their domain."""
    check_text(access_key, "access_key", max_chars=64)
    keypair = Keypair.objects.select_related("user").filter(access_key=access_key).first()
    allowed = keypair is not None and (
        keypair.user_id == user.pk or user.is_superadmin
        or (user.is_domain_admin and keypair.user.domain_id == user.domain_id))
    if not allowed:
        raise errors.object_not_found("keypair", f"No such keypair: {access_key}")
    return keypair.user_id


def scope_query(user: User, kind: str = "all", *, group_id=None, domain_name=None, access_key=None):
    """The folders one listing of ``kind`` shows ``user``, before filter and order."""
    if kind not in KINDS:
        raise ValueError(f"unknown listing kind {kind!r}")
    query = _listed()
    if kind == "own":
        query = query.filter(ownership_type=OwnershipType.USER, user_id=user.pk)
    elif kind == "invited":
        query = query.filter(ownership_type=OwnershipType.USER,
                             id__in=VFolderGrant.objects.filter(user_id=user.pk).values("vfolder_id"))
    elif kind == "project":
        query = query.filter(ownership_type=OwnershipType.GROUP,
                             project_id__in=ProjectMembership.objects.filter(user_id=user.pk).values("project_id"))
    elif user.is_domain_admin:
        query = query.filter(domain_id=user.domain_id)
    elif not user.is_superadmin:
        query = query.filter(personal_q(user))
    if access_key is not None:
        owner_id = _keypair_owner(user, access_key)
        if kind == "all":
            query = query.filter(ownership_type=OwnershipType.USER, user_id=owner_id)
    if group_id:
        project_id = parse_uuid(str(group_id))
        if project_id is None:
            raise errors.InvalidAPIParameters("group_id must be a project id")
        query = query.filter(project_id=project_id)
    return _narrow_domain(query, user, domain_name)


_folder_page = Prepared("folder page")


def _page(user: User, query, limit: int, offset: int, order_by: list[str]) -> list[dict]:
    page = _folder_page.fetch(query.select_related("user", "project").order_by(*order_by)[offset:offset + limit])
    context = AccessContext(user, [f.id for f in page])
    items = []
    for folder in page:
        access = context.access(folder) or Access(folder, folder.permission, "admin", folder.permission)
        items.append(folder_item(access))
    return items


def folder_page(user: User, kind: str, limit: int, offset: int, *, group_id=None, filter: str | None = None,
                order: str | None = None, domain_name=None, access_key=None) -> tuple[list[dict], int]:
    """One page of a listing of ``kind`` and its total count (four queries)."""
    if (not isinstance(limit, int) or not isinstance(offset, int) or isinstance(limit, bool)
            or isinstance(offset, bool) or limit < 0 or offset < 0):
        raise errors.InvalidAPIParameters("limit and offset must be non-negative integers")
    limit = min(limit, MAX_PAGE)
    query = scope_query(user, kind, group_id=group_id, domain_name=domain_name, access_key=access_key)
    query = query.filter(parse_filter(filter))
    order_by = parse_order(order)  # checked before any query runs
    total = query.count()
    return _page(user, query, limit, offset, order_by), total


def vfolder_list(user: User, limit: int, offset: int, group_id=None, filter: str | None = None,
                 order: str | None = None, domain_name=None, access_key=None) -> tuple[list[dict], int]:
    """``vfolder_list``: one page of the folders ``user`` may see, and the total."""
    return folder_page(user, "all", limit, offset, group_id=group_id, filter=filter, order=order,
                       domain_name=domain_name, access_key=access_key)


def folder_by_id(user: User, folder_id) -> dict | None:
    """``vfolder(id)``: the folder if ``user`` may see it in ``vfolder_list``, else None."""
    parsed = parse_uuid(folder_id) if isinstance(folder_id, (str, uuid.UUID)) else None
    if parsed is None:
        raise errors.InvalidAPIParameters("id must be a folder id (a UUID, dashed or hex)")
    folder = scope_query(user).select_related("user", "project").filter(pk=parsed).first()
    if folder is None:
        return None
    access = AccessContext(user, [folder.id]).access(folder) or Access(folder, folder.permission, "admin",
                                                                       folder.permission)
    return folder_item(access)
