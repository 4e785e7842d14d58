"""What purging a user or a project does to their sessions (``accounts.hooks`` purge handler).

Refused while the target has a session that has not ended for good (anything but TERMINATED
or CANCELLED: an ERROR session may still hold containers on an agent); otherwise their ended
sessions go with them, kernels, history and proxy circuits included (Backend.AI's purge
deletes the kernel rows too)."""
from __future__ import annotations

import logging

from accounts import hooks
from accounts.models import Project, User
from backendai.api import errors
from sessions.lifecycle import DEAD_SESSION
from sessions.models import Session

log = logging.getLogger(__name__)


def purge_handler(purge: hooks.Purge) -> hooks.PurgeAction | None:
    target = purge.target
    if isinstance(target, User):
        sessions, whose = Session.objects.filter(user=target), target.email
    elif isinstance(target, Project):
        sessions, whose = Session.objects.filter(project=target), f"the group {target.name!r}"
    else:
        return None
    live = list(sessions.exclude(status__in=DEAD_SESSION).values_list("name", flat=True)[:6])
    if live:
        more = ", ..." if len(live) > 5 else ""
        raise errors.InvalidAPIParameters(
            f"{whose} still has sessions that have not ended ({', '.join(live[:5])}{more}); "
            "destroy them first.")

    def remove_ended_sessions() -> None:
        removed, _ = sessions.delete()
        if removed:
            log.info("purge of %s by %s removed %d session rows", whose, getattr(purge.actor, "pk", None), removed)

    return remove_ended_sessions
