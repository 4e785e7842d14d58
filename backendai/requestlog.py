"""The request context and the access log: one line per request.

:class:`RequestLogMiddleware` (first in ``settings.MIDDLEWARE``) makes a
:class:`~backendai.requestctx.RequestContext` for each HTTP request: the request id
(the client's ``X-Request-ID`` when it is sane, 1-64 characters of ``[A-Za-z0-9._-]``,
otherwise a new one), the client address (``backendai.api.clientip``'s rule for
forwarded headers), the user agent, and ``via`` by path (``graphql``, ``admin``,
``webui``, ``api``).  The signed-API authentication binds the user id and access key
once it knows them (``accounts.api.authentication``), so every log line the view writes
carries them.  The response echoes ``X-Request-ID``.

Then it writes exactly one line to the ``backendai.access`` logger: method, path, route
pattern, status, duration in ms, bytes (none for a streamed body), user id, access key
and request id, as fields (``LOG_FORMAT=json``) and in the message.  The probes
(``/healthz``, ``/readyz``, ``/metrics``) answered below 400 are logged at DEBUG.

:class:`WebsocketContext` does the same for websocket connections (ASGI, in front of
Channels): the consumers run with the context, and one access line is written when the
connection ends (status 101 when it was accepted, 403 when refused).
"""
from __future__ import annotations

import logging
import time

from django.utils.functional import empty

from backendai import requestctx
from backendai.api import clientip

log = logging.getLogger("backendai.access")

REQUEST_ID_HEADER = "X-Request-ID"
PROBE_PATHS = ("/healthz", "/readyz", "/metrics")
MAX_LOGGED_PATH = 512


def via_for_path(path: str) -> str:
    if "/admin/gql" in path or "/admin/graphql" in path:
        return "graphql"
    if path.startswith("/admin/"):
        return "admin"
    if path == "/ui" or path.startswith("/ui/"):
        return "webui"
    return "api"


def printable(text: str, limit: int = MAX_LOGGED_PATH) -> str:
    """``text`` safe for one log line: control characters escaped, at most ``limit`` characters."""
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return out if len(out) <= limit else out[:limit] + "..."


def request_id_from(value: str | None) -> str:
    return requestctx.sane_request_id(value) or requestctx.new_request_id()


def _user_ids(request) -> tuple[str | None, str | None]:
    """The authenticated user's id and access key, without evaluating a lazy user the view
    never looked at (that would cost a query per request)."""
    user = request.__dict__.get("user")
    if user is None:
        return None, None
    wrapped = getattr(user, "_wrapped", user)
    if wrapped is empty:  # a SimpleLazyObject nobody evaluated
        return None, None
    if not getattr(wrapped, "is_authenticated", False):
        return None, None
    pk = getattr(wrapped, "pk", None)
    auth = getattr(request, "auth", None)
    return (str(pk) if pk is not None else None), getattr(auth, "access_key", None)


def write_access_line(ctx: requestctx.RequestContext, *, method: str, path: str, route: str, status: int,
                      seconds: float, size: int | None) -> None:
    duration_ms = round(seconds * 1000, 1)
    level = logging.DEBUG if (path in PROBE_PATHS and status < 400) else logging.INFO
    if not log.isEnabledFor(level):
        return
    path = printable(path)
    fields = {"method": method, "path": path, "route": route, "status": status, "duration_ms": duration_ms,
              "bytes": size, "request_id": ctx.request_id, "user_id": ctx.user_id, "access_key": ctx.access_key,
              "remote_addr": ctx.remote_addr, "user_agent": ctx.user_agent, "via": ctx.via}
    size_text = "-" if size is None else f"{size}B"
    who = f" user={ctx.user_id}" if ctx.user_id else ""
    log.log(level, "%s %s %s %.1fms %s route=%s%s request_id=%s", method, path, status, duration_ms, size_text,
            route or "-", who, ctx.request_id, extra={k: v for k, v in fields.items() if v is not None})


class RequestLogMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        ctx = requestctx.RequestContext(
            request_id=request_id_from(request.META.get("HTTP_X_REQUEST_ID")),
            via=via_for_path(request.path),
            remote_addr=clientip.client_address(request) or None,
            user_agent=printable(request.META.get("HTTP_USER_AGENT", ""), 256) or None)
        request.request_id = ctx.request_id
        token = requestctx.set_current(ctx)
        response = None
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = ctx.request_id
            return response
        finally:
            try:
                self._log(request, response, ctx, time.perf_counter() - started)
            finally:
                # Django logs a 4xx/5xx ("Not Found: ...") after the middleware returns, and a streamed
                # body is sent after that: the context ends when the server closes the response
                closers = getattr(response, "_resource_closers", None)
                if closers is not None:
                    closers.append(lambda: requestctx.reset(token))
                else:
                    requestctx.reset(token)

    @staticmethod
    def _log(request, response, ctx, seconds: float) -> None:
        user_id, access_key = _user_ids(request)
        if ctx.user_id is None and user_id is not None:
            ctx.user_id = user_id
        if ctx.access_key is None and access_key is not None:
            ctx.access_key = access_key
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", "") or "" if match is not None else ""
        if response is None:
            status, size = 500, None
        else:
            status = response.status_code
            size = None if getattr(response, "streaming", False) else len(response.content)
        write_access_line(ctx, method=request.method, path=request.path, route=route, status=status,
                          seconds=seconds, size=size)


def _scope_header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class WebsocketContext:
    """ASGI wrapper for websocket connections: a request context for the consumer, and
    one access line when the connection ends."""

    def __init__(self, app, routes: list | None = None):
        self.app, self.routes = app, routes or []

    def route_of(self, path: str) -> str:
        """The pattern of the websocket route serving ``path`` (the channels router's order), like the
        HTTP lines' ``route``; ``unmatched`` for the catch-all and for no route."""
        relative = path.lstrip("/")
        for route in self.routes:
            pattern = getattr(route, "pattern", None)
            if pattern is not None and pattern.match(relative):
                return str(pattern) or "unmatched"
        return "unmatched"

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "websocket":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope.get("path", "")
        ctx = requestctx.RequestContext(
            request_id=request_id_from(_scope_header(scope, b"x-request-id")), via=via_for_path(path),
            remote_addr=clientip.scope_client_address(scope) or None,
            user_agent=printable(_scope_header(scope, b"user-agent") or "", 256) or None)
        state = {"status": 500}

        async def tracking_send(message):
            kind = message.get("type")
            if kind == "websocket.accept":
                state["status"] = 101
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", ctx.request_id.encode()))
                message = {**message, "headers": headers}
            elif kind == "websocket.close" and state["status"] == 500:
                state["status"] = 403
            return await send(message)

        with requestctx.using(ctx):
            try:
                return await self.app(scope, receive, tracking_send)
            finally:
                write_access_line(ctx, method="WS", path=path, route=self.route_of(path), status=state["status"],
                                  seconds=time.perf_counter() - started, size=None)
