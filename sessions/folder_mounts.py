"""The live sessions that mount a folder, for ``vfolders`` (which may not import
sessions): ``SessionsConfig.ready()`` registers ``live_sessions_mounting`` with
``vfolders.hooks.register_mount_lookup``, and a folder mounted by a live session
cannot go to the trash."""
from __future__ import annotations

from sessions.lifecycle import ENDED_SESSION
from sessions.models import Session
from vfolders.models import VFolder


def live_sessions_mounting(folder: VFolder) -> list[str]:
    """Names of (up to five) sessions, neither dead nor in ERROR, whose mounts name ``folder``."""
    dead = [str(s) for s in ENDED_SESSION]
    return list(Session.objects.filter(vfolder_mounts__icontains=str(folder.pk)).exclude(status__in=dead)
                .values_list("name", flat=True)[:5])
