"""503, never 500, when the database cannot serve a request right now.

A request that waits ``DB_POOL_TIMEOUT`` seconds for a connection of its
process's pool (``psycopg_pool.PoolTimeout``), or finds the database
unreachable (a connection refused, lost or turned away for lack of slots), is
refused as a whole:

* API paths: ``503`` ``application/problem+json`` of type
  ``service-unavailable`` with ``Retry-After``;
* web pages (``/ui/``, ``/admin/``): a plain ``503`` page with ``Retry-After``;
* websockets (terminals, tcpproxy, the agent link): accepted and closed at once
  with code 1013 ("try again later"), so the client reconnects after a pause.

A pool timeout or a refused connect happens at the request's first query (a
request keeps the connection it got until it ends), so such a refused request
has changed nothing.  A connection lost in the middle of a request is answered
503 too; what that request had committed before stays.

Exceptions leave a request in three places, and each is covered here:

1. a DRF view: ``backendai.api.exception_handler.problem_exception_handler`` asks
   :func:`refusal_for` before answering 500;
2. a plain Django view (web pages, SSE): :class:`DatabaseUnavailableMiddleware`
   (``process_exception``); and a middleware's own query (a session saved on
   the way out) reaches ``handler500`` in ``backendai/urls.py``, which asks
   :func:`refusal_for_current_exception`;
3. a Channels consumer: :class:`ASGIGuard` wraps the websocket router.

Hand-written because none of Django, DRF, Channels or psycopg maps "no
connection now" to a retryable status; the classification is deliberately
narrow (pool timeouts and connection-level SQLSTATE classes) so that a bug
that raises ``OperationalError`` for another reason still shows up as a 500
in the logs.
"""
from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time

from django.http import HttpResponse

from backendai.api import errors
from backendai.api.middleware import is_api_path

log = logging.getLogger(__name__)

#: the pool was busy: its connections come back within a request's time
RETRY_AFTER_BUSY = 1
#: the database itself does not answer: give it longer
RETRY_AFTER_DOWN = 5
#: websocket close code 1013, "Try Again Later" (RFC 6455 registry)
CLOSE_TRY_AGAIN_LATER = 1013

# SQLSTATE classes meaning "no usable connection": 08 connection exception, 53 insufficient
# resources (53300 too_many_connections), 57P01-57P03 admin/crash shutdown, cannot connect now.
_CONNECTION_SQLSTATE_CLASSES = ("08", "53")
_CONNECTION_SQLSTATES = ("57P01", "57P02", "57P03")

BUSY = "busy"
DOWN = "down"


def classify(exc: BaseException | None) -> str | None:
    """``BUSY`` (no pooled connection in time), ``DOWN`` (the database does not answer) or None.

    Walks the exception and its causes: Django re-raises driver errors as
    ``django.db.OperationalError`` with the driver's exception as ``__cause__``."""
    seen = 0
    while exc is not None and seen < 8:
        seen += 1
        kind = _classify_one(exc)
        if kind is not None:
            return kind
        exc = exc.__cause__ or exc.__context__
    return None


def _classify_one(exc: BaseException) -> str | None:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:  # SQLite-only installation
        psycopg = psycopg_pool = None
    if psycopg_pool is not None and isinstance(exc, (psycopg_pool.PoolTimeout, psycopg_pool.TooManyRequests)):
        return BUSY
    if psycopg_pool is not None and isinstance(exc, psycopg_pool.PoolClosed):
        return DOWN
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate is None:  # raised by libpq, not the server: refused, timed out, lost
            return DOWN
        if sqlstate[:2] in _CONNECTION_SQLSTATE_CLASSES or sqlstate in _CONNECTION_SQLSTATES:
            return DOWN
        return None
    if isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc):
        return BUSY  # the embedded mode's writers queue on one file
    return None


class _RefusalLog:
    """One WARNING for the first refusal, then at most one summary line every ``interval`` seconds
    (an overloaded server refuses hundreds of requests a second; the log must stay readable)."""

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self.lock = threading.Lock()
        self.last = 0.0
        self.pending = 0

    def note(self, kind: str, where: str, exc: BaseException) -> None:
        with self.lock:
            self.pending += 1
            now = time.monotonic()
            if now - self.last < self.interval:
                return
            count, self.pending, self.last = self.pending, 0, now
        cause = exc.__cause__ or exc
        log.warning("database %s: refused %s with 503 (%d refusal(s) since the last report): %s: %s",
                    "pool exhausted" if kind == BUSY else "unavailable", where, count,
                    type(cause).__name__, cause)


refusals = _RefusalLog()


def _retry_after(kind: str) -> int:
    return RETRY_AFTER_BUSY if kind == BUSY else RETRY_AFTER_DOWN


def _message(kind: str) -> str:
    if kind == BUSY:
        return "The server is busy: no database connection was free in time. Retry shortly."
    return "The database does not answer. Retry shortly."


def api_response(kind: str):
    return errors.problem_response(503, errors.ServiceUnavailable.error_type, errors.ServiceUnavailable.error_title,
                                   _message(kind), headers={"Retry-After": str(_retry_after(kind))})


PAGE = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Service unavailable</title></head>"
        "<body><h1>Service temporarily unavailable</h1><p>{message}</p>"
        "<p>Reload the page in a few seconds.</p></body></html>")


def page_response(kind: str) -> HttpResponse:
    """A self-contained page: no template, no context processor, nothing that could query again."""
    response = HttpResponse(PAGE.format(message=_message(kind)), status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(_retry_after(kind))
    return response


def refusal_for(request, exc: BaseException):
    """The 503 for ``request`` when ``exc`` means the database can't serve it now, else None."""
    kind = classify(exc)
    if kind is None:
        return None
    path = getattr(request, "path", "") or ""
    refusals.note(kind, f"{getattr(request, 'method', '?')} {path}", exc)
    return api_response(kind) if is_api_path(path) else page_response(kind)


def refusal_for_current_exception(request):
    """For ``handler500``: Django calls it inside the ``except`` block of the failed request."""
    return refusal_for(request, sys.exc_info()[1])


class DatabaseUnavailableMiddleware:
    """Turns a view's "no database connection" into the 503 of its kind of path."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        return refusal_for(request, exception)


class ASGIGuard:
    """ASGI wrapper: a consumer (or an HTTP app) that fails for want of a database connection ends
    with a websocket close 1013, or a 503 when no HTTP response has started; anything else re-raises.

    The consumer's own ``disconnect`` is not run (it would need the same database); its channel
    layer groups expire on their own."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        kind_of_scope = scope.get("type")
        if kind_of_scope not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        state = {"started": False, "closed": False}

        async def tracking_send(message):
            if message["type"] in ("websocket.accept", "http.response.start"):
                state["started"] = True
            elif message["type"] == "websocket.close":
                state["closed"] = True
            await send(message)

        try:
            return await self.app(scope, receive, tracking_send)
        except Exception as exc:
            kind = classify(exc)
            if kind is None:
                raise
            path = scope.get("path", "")
            refusals.note(kind, f"{kind_of_scope} {path}", exc)
            if kind_of_scope == "websocket":
                if state["closed"]:
                    return None
                if not state["started"]:  # a close before accept is a bare HTTP 403: accept to say 1013
                    await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER,
                            "reason": "database unavailable, try again later"})
                return None
            if state["started"]:
                raise
            response = api_response(kind) if is_api_path(path) else page_response(kind)
            headers = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in response.items()]
            headers.append((b"content-length", str(len(response.content)).encode()))
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": response.content})
            return None
