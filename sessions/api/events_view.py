"""``GET /events/session``: lifecycle events as Server-Sent Events.

Events are read back from the status histories (see ``sessions.events``), so
the stream is correct whichever process changed a status; it polls the
database twice a second for sessions that changed since the last look.

The stream opens with a comment line (``: ok``), which flushes the headers to
the client at once and which every official client (23.09 to 26.09) skips.  It
never opens with a bare ``retry:`` block: those clients turn any block without
a comment into an event, and their ``session events`` command then fails to
parse its empty data.  ``retry:`` rides on each real event instead, and after
``KEEPALIVE_SECONDS`` without one a ``: keepalive`` comment keeps idle proxies
from closing the stream."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.db.models import Q
from django.http import StreamingHttpResponse
from django.utils import timezone

from accounts.api.authentication import authenticate_plain_request
from backendai import telemetry
from backendai.api import errors
from backendai.db import release_connections
from sessions import events, services, validation
from sessions.lifecycle import DEAD_SESSION
from sessions.models import Session

POLL_SECONDS = 0.5
MAX_STREAM_SECONDS = 3600
SCOPES = ("*", "session", "kernel")
OPENING = ": ok\n\n"
KEEPALIVE = ": keepalive\n\n"
KEEPALIVE_SECONDS = 15  # a comment when nothing else was sent: idle proxies keep the stream, clients skip it


def _select(user, keypair, params) -> tuple[Q, str, bool]:
    scope = params.get("scope", "*")
    for key in ("sessionId", "session_id", "sessionName", "name"):
        if params.get(key):
            validation.check_session_ref(params[key], key)
    # 26.09 clients take a comma-separated list ("session,kernel")
    parts = {part.strip() for part in str(scope).split(",") if part.strip()}
    if not parts or not parts <= set(SCOPES):
        raise errors.InvalidAPIParameters(f"scope must be one of {', '.join(SCOPES)} (or a comma-separated list)")
    scope = "*" if "*" in parts or parts == {"session", "kernel"} else parts.pop()
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


# Each poll gives its connection back: a stream lasts up to an hour and must not keep one of its
# process's pooled connections meanwhile (backendai/db.py).
def _changed_since(condition: Q, since: datetime) -> list[Session]:
    query = (Session.objects.filter(condition).filter(Q(status_changed__gte=since) | Q(kernels__status_changed__gte=since))
             .distinct().prefetch_related("kernels"))
    try:
        return list(query)
    finally:
        release_connections()


def _snapshot(condition: Q) -> list[Session]:
    try:
        return list(Session.objects.filter(condition).prefetch_related("kernels")[:50])
    finally:
        release_connections()


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
        yield OPENING
        last_sent = started
        sent: set[tuple] = set()  # the keys of the events this stream sent
        while (timezone.now() - started).total_seconds() < MAX_STREAM_SECONDS:
            look_from = timezone.now() - timedelta(seconds=2)
            polled = time.perf_counter()
            if cursor is None:
                sessions = await sync_to_async(_snapshot)(condition)
            else:
                sessions = await sync_to_async(_changed_since)(condition, min(cursor, look_from))
            # entries commit in their own order, not their timestamps': look back as far as the sessions
            # were read and skip what was sent already (an entry stamped before the cursor still counts)
            since = None if cursor is None else min(cursor, look_from)
            batch = [e for e in events.events_for(sessions, scope, since=since) if e.key not in sent]
            sent.update(e.key for e in batch)
            if cursor is not None:  # what is older than any later look-back can go
                horizon = min(cursor, look_from)
                sent = {key for key in sent if key[1] > horizon}
            for event in batch:
                telemetry.observe_event(event.name, seconds=time.perf_counter() - polled)
            for event in batch:
                yield event.sse()
            if batch:
                last_sent = timezone.now()
            elif (timezone.now() - last_sent).total_seconds() >= KEEPALIVE_SECONDS:
                yield KEEPALIVE
                last_sent = timezone.now()
            if batch:
                cursor = max([*([cursor] if cursor else []), *(e.when for e in batch)])  # never backwards
            elif cursor is None:
                cursor = started
            if single and sessions and all(s.status in DEAD_SESSION for s in sessions):
                yield "event: server_close\ndata: {}\n\n"
                return
            await asyncio.sleep(POLL_SECONDS)
        yield "event: server_close\ndata: {}\n\n"

    response = StreamingHttpResponse(telemetry.propagated(stream(), "session_sse"), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
