"""What purging a user or a project does to folders (``accounts.hooks`` purge handler).

A project's folders, trashed and deleted ones too, go with it: their files first, then the
rows.  A user's own folders go the same way, except (``Purge.keep_shared_folders``, GraphQL's
``purge_shared_vfolders: false``, the default) those other users have access to, which are
handed over to the admin who purges.  Their invitations and per-user permissions go.  Refused,
before anything changes, while a live session mounts one of the folders that would go."""
from __future__ import annotations

import logging

from django.db.models import Q

from accounts import hooks
from accounts.models import Project, User
from backendai.api import errors
from vfolders import hooks as vfolder_hooks
from vfolders.models import OwnershipType, VFolder, VFolderGrant, VFolderInvitation, VFolderStatus
from vfolders.services.lifecycle import remove_files
from vfolders.services.ownership import check_giveable, give_folder
from vfolders.services.status import move_status

log = logging.getLogger(__name__)


def purge_handler(purge: hooks.Purge) -> hooks.PurgeAction | None:
    target = purge.target
    if isinstance(target, User):
        owned = VFolder.objects.filter(ownership_type=OwnershipType.USER, user=target)
        whose = target.email
    elif isinstance(target, Project):
        owned = VFolder.objects.filter(ownership_type=OwnershipType.GROUP, project=target)
        whose = f"the group {target.name!r}"
    else:
        return None
    owned = owned.select_related("host")
    handed_over: list[VFolder] = []
    if isinstance(target, User) and purge.keep_shared_folders:
        handed_over = list(owned.exclude(status=VFolderStatus.DELETE_COMPLETE)
                           .filter(grants__isnull=False).exclude(grants__user=purge.actor).distinct())
    removed = [folder for folder in owned.exclude(status=VFolderStatus.DELETE_COMPLETE)
               if folder.pk not in {kept.pk for kept in handed_over}]
    for folder in removed:
        mounting = vfolder_hooks.sessions_mounting(folder)
        if mounting:
            raise errors.InvalidAPIParameters(
                f"{whose} has the folder {folder.name!r} mounted by live sessions ({', '.join(mounting)}); "
                "destroy them first.")
    for folder in handed_over:  # one owner's live folders have distinct names
        check_giveable(folder, purge.actor)

    def act() -> None:
        for folder in handed_over:
            give_folder(folder, purge.actor)
        for folder in removed:
            _remove(folder)
        done = owned.filter(status=VFolderStatus.DELETE_COMPLETE)
        VFolderInvitation.objects.filter(vfolder__in=done).delete()
        VFolderGrant.objects.filter(vfolder__in=done).delete()
        done.delete()
        if isinstance(target, User):
            VFolderInvitation.objects.filter(Q(inviter=target) | Q(invitee=target)).delete()
            VFolderGrant.objects.filter(user=target).delete()
        log.info("purge of %s by %s: %d folder(s) removed, %d handed over", whose,
                 getattr(purge.actor, "pk", None), len(removed), len(handed_over))

    return act


def _remove(folder: VFolder) -> None:
    """Files first, then the row becomes DELETE_COMPLETE (a failure refuses the purge)."""
    if folder.status not in (VFolderStatus.DELETE_PENDING, VFolderStatus.DELETE_ERROR):
        move_status(folder, VFolderStatus.DELETE_PENDING)
    move_status(folder, VFolderStatus.DELETE_ONGOING)
    remove_files(folder)
    if folder.status != VFolderStatus.DELETE_COMPLETE:
        raise errors.VFolderOperationFailed(f"The files of the folder {folder.name!r} could not be removed.")
