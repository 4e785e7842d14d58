"""What purging a user does to the app proxy (``accounts.hooks`` purge handler): the circuits
the user owns go, tombstoned so their workers drop the routes at once.  Those of the user's
own sessions went when the sessions ended (a live one refuses the purge); what can be left
are circuits a superadmin set up by hand in the admin with this owner on another user's
session.  Nothing here refuses a purge."""
from __future__ import annotations

from accounts import hooks
from accounts.models import User
from appproxy.models import Circuit
from appproxy.services import remove_circuits


def purge_handler(purge: hooks.Purge) -> hooks.PurgeAction | None:
    if not isinstance(purge.target, User):
        return None
    user = purge.target
    return lambda: remove_circuits(Circuit.objects.filter(owner=user), reason="owner-purged")
