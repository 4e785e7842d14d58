"""Who may open a stream into a session, and to what: the synchronous half of
the terminal (``/stream/session/{s}/pty``) and tcpproxy websockets.

* :func:`authenticate_scope`: a websocket is signed exactly like an HTTP call
  (the official client signs upgrades with ``application/octet-stream``) or
  carries the web UI's session cookie (then its ``Origin`` must be this site).
* :func:`resolve_target`: the session must be visible to the caller
  (``sessions.services.get_session``: owner, domain admin, superadmin) and
  running; the stream goes to its main kernel on its agent.

The relaying itself lives in ``sessions.consumers``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from importlib import import_module
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest
from django.utils import timezone

from accounts.api.authentication import authenticate_plain_request
from accounts.api.websession import session_keypair
from agents.models import AgentStatus
from backendai.api import errors
from backendai.api.errors import BackendAIError
from sessions import services
from sessions.lifecycle import RUNNING_SESSION, KernelStatus

log = logging.getLogger(__name__)


# Close codes sent after the websocket was accepted (refusals before it are HTTP 403).
CLOSE_NORMAL = 1000
CLOSE_TOO_BIG = 1009
CLOSE_AGENT = 1011
CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_NOT_RUNNING = 4409


class StreamRefused(Exception):
    """The caller may see the session, but the stream cannot be opened (sent as a close code)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class NotAllowed(Exception):
    """No such session for this caller: refused before the handshake completes (HTTP 403)."""


@dataclass(frozen=True)
class StreamTarget:
    session_id: str
    session_name: str
    kernel_id: str
    agent_id: str
    app: str | None = None
    port: int | None = None  # the container port (tcp streams)


# --- authentication -----------------------------------------------------------------------------

def _headers(scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or []:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers and name != "cookie" else value
    return headers


def scope_request(scope) -> HttpRequest:
    """A plain Django request for a websocket scope, so the HTTP authentication code applies unchanged.

    It keeps the scope (``raw_path`` + ``query_string`` are the signed target);
    the signed content type of an upgrade is ``application/octet-stream``.
    """
    request = HttpRequest()
    request.method = "GET"
    request.path = request.path_info = scope.get("path", "")
    request.scope = scope
    meta = {"REQUEST_METHOD": "GET", "PATH_INFO": request.path,
            "QUERY_STRING": scope.get("query_string", b"").decode("latin-1")}
    client = scope.get("client")
    if client:
        meta["REMOTE_ADDR"] = str(client[0])
    for name, value in _headers(scope).items():
        key = name.upper().replace("-", "_")
        meta[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    meta.setdefault("CONTENT_TYPE", "application/octet-stream")
    request.META = meta
    return request


def _same_origin(headers: dict[str, str]) -> bool:
    """A browser's websocket must come from a page of this site (no cross-site websocket hijacking)."""
    origin = headers.get("origin")
    if not origin:
        return True  # not a browser: it cannot have been tricked into sending the cookie
    if origin in (settings.CSRF_TRUSTED_ORIGINS or []):
        return True
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


def _cookie_user(request: HttpRequest, headers: dict[str, str]):
    try:
        cookies = SimpleCookie(headers.get("cookie", ""))
    except CookieError:
        return None
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    if morsel is None or not morsel.value:
        return None
    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(morsel.value)
    user = get_user(request)  # checks the session's auth hash, like the middleware
    return user if user.is_authenticated and user.is_active else None


def authenticate_scope(scope):
    """``(user, keypair)`` for a signed request or a logged-in browser, else ``None``.

    The keypair is the signing one, or for the cookie the one a session-mode login chose
    (``/server/login``), else the user's main keypair.
    """
    headers = _headers(scope)
    request = scope_request(scope)
    if headers.get("authorization"):
        try:
            return authenticate_plain_request(request)
        except BackendAIError as exc:
            log.info("stream refused: %s (%s)", exc.detail if hasattr(exc, "detail") else exc, scope.get("path"))
            return None
    if not _same_origin(headers):
        log.info("stream refused: cross-origin websocket from %s", headers.get("origin"))
        return None
    user = _cookie_user(request, headers)
    if user is None:
        return None
    return user, session_keypair(request, user)


# --- what the stream reaches ----------------------------------------------------------------------

def query_params(scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))


def resolve_target(user, keypair, name: str, kind: str, params: dict[str, str]) -> StreamTarget:
    """The main kernel of a running session the caller may use; raises :class:`NotAllowed`
    (no such session for this caller) or :class:`StreamRefused`."""
    try:
        session = services.get_session(user, keypair, name, params.get("owner_access_key") or None)
    except BackendAIError as exc:
        raise NotAllowed(str(exc)) from None
    if session.status not in RUNNING_SESSION:
        raise StreamRefused(CLOSE_NOT_RUNNING, f"Session {session.name} is {session.status}, not RUNNING")
    kernel = (session.kernels.filter(cluster_role="main").select_related("agent").first()
              or session.kernels.select_related("agent").first())
    if kernel is None or kernel.status != KernelStatus.RUNNING or kernel.agent_id is None:
        raise StreamRefused(CLOSE_NOT_RUNNING, f"The main kernel of {session.name} is not running")
    if kernel.agent.status != AgentStatus.ALIVE:
        raise StreamRefused(CLOSE_AGENT, f"Agent {kernel.agent_id} is {kernel.agent.status}")
    target = StreamTarget(str(session.pk), session.name, str(kernel.pk), kernel.agent_id)
    if kind != "tcp":
        return target
    app = params.get("app", "")
    if not app:
        raise StreamRefused(CLOSE_BAD_REQUEST, "Missing the app parameter")
    port_spec = next((p for p in kernel.service_ports or [] if p.get("name") == app), None)
    if port_spec is None:
        raise StreamRefused(CLOSE_NOT_FOUND, f"Session {session.name} has no app {app!r}")
    ports = [int(p) for p in port_spec.get("container_ports") or []]
    if params.get("port"):
        try:
            port = int(params["port"])
        except ValueError:
            raise StreamRefused(CLOSE_BAD_REQUEST, "port must be a number") from None
        if port not in ports:
            raise StreamRefused(CLOSE_NOT_FOUND, f"App {app!r} does not serve port {port}")
    elif ports:
        port = ports[0]
    else:
        raise StreamRefused(CLOSE_NOT_FOUND, f"App {app!r} has no port")
    return StreamTarget(target.session_id, target.session_name, target.kernel_id, target.agent_id, app, port)


def touch_session(session_id: str) -> None:
    """Record user activity now (see ``sessions.services.touch_session``)."""
    services.touch_session(session_id, timezone.now())


def http_target(user, keypair, name: str, owner_access_key: str | None = None) -> StreamTarget:
    """:func:`resolve_target` for HTTP views: the main kernel of a running session, or an API error.

    No such session for the caller -> 404; not running -> 403 (as restarting one);
    its agent not reachable -> 503."""
    try:
        return resolve_target(user, keypair, name, "", {"owner_access_key": owner_access_key or ""})
    except NotAllowed:
        raise errors.object_not_found("session", f"No session {name!r}") from None
    except StreamRefused as exc:
        if exc.code == CLOSE_AGENT:
            raise errors.ServiceUnavailable(exc.message) from None
        raise errors.GenericForbidden(exc.message) from None
