"""A folder's life: create, rename, change options, trash, restore, purge, and the
reconciler that finishes interrupted deletions.  Status changes go through
``vfolders.services.status.move_status``."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Project, ProjectType, User
from backendai.actions import audited
from backendai.api import errors
from vfolders import hooks
from vfolders.models import (
    ALIVE_STATUSES,
    TRASH_STATUSES,
    HostPermission,
    InvitationState,
    OwnershipType,
    QuotaScope,
    UsageMode,
    VFolder,
    VFolderGrant,
    VFolderInvitation,
    VFolderPermission,
    VFolderStatus,
)
from vfolders.services import proxy
from vfolders.services.access import Access, folders, get_folder, is_admin, personal_q
from vfolders.services.hosts import pick_host, require_host_permission
from vfolders.services.inputs import PERMISSIONS, USAGE_MODES, choice, parse_uuid, validate_folder_name
from vfolders.services.projects import project_for
from vfolders.services.quota import measure_scope, push_limit
from vfolders.services.status import initial_status, move_status

log = logging.getLogger(__name__)


def name_taken(user: User, name: str, project: Project | None = None, exclude_id=None) -> bool:
    """Whether a live folder ``user`` sees (or of ``project``) already has ``name``."""
    query = VFolder.objects.filter(name=name, status__in=list(ALIVE_STATUSES))
    scope = personal_q(user)
    if project is not None:
        scope = scope | Q(ownership_type=OwnershipType.GROUP, project_id=project.pk)
    query = query.filter(scope)
    if exclude_id is not None:
        query = query.exclude(pk=exclude_id)
    return query.exists()


@audited("vfolder", "create", lambda a, k, r: r if r is not None else k.get("name"))
def create_folder(user: User, *, name, host=None, group=None, usage_mode: str = UsageMode.GENERAL,
                  permission: str = VFolderPermission.READ_WRITE, cloneable: bool = False, keypair=None,
                  unmanaged_path=None, status: str = VFolderStatus.READY) -> VFolder:
    """A new folder (READY; CLONING for the target of ``vfolders.services.cloning``)."""
    name = validate_folder_name(name)
    choice(usage_mode, USAGE_MODES, "usage_mode")
    choice(permission, PERMISSIONS, "permission")
    if unmanaged_path:
        raise errors.InvalidAPIParameters("Unmanaged folders (unmanaged_path) are not supported")
    project = project_for(user, group) if group else None
    if project is not None and not is_admin(user) and project.type != ProjectType.MODEL_STORE:
        raise errors.GenericForbidden("Only domain admins create project folders")
    host_obj = pick_host(host, user, keypair, project)
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
        if name_taken(user, name, project):
            raise errors.VFolderAlreadyExists(f"A folder named {name!r} already exists")
        folder = VFolder(
            host=host_obj, domain_id=owner, quota_scope_id=qsid, name=name, usage_mode=usage_mode,
            permission=permission, ownership_type=OwnershipType.GROUP if project else OwnershipType.USER,
            user=None if project else user, project=project, creator=user.email, cloneable=bool(cloneable),
            **initial_status(status),
        )
        try:
            with transaction.atomic():
                folder.save(force_insert=True)
        except IntegrityError:
            raise errors.VFolderAlreadyExists(f"A folder named {name!r} already exists") from None
        _, first_use = QuotaScope.objects.get_or_create(host=host_obj, quota_scope_id=qsid)
        if first_use:  # the proxy enforces the limit decided here (vfolders.services.quota)
            push_limit(host_obj, qsid, create=True)
        # last: a refusal of the proxy rolls the row back, and nothing is left on the proxy
        proxy.folder_call(folder, "POST", "/folder/create")
    log.info("created folder %s (%s) on %s for %s", folder.pk, name, host_obj.name, qsid)
    return folder


@audited("vfolder", "rename", "ref")
def rename_folder(user: User, ref, new_name, keypair=None) -> VFolder:
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    new_name = validate_folder_name(new_name, "new_name")
    require_host_permission(user, folder.host_id, HostPermission.MODIFY, keypair)
    if new_name == folder.name:
        return folder
    owner = folder.user if folder.ownership_type == OwnershipType.USER else user
    if name_taken(owner, new_name, folder.project, exclude_id=folder.pk):
        raise errors.VFolderAlreadyExists(f"A folder named {new_name!r} already exists")
    try:
        with transaction.atomic():
            VFolder.objects.filter(pk=folder.pk).update(name=new_name)
    except IntegrityError:
        raise errors.VFolderAlreadyExists(f"A folder named {new_name!r} already exists") from None
    folder.name = new_name
    return folder


@audited("vfolder", "update-options", "ref")
def update_options(user: User, ref, *, permission=None, cloneable=None, keypair=None) -> VFolder:
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    require_host_permission(user, folder.host_id, HostPermission.MODIFY, keypair)
    changes = {}
    if permission is not None:
        changes["permission"] = choice(permission, PERMISSIONS, "permission")
    if cloneable is not None:
        changes["cloneable"] = bool(cloneable)
    if changes:
        VFolder.objects.filter(pk=folder.pk).update(**changes)
        for key, value in changes.items():
            setattr(folder, key, value)
    return folder


@audited("vfolder", "delete", "ref")
def move_to_trash(user: User, ref, keypair=None) -> VFolder:
    """``DELETE /folders/{x}``: the folder goes to the trash (files kept until purged)."""
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    require_host_permission(user, folder.host_id, HostPermission.DELETE, keypair)
    busy = hooks.sessions_mounting(folder)
    if busy:
        raise errors.VFolderOperationFailed(
            f"The folder is mounted in active sessions ({', '.join(busy)}); terminate them first")
    if not move_status(folder, VFolderStatus.DELETE_PENDING, expected=ALIVE_STATUSES):
        raise errors.VFolderOperationFailed("The folder changed meanwhile; try again")
    log.info("folder %s (%s) moved to the trash by %s", folder.pk, folder.name, user.pk)
    return folder


@audited("vfolder", "delete", "folder_id")
def trash_folder(user: User, folder_id) -> Access:
    """A folder in the trash, by id, that ``user`` manages."""
    parsed = parse_uuid(folder_id)
    if parsed is None:
        raise errors.InvalidAPIParameters("vfolder_id must be a folder id")
    return get_folder(user, parsed.hex, statuses=TRASH_STATUSES, need="manage")


@audited("vfolder", "restore", "folder_id")
def restore_from_trash(user: User, folder_id, keypair=None) -> VFolder:
    access = trash_folder(user, folder_id)
    folder = access.folder
    require_host_permission(user, folder.host_id, HostPermission.DELETE, keypair)
    owner = folder.user if folder.ownership_type == OwnershipType.USER else user
    if name_taken(owner, folder.name, folder.project, exclude_id=folder.pk):
        raise errors.VFolderAlreadyExists(
            f"Another folder named {folder.name!r} exists now; rename or delete it before restoring")
    try:
        with transaction.atomic():
            moved = move_status(folder, VFolderStatus.READY, expected=TRASH_STATUSES)
    except IntegrityError:
        raise errors.VFolderAlreadyExists(f"Another folder named {folder.name!r} exists now") from None
    if not moved:
        raise errors.VFolderOperationFailed("The folder changed meanwhile; try again")
    return folder


@audited("vfolder", "purge", "folder_id")
def purge(user: User, folder_id, keypair=None) -> None:
    """Remove a folder in the trash for good (its files first)."""
    access = trash_folder(user, folder_id)
    folder = access.folder
    require_host_permission(user, folder.host_id, HostPermission.DELETE, keypair)
    if not move_status(folder, VFolderStatus.DELETE_ONGOING, expected=TRASH_STATUSES):
        raise errors.VFolderOperationFailed("The folder changed meanwhile; try again")
    remove_files(folder)
    if folder.status == VFolderStatus.DELETE_ERROR:
        raise errors.VFolderOperationFailed("The folder's files could not be removed; it stays in the trash")


def remove_files(folder: VFolder) -> None:
    """The files of a folder being deleted, then its row becomes DELETE_COMPLETE (or
    DELETE_ERROR when the files stay)."""
    try:
        proxy.folder_call(folder, "POST", "/folder/delete", long=True)
    except errors.BackendAIError as exc:
        log.error("cannot remove folder %s on %s: %s", folder.pk, folder.host_id, exc.msg or exc.error_title)
        move_status(folder, VFolderStatus.DELETE_ERROR, expected=[VFolderStatus.DELETE_ONGOING])
        return
    with transaction.atomic():
        move_status(folder, VFolderStatus.DELETE_COMPLETE, expected=[VFolderStatus.DELETE_ONGOING])
        VFolderGrant.objects.filter(vfolder=folder).delete()
        VFolderInvitation.objects.filter(vfolder=folder, state=InvitationState.PENDING).update(
            state=InvitationState.CANCELED, modified_at=timezone.now())
    log.info("purged folder %s (%s)", folder.pk, folder.name)
    try:
        measure_scope(folder.host, folder.quota_scope_id)
    except errors.BackendAIError:
        pass


def reconcile(stuck_after_seconds: int = 600) -> dict:
    """Finish deletions a crash interrupted (abandoned staged uploads are the storage proxies'
    own sweep)."""
    cutoff = timezone.now() - timedelta(seconds=stuck_after_seconds)
    stuck = list(folders().filter(status=VFolderStatus.DELETE_ONGOING, status_changed__lt=cutoff))
    for folder in stuck:
        remove_files(folder)
    return {"deletions_retried": len(stuck)}
