"""Authentication plumbing that knows no account: the raw request target a
signature covers, the client's address, allowed-address checks, and the bearer
tokens of daemons (agents, proxy workers).

The HMAC authentication of users' signed requests needs keypairs and lives with
them: ``accounts.api.authentication``.
"""
from __future__ import annotations

import ipaddress
import logging
from urllib.parse import quote

from rest_framework.authentication import BaseAuthentication

from backendai.api import clientip, errors

log = logging.getLogger(__name__)

_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


def raw_request_target(request) -> str:
    """The request target exactly as the client sent it (path and query)."""
    scope = getattr(request, "scope", None)
    if scope is not None and scope.get("raw_path") is not None:
        target = scope["raw_path"].decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        return f"{target}?{query}" if query else target
    meta = request.META
    raw = meta.get("RAW_URI") or meta.get("REQUEST_URI")
    if raw:
        return raw
    # wsgiref and the test client keep only the decoded path: re-encode it.
    path = quote(meta.get("SCRIPT_NAME", "") + meta.get("PATH_INFO", "/"), safe=_PATH_SAFE)
    query = meta.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def client_address(request) -> str:
    """The client's address; forwarded headers are believed only from TRUSTED_PROXIES
    (the one rule in ``backendai.api.clientip``, under ASGI and WSGI alike)."""
    return clientip.client_address(request)


def address_allowed(address: str, allowed: list[str] | None) -> bool:
    if not allowed:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


# --- bearer tokens of daemons (agents, proxy workers) ----------------------------------------------

def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class DaemonPrincipal:
    """The authenticated caller of a daemon API: the token it presented."""

    is_authenticated = True

    def __init__(self, token):
        self.token = token


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>`` resolved by the subclass's ``lookup`` (a
    service function returning the active token or None) and named by ``what``."""

    what = "token"

    def authenticate_header(self, request):
        return "Bearer"

    def authenticate(self, request):
        raw = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if raw is None:
            raise errors.AuthorizationFailed(f"Missing {self.what} (Authorization: Bearer ...)")
        token = self.lookup(raw)
        if token is None:
            raise errors.AuthorizationFailed(f"Unknown or revoked {self.what}")
        return DaemonPrincipal(token), token


class IsDaemon:
    def has_permission(self, request, view):
        return isinstance(request.user, DaemonPrincipal)

    def has_object_permission(self, request, view, obj):
        return self.has_permission(request, view)
