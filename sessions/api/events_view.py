"""``GET /events/session``: lifecycle events as Server-Sent Events.

Events are read back from the status histories (see ``sessions.events``), so
the stream is correct whichever process changed a status; it polls the
database twice a second for sessions that changed since the last look."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.db.models import Q
from django.http import StreamingHttpResponse
from django.utils import timezone

from backendai.api import errors
from backendai.api.authentication import authenticate_plain_request
from sessions import events, services, validation
from sessions.lifecycle import DEAD_SESSION
from sessions.models import Session

POLL_SECONDS = 0.5
MAX_STREAM_SECONDS = 3600
SCOPES = ("*", "session", "kernel")


def _select(user, keypair, params) -> tuple[Q, str, bool]:
    scope = params.get("scope", "*")
    for key in ("sessionId", "session_id", "sessionName", "name"):
        if params.get(key):
            validation.check_session_ref(params[key], key)
    if scope not in SCOPES:
        raise errors.InvalidAPIParameters(f"scope must be one of {', '.join(SCOPES)}")
    owner = params.get("ownerAccessKey") or params.get("owner_access_key")
    target = services.owner_scope(user, keypair, owner)
    condition = Q(access_key=target)
    single = False
    session_id = params.get("sessionId") or params.get("session_id")
    name = params.get("sessionName") or params.get("name") or "*"
    if session_id:
        session = services.get_session(user, keypair, session_id, owner)
        condition = Q(pk=session.pk)
        single = True
    elif name != "*":
        session = services.get_session(user, keypair, name, owner)
        condition = Q(pk=session.pk)
        single = True
    group = validation.check_query_text(params.get("group", "*"), "group", validation.GROUP_MAX)
    if group != "*":
        project_id = validation.as_uuid(group)
        condition &= Q(project__name=group) | Q(project_id__in=[project_id] if project_id else [])
    return condition, scope, single


def _changed_since(condition: Q, since: datetime) -> list[Session]:
    query = (Session.objects.filter(condition).filter(Q(status_changed__gte=since) | Q(kernels__status_changed__gte=since))
             .distinct().prefetch_related("kernels"))
    return list(query)


def _snapshot(condition: Q) -> list[Session]:
    return list(Session.objects.filter(condition).prefetch_related("kernels")[:50])


async def session_events(request):
    if request.method != "GET":
        return errors.MethodNotAllowed().as_response()
    try:
        user, keypair = await sync_to_async(authenticate_plain_request)(request)
        condition, scope, single = await sync_to_async(_select)(user, keypair, request.GET)
    except errors.BackendAIError as exc:
        return exc.as_response()

    async def stream():
        cursor = timezone.now() - timedelta(seconds=1) if not single else None
        started = timezone.now()
        yield "retry: 5\n\n"
        while (timezone.now() - started).total_seconds() < MAX_STREAM_SECONDS:
            look_from = timezone.now() - timedelta(seconds=2)
            if cursor is None:
                sessions = await sync_to_async(_snapshot)(condition)
            else:
                sessions = await sync_to_async(_changed_since)(condition, min(cursor, look_from))
            batch = events.events_for(sessions, scope, since=cursor)
            for event in batch:
                yield event.sse()
            if batch:
                cursor = max(e.when for e in batch)
            elif cursor is None:
                cursor = started
            if single and sessions and all(s.status in DEAD_SESSION for s in sessions):
                yield "event: server_close\ndata: {}\n\n"
                return
            await asyncio.sleep(POLL_SECONDS)
        yield "event: server_close\ndata: {}\n\n"

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
