"""The one door for a folder's status: every status write of ``vfolders`` goes
through ``move_status`` (or ``initial_status`` when a folder row is created).

The legal moves are ``vfolders.models.FOLDER_TRANSITIONS``.  A move the map does
not allow raises ``IllegalFolderMove`` (a programming error, never a user's: the
callers look folders up among the statuses they may move from); a legal move is a
compare-and-set on the statuses the caller expects, so a folder another request
moved meanwhile is left alone and ``move_status`` answers False."""
from __future__ import annotations

from django.utils import timezone

from vfolders.models import VFolder, VFolderStatus, folder_can_move

HISTORY_LENGTH = 50


class IllegalFolderMove(ValueError):
    """A folder status change that ``FOLDER_TRANSITIONS`` does not allow."""


def _entry(status: str, moment) -> dict:
    return {"status": str(status), "timestamp": moment.isoformat()}


#: What a new folder row may start as: READY, or CLONING for the target of a clone.
INITIAL_STATUSES = (VFolderStatus.READY, VFolderStatus.CLONING)


def initial_status(status: str = VFolderStatus.READY) -> dict:
    """The status fields of a new folder row (READY, or CLONING while a clone fills it)."""
    status = VFolderStatus(status)
    if status not in INITIAL_STATUSES:
        raise IllegalFolderMove(f"a new folder cannot start as {status}")
    now = timezone.now()
    return {"status": status, "status_changed": now, "status_history": [_entry(status, now)]}


def move_status(folder: VFolder, status: str, expected=None) -> bool:
    """Move ``folder`` to ``status`` if it is still in one of ``expected`` (default: the
    status it was loaded with); True when it moved.  Raises ``IllegalFolderMove`` when
    any expected status may not move to ``status``."""
    target = VFolderStatus(status)
    sources = [VFolderStatus(s) for s in (expected if expected is not None else [folder.status])]
    illegal = [s for s in sources if not folder_can_move(s, target)]
    if illegal or not sources:
        raise IllegalFolderMove(
            f"a folder cannot move from {', '.join(illegal) or 'nowhere'} to {target} (folder {folder.pk})")
    now = timezone.now()
    history = (list(folder.status_history or []) + [_entry(target, now)])[-HISTORY_LENGTH:]
    moved = VFolder.objects.filter(pk=folder.pk, status__in=sources).update(
        status=target, status_changed=now, status_history=history) == 1
    if moved:
        folder.status, folder.status_changed, folder.status_history = target, now, history
    return moved
