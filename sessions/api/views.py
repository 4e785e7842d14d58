"""Backend.AI-compatible session endpoints.  Thin: parse, call services, render."""
from __future__ import annotations

import time

from django.conf import settings
from django.db import DatabaseError
from rest_framework.response import Response
from rest_framework.views import APIView

from backendai import admission
from backendai.api import errors, unavailable
from backendai.db import release_connections
from sessions import enqueue as enqueue_service
from sessions import services
from sessions.api import execute_views
from sessions.api.serializers import parse_create_request
from sessions.lifecycle import SessionStatus

WAIT_UNTIL = {SessionStatus.RUNNING, SessionStatus.TERMINATED, SessionStatus.ERROR, SessionStatus.CANCELLED}


def _bool(value) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def _owner(request) -> str | None:
    return request.query_params.get("owner_access_key") or (
        request.data.get("owner_access_key") if isinstance(request.data, dict) else None)


class SessionCreateView(APIView):
    """``POST /session``: enqueue; unless enqueueOnly, wait for RUNNING up to maxWaitSeconds."""

    def post(self, request):
        req = parse_create_request(request.data)
        result = enqueue_service.enqueue(request.user, request.auth, req)
        session = result.session
        status = session.status
        if result.created and not req.enqueue_only:
            status = wait_for_start(session, req.max_wait_seconds)
        session.refresh_from_db()
        body = {
            "sessionId": str(session.pk),
            "sessionName": session.name,
            "status": status,
            "servicePorts": services.apps_of(session),
            "created": result.created,
        }
        return Response(body, status=201 if result.created else 200)


def wait_for_start(session, max_wait: int) -> str:
    """Poll until RUNNING (or an end) without holding a database connection between polls: a
    waiting create must not keep one of its process's pooled connections for up to two minutes.
    A poll that finds no connection free (the pool is exhausted) just waits for the next one: the
    session exists already, refusing the request now would hide it."""
    limit = max_wait or settings.SESSION_CREATE_MAX_WAIT
    deadline = time.monotonic() + limit
    while True:
        try:
            session.refresh_from_db(fields=["status"])
        except DatabaseError as exc:
            if unavailable.classify(exc) is None:
                raise
        else:
            if session.status in WAIT_UNTIL:
                return session.status
        if time.monotonic() >= deadline:
            return "TIMEOUT" if max_wait else session.status
        release_connections()
        with admission.waiting():
            time.sleep(0.25)


class SessionDetailView(APIView):
    def get(self, request, name):
        session = services.get_session(request.user, request.auth, name, _owner(request))
        return Response(services.info(session))

    def delete(self, request, name):
        session = services.get_session(request.user, request.auth, name, _owner(request))
        forced = _bool(request.query_params.get("forced", "false"))
        recursive = _bool(request.query_params.get("recursive", "false"))
        if forced and session.status == SessionStatus.PULLING and not request.user.is_superadmin:
            raise errors.GenericForbidden("Only superadmins may force-destroy a session that is pulling its image")
        destroyed = services.destroy(request.user, session, forced=forced, recursive=recursive)
        if recursive:
            return Response([{"sessionId": str(s.pk), "stats": s.last_stat or {}} for s in destroyed])
        return Response({"stats": destroyed[0].last_stat or {}})

    def patch(self, request, name):
        session = services.get_session(request.user, request.auth, name, _owner(request))
        services.restart(session)
        return Response(status=204)

    def post(self, request, name):
        return execute_views.execute(request, name, _owner(request))


class SessionLogsView(APIView):
    def get(self, request, name):
        session = services.get_session(request.user, request.auth, name, _owner(request))
        return Response({"result": {"logs": services.logs_of(session)}})


class SessionRenameView(APIView):
    def post(self, request, name):
        new_name = request.query_params.get("name") or (request.data.get("name") if isinstance(request.data, dict) else None)
        if not new_name:
            raise errors.InvalidAPIParameters("name: is required")
        session = services.get_session(request.user, request.auth, name, _owner(request))
        services.rename(session, new_name)
        return Response(status=204)


class SessionMatchView(APIView):
    def get(self, request):
        prefix = request.query_params.get("id", "")
        if not prefix:
            raise errors.InvalidAPIParameters("id: is required")
        matches = services.match_sessions(request.user, request.auth, prefix)
        return Response({"matches": [{"id": str(s.pk), "name": s.name, "status": s.status} for s in matches]})


class SessionAppsView(APIView):
    def get(self, request, name):
        session = services.get_session(request.user, request.auth, name, _owner(request))
        return Response(services.apps_of(session))
