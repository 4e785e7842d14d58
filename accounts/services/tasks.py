"""Whose background tasks a user sees (the web UI's task pages).

A task (``backendai.models.BackgroundTask``, plumbing) records its starter as ``owner_id``,
a user id as text.  Superadmins see every task (those no user started too), domain admins
the tasks of their domain's users, users their own.  A task one may not see is answered as
if it did not exist."""
from __future__ import annotations

import uuid

from django.db.models import QuerySet

from accounts.models import User
from accounts.services.access import visible_users
from backendai.bgtasks import FINISHED
from backendai.models import BackgroundTask

#: The task pages show this many of the newest tasks.
LIMIT = 100


def visible_background_tasks(actor: User) -> QuerySet[BackgroundTask]:
    """The tasks ``actor`` may see, newest first."""
    query = BackgroundTask.objects.defer("args", "kwargs").order_by("-created_at")
    if actor.is_superadmin:
        return query
    if actor.is_domain_admin:
        # owner_id is text and a user's id a UUID (stored without dashes on SQLite), so the
        # domain's ids are read once and compared as text: one statement however many tasks
        owners = [str(pk) for pk in visible_users(actor).values_list("pk", flat=True)]
        return query.filter(owner_id__in=owners)
    return query.filter(owner_id=str(actor.pk))


def visible_background_task(actor: User, task_id) -> BackgroundTask | None:
    """One task ``actor`` may see, or None (an unknown id, a malformed one, another's)."""
    try:
        key = uuid.UUID(str(task_id))
    except ValueError:
        return None
    return visible_background_tasks(actor).filter(pk=key).first()


def owner_emails(tasks: list[BackgroundTask]) -> dict[str, str]:
    """``owner_id -> email`` of the tasks' starters, in one statement."""
    ids = set()
    for task in tasks:
        try:
            ids.add(uuid.UUID(task.owner_id))
        except ValueError:
            continue
    if not ids:
        return {}
    return {str(pk): email for pk, email in User.objects.filter(pk__in=ids).values_list("pk", "email")}


def any_unfinished(tasks: list[BackgroundTask]) -> bool:
    return any(task.status not in FINISHED for task in tasks)
