"""Sharing folders: invitations to user folders (invite, accept, reject, cancel,
change), per-member permissions on project folders (share, unshare) and leaving."""
from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ProjectMembership, User, UserStatus
from backendai.actions import audited
from backendai.api import errors
from vfolders.models import (
    ALIVE_STATUSES,
    HostPermission,
    InvitationState,
    OwnershipType,
    VFolder,
    VFolderGrant,
    VFolderInvitation,
)
from vfolders.services.access import admin_covers, get_folder, iso, require
from vfolders.services.hosts import require_host_permission
from vfolders.services.inputs import PERMISSIONS, check_text, choice, parse_uuid
from vfolders.services.lifecycle import name_taken

log = logging.getLogger(__name__)

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


@audited("vfolder", "invite", "ref")
def invite(user: User, ref, permission, emails, keypair=None) -> list[str]:
    """Invite users of the folder's domain to a user folder; returns the invited emails."""
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    if folder.ownership_type != OwnershipType.USER:
        raise errors.VFolderOperationFailed("Project folders are shared with share/unshare, not invitations")
    choice(permission, PERMISSIONS, "perm")
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
    parsed = parse_uuid(inv_id) if isinstance(inv_id, str) else inv_id
    if not isinstance(parsed, uuid.UUID):
        raise errors.InvalidAPIParameters("inv_id must be an invitation id")
    inv = _invitations().filter(pk=parsed).first()
    if inv is None:
        raise errors.object_not_found("invitation")
    return inv


@audited("vfolder-invitation", "accept", "inv_id")
def accept_invitation(user: User, inv_id) -> VFolderGrant:
    inv = _invitation(inv_id)
    if inv.invitee_id != user.pk:
        raise errors.object_not_found("invitation")
    if inv.state != InvitationState.PENDING:
        raise errors.VFolderOperationFailed(f"The invitation is already {inv.state}")
    if inv.vfolder.status not in ALIVE_STATUSES:
        raise errors.VFolderOperationFailed("The folder is no longer available")
    if name_taken(user, inv.vfolder.name, exclude_id=inv.vfolder_id):
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


@audited("vfolder-invitation", "delete", "inv_id")
def delete_invitation(user: User, inv_id) -> str:
    """The invitee rejects, the inviter (or the folder's owner, or an admin) cancels."""
    inv = _invitation(inv_id)
    if inv.invitee_id == user.pk:
        state = InvitationState.REJECTED
    elif inv.inviter_id == user.pk or inv.vfolder.user_id == user.pk or admin_covers(user, inv.vfolder):
        state = InvitationState.CANCELED
    else:
        raise errors.object_not_found("invitation")
    if inv.state != InvitationState.PENDING:
        raise errors.VFolderOperationFailed(f"The invitation is already {inv.state}")
    VFolderInvitation.objects.filter(pk=inv.pk, state=InvitationState.PENDING).update(
        state=state, modified_at=timezone.now())
    return state


@audited("vfolder-invitation", "update", "inv_id")
def update_invitation(user: User, inv_id, permission) -> None:
    inv = _invitation(inv_id)
    if not (inv.inviter_id == user.pk or inv.vfolder.user_id == user.pk or admin_covers(user, inv.vfolder)):
        raise errors.object_not_found("invitation")
    choice(permission, PERMISSIONS, "perm")
    if inv.state != InvitationState.PENDING:
        raise errors.VFolderOperationFailed(f"The invitation is already {inv.state}")
    VFolderInvitation.objects.filter(pk=inv.pk).update(permission=permission, modified_at=timezone.now())


def _grant(folder: VFolder, users, permission) -> None:
    """Give each of ``users`` ``permission`` of their own on ``folder`` (a new one or a changed one)."""
    with transaction.atomic():
        for u in users:
            VFolderGrant.objects.update_or_create(vfolder=folder, user=u, defaults={"permission": permission})


def _revoke(folder: VFolder, users) -> set:
    """Take back the permissions of their own that ``users`` have on ``folder``; the ids of those who had one."""
    removed = set(VFolderGrant.objects.filter(vfolder=folder, user__in=users).values_list("user_id", flat=True))
    VFolderGrant.objects.filter(vfolder=folder, user_id__in=removed).delete()
    return removed


def _project_members(folder: VFolder) -> set:
    return set(ProjectMembership.objects.filter(project_id=folder.project_id).values_list("user_id", flat=True))


@audited("vfolder", "share", "ref")
def share(user: User, ref, permission, emails) -> list[str]:
    """Give project members a permission of their own on a project folder."""
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    if folder.ownership_type != OwnershipType.GROUP:
        raise errors.VFolderOperationFailed("Only project folders are shared; invite users to a user folder")
    choice(permission, PERMISSIONS, "permission")
    members = _project_members(folder)
    users = [u for u in _users_by_email(emails) if u.pk in members]
    _grant(folder, users, permission)
    return [u.email for u in users]


@audited("vfolder", "unshare", "ref")
def unshare(user: User, ref, emails) -> list[str]:
    access = get_folder(user, ref, need="manage")
    folder = access.folder
    if folder.ownership_type != OwnershipType.GROUP:
        raise errors.VFolderOperationFailed("Only project folders are unshared; use leave for user folders")
    users = _users_by_email(emails)
    removed = _revoke(folder, users)
    return [u.email for u in users if u.pk in removed]


def shared_permissions(user: User, vfolder_id=None) -> list[dict]:
    """``GET /folders/_/shared``: the permissions of their own that users have on the live
    folders ``user`` manages (their own user folders; a domain admin's domain; everything for
    a superadmin), optionally of one folder; the folders one does not manage are left out."""
    query = VFolderGrant.objects.select_related("vfolder", "user").filter(vfolder__status__in=list(ALIVE_STATUSES))
    if vfolder_id not in (None, ""):
        parsed = parse_uuid(vfolder_id)
        if parsed is None:
            raise errors.InvalidAPIParameters("vfolder_id must be a folder id")
        query = query.filter(vfolder_id=parsed)
    if not user.is_superadmin:
        managed = Q(vfolder__ownership_type=OwnershipType.USER, vfolder__user_id=user.pk)
        if user.is_domain_admin:
            managed |= Q(vfolder__domain_id=user.domain_id)
        query = query.filter(managed)
    result = []
    for grant in query.order_by("vfolder__name", "vfolder_id", "user__email"):
        folder = grant.vfolder
        result.append({
            "vfolder_id": str(folder.id), "vfolder_name": folder.name, "status": folder.status,
            "owner": str(folder.user_id or folder.project_id),
            "type": "project" if folder.ownership_type == OwnershipType.GROUP else "user",
            "shared_to": {"uuid": str(grant.user_id), "email": grant.user.email},
            "perm": grant.permission,
        })
    return result


@audited("vfolder", "set-shared-permission", "vfolder")
def set_shared_permission(user: User, vfolder, target, permission) -> None:
    """``POST /folders/_/shared``: an admin changes (``permission`` one of ro, rw, wd) or takes
    back (``permission`` None) the permission of their own that ``target`` (a user id) has on
    the folder ``vfolder`` (an id).  On a project folder a member without one gets one (as
    ``share`` gives); on a user folder only an invitee who accepted has one to change."""
    folder_id, target_id = parse_uuid(vfolder), parse_uuid(target)
    if folder_id is None:
        raise errors.InvalidAPIParameters("vfolder must be a folder id")
    if target_id is None:
        raise errors.InvalidAPIParameters("user must be a user id")
    if permission is not None:
        choice(permission, PERMISSIONS, "perm")
    if not (user.is_superadmin or user.is_domain_admin):
        raise errors.InsufficientPrivilege("Only admins change the permissions users have on shared folders")
    folder = get_folder(user, folder_id.hex, need="manage").folder
    member = User.objects.filter(pk=target_id).first()
    if member is None:
        raise errors.object_not_found("user", f"No such user: {target}")
    if permission is None:
        if not _revoke(folder, [member]):
            raise errors.object_not_found("permission", f"{member.email} has no permission of their own on the folder")
        log.info("folder %s: %s took back the permission of %s", folder.pk, user.pk, member.pk)
        return
    if not VFolderGrant.objects.filter(vfolder=folder, user=member).exists():
        if folder.ownership_type == OwnershipType.USER:
            raise errors.object_not_found(
                "permission", f"{member.email} does not share the folder; invite them to it first")
        if member.pk not in _project_members(folder):
            raise errors.VFolderOperationFailed(f"{member.email} is not a member of the folder's project")
    _grant(folder, [member], permission)
    log.info("folder %s: %s gave %s the permission %s", folder.pk, user.pk, member.pk, permission)


@audited("vfolder", "leave", "ref")
def leave(user: User, ref, shared_user_uuid=None) -> None:
    """An invitee leaves a user folder; its owner (or an admin) may remove an invitee."""
    access = get_folder(user, ref)
    folder = access.folder
    if folder.ownership_type != OwnershipType.USER:
        raise errors.VFolderOperationFailed("You cannot leave a project folder")
    target = user.pk
    if shared_user_uuid:
        parsed = parse_uuid(str(shared_user_uuid))
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
