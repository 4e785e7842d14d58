"""Giving a user folder to another user (``POST /folders/_/change-ownership``, superadmins).

The rules: only user folders change owner (a project folder belongs to its
project); the new owner is an active user who may use the folder's storage host
(any host permission from their domain, projects or keypair policy); the folder's
name must be free among the new owner's folders (400 ``vfolder-already-exists``);
the folder is ready and no live session mounts it.

The folder's directory lives under its quota scope (``user-<hex>/...``), so it moves
to the new owner's scope on the same volume (the storage proxy's ``POST /folder/move``):
the row (owner, domain, quota scope) and the directory change together, while the
folder is PERFORMING so that nothing mounts, clones or trashes it meanwhile.  The new owner's own permission on it (an accepted
invitation) is dropped, as are the pending invitations the old owner sent for it;
the permissions of other invitees stay."""
from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User, UserStatus
from backendai.actions import audited
from backendai.api import errors
from vfolders import hooks
from vfolders.models import (
    InvitationState,
    OwnershipType,
    QuotaScope,
    VFolder,
    VFolderGrant,
    VFolderInvitation,
    VFolderStatus,
)
from vfolders.services import proxy
from vfolders.services.access import folders
from vfolders.services.hosts import host_permissions
from vfolders.services.inputs import check_text, parse_uuid
from vfolders.services.lifecycle import name_taken
from vfolders.services.quota import measure_scope
from vfolders.services.status import move_status

log = logging.getLogger(__name__)


def _new_owner(user_email) -> User:
    check_text(user_email, "user_email", max_chars=254)
    if not user_email.strip():
        raise errors.InvalidAPIParameters("user_email must be an email address")
    owner = User.objects.filter(email__iexact=user_email.strip(), status=UserStatus.ACTIVE).first()
    if owner is None:
        raise errors.object_not_found("user", f"No such active user: {user_email}")
    return owner


def _check_mounts(folder: VFolder) -> None:
    busy = hooks.sessions_mounting(folder)
    if busy:
        raise errors.VFolderOperationFailed(
            f"The folder is mounted in active sessions ({', '.join(busy)}); terminate them first")


@audited("vfolder", "change-owner", "vfolder")
def change_owner(caller: User, vfolder, user_email) -> VFolder:
    """Make the active user ``user_email`` the owner of the user folder ``vfolder`` (an id)."""
    if not caller.is_superadmin:
        raise errors.InsufficientPrivilege("Only superadmins change the owner of a folder")
    folder_id = parse_uuid(vfolder)
    if folder_id is None:
        raise errors.InvalidAPIParameters("vfolder must be a folder id")
    owner = _new_owner(user_email)
    folder = folders().filter(pk=folder_id).exclude(status=VFolderStatus.DELETE_COMPLETE).first()
    if folder is None:
        raise errors.object_not_found("virtual folder", f"No such virtual folder: {vfolder}")
    give_folder(folder, owner)
    return folder


def check_giveable(folder: VFolder, owner: User) -> None:
    """Refuse (an API error) when ``folder`` cannot go to ``owner`` now."""
    if folder.ownership_type != OwnershipType.USER:
        raise errors.VFolderOperationFailed("Only user folders change owner; a project folder stays with its project")
    if folder.user_id == owner.pk:
        return
    if folder.status != VFolderStatus.READY:
        raise errors.VFolderOperationFailed(
            f"The folder {folder.name!r} is {folder.status}; only a ready folder changes owner")
    if not owner.is_superadmin and not host_permissions(owner).get(folder.host_id):
        raise errors.VFolderOperationFailed(
            f"{owner.email} may not use the storage host {folder.host_id} of the folder")
    if name_taken(owner, folder.name, exclude_id=folder.pk):
        raise errors.VFolderAlreadyExists(f"{owner.email} already has a folder named {folder.name!r}")
    _check_mounts(folder)


def give_folder(folder: VFolder, owner: User) -> None:
    """Move the user folder ``folder`` to ``owner`` (row and directory), after ``check_giveable``;
    what ``change_owner`` and a user's purge (handing shared folders to the admin) do."""
    check_giveable(folder, owner)
    if folder.user_id == owner.pk:
        return
    if not move_status(folder, VFolderStatus.PERFORMING, expected=[VFolderStatus.READY]):
        raise errors.VFolderOperationFailed("The folder changed meanwhile; try again")
    try:
        _check_mounts(folder)  # a session that started before the folder was PERFORMING
        _move(folder, owner)
    finally:
        move_status(folder, VFolderStatus.READY, expected=[VFolderStatus.PERFORMING])


def _move(folder: VFolder, owner: User) -> None:
    """Change the row and move the directory, both or neither."""
    old_user, old_domain, old_scope, old_vfid = folder.user, folder.domain_id, folder.quota_scope_id, folder.vfid
    new_scope = f"user:{owner.pk}"
    moved_to = None
    try:
        with transaction.atomic():
            User.objects.select_for_update().filter(pk=owner.pk).first()  # as create_folder: one at a time
            if name_taken(owner, folder.name, exclude_id=folder.pk):
                raise errors.VFolderAlreadyExists(f"{owner.email} already has a folder named {folder.name!r}")
            VFolder.objects.filter(pk=folder.pk).update(user=owner, domain_id=owner.domain_id,
                                                        quota_scope_id=new_scope)
            VFolderGrant.objects.filter(vfolder=folder, user=owner).delete()
            VFolderInvitation.objects.filter(vfolder=folder, state=InvitationState.PENDING).update(
                state=InvitationState.CANCELED, modified_at=timezone.now())
            QuotaScope.objects.get_or_create(host_id=folder.host_id, quota_scope_id=new_scope)
            folder.user, folder.domain_id, folder.quota_scope_id = owner, owner.domain_id, new_scope
            _move_directory(folder, old_vfid, folder.vfid)
            moved_to = folder.vfid
    except BaseException as exc:
        if moved_to is not None:  # the commit failed after the directory moved: put it back
            _move_directory(folder, moved_to, old_vfid)
        folder.user, folder.domain_id, folder.quota_scope_id = old_user, old_domain, old_scope
        if isinstance(exc, IntegrityError):  # the name was taken meanwhile (the unique constraint)
            raise errors.VFolderAlreadyExists(
                f"{owner.email} already has a folder named {folder.name!r}") from None
        raise
    log.info("folder %s (%s) moved from user %s to user %s", folder.pk, folder.name, old_user.pk, owner.pk)
    for scope in (old_scope, new_scope):
        try:
            measure_scope(folder.host, scope)
        except errors.BackendAIError:
            pass


def _move_directory(folder: VFolder, old_vfid: str, new_vfid: str) -> None:
    """The folder's directory to another quota scope on its volume (the proxy refuses, 400
    ``vfolder-operation-failed``, when it is missing or the target exists)."""
    proxy.host_call(folder.host, "POST", "/folder/move", {"src_vfid": old_vfid, "dst_vfid": new_vfid})
