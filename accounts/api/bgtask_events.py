"""``GET /events/background-task?task_id=`` (23.09 clients; ``taskId`` too): a
background task's progress as Server-Sent Events (``backendai.bgtasks`` has the
task API and the event shapes).

It lives in accounts because a caller is HMAC-authenticated here
(``accounts.api.authentication``); it reads only the plumbing's task rows, so
any app's task (an image rescan, a folder clone) is followed the same way.  The
task's starter and superadmins may follow it; anyone else gets 404.

Like ``/events/session``: the stream opens with a ``: ok`` comment, polls the
row twice a second (giving its database connection back between polls), sends
``bgtask_updated`` whenever a report changed the row, then the outcome and
``server_close``.  A task already finished answers its last report and its
outcome at once (after ``FIRST_EVENT_DELAY``, for the clients' spinner).  After ``MAX_STREAM_SECONDS`` an unfinished task's stream ends
without ``server_close``, so the client reconnects and goes on following it."""
from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

from accounts.api.authentication import authenticate_plain_request
from backendai import bgtasks, telemetry
from backendai.api import errors
from backendai.db import release_connections

POLL_SECONDS = 0.5
#: Between the opening comment and the first event.  The official clients' progress viewer
#: starts a spinner task as it opens the stream and crashes (awaiting that task, cancelled
#: before it ever ran) when an event is already there at its first read: a task that finished
#: at once, or a fast first report.  A moment of quiet lets the spinner start.
FIRST_EVENT_DELAY = 0.25
MAX_STREAM_SECONDS = 3600
KEEPALIVE_SECONDS = 15
OPENING = ": ok\n\n"
KEEPALIVE = ": keepalive\n\n"


def _follow(request):
    user, _ = authenticate_plain_request(request)
    try:
        task = bgtasks.followable(request.GET.get("task_id") or request.GET.get("taskId"), user)
        return str(task.pk)
    finally:
        release_connections()


def _state(task_id: str):
    try:
        return bgtasks.stream_state(task_id)
    finally:
        release_connections()


async def background_task_events(request):
    if request.method != "GET":
        return errors.MethodNotAllowed().as_response()
    try:
        task_id = await sync_to_async(_follow)(request)
    except errors.BackendAIError as exc:
        return exc.as_response()

    async def stream():
        yield OPENING
        await asyncio.sleep(FIRST_EVENT_DELAY)
        started = last_sent = time.monotonic()
        sent_revision = 0  # revision 0: queued, nothing reported yet
        while time.monotonic() - started < MAX_STREAM_SECONDS:
            polled = time.monotonic()
            state = await sync_to_async(_state)(task_id)
            if state is None:  # purged while followed
                yield bgtasks.SERVER_CLOSE
                return
            if state.revision != sent_revision:
                if state.revision > 1 or not state.finished:
                    telemetry.observe_event("bgtask_updated", seconds=time.monotonic() - polled)
                    yield bgtasks.updated_event(state)
                if state.finished:
                    telemetry.observe_event(bgtasks.FINAL_EVENT.get(state.status, "bgtask_done"),
                                            seconds=time.monotonic() - polled)
                    yield bgtasks.final_event(state)
                    yield bgtasks.SERVER_CLOSE
                    return
                sent_revision = state.revision
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
                yield KEEPALIVE
                last_sent = time.monotonic()
            await asyncio.sleep(POLL_SECONDS)

    response = StreamingHttpResponse(telemetry.propagated(stream(), "bgtask_sse"), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
