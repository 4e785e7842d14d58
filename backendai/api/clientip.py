"""Who is the client?  The one rule for forwarded addresses, used everywhere.

The rule itself (``backendai.forwarded``, shared with the proxy worker) is
applied here with ``settings.TRUSTED_PROXIES``.

* Under ASGI, ``backendai.asgi.TrustedProxyHeaders`` rewrites
  ``scope["client"]`` and ``scope["scheme"]`` once, before Django or Channels
  see the connection; everything downstream reads the scope (``REMOTE_ADDR``).
* Under WSGI only ``REMOTE_ADDR`` and the headers exist:
  ``client_address(request)`` applies the same rule to them.
"""
from __future__ import annotations

from django.conf import settings

from backendai import forwarded

#: set on an ASGI scope once its client and scheme were resolved
RESOLVED_KEY = "backendai.client_resolved"


def is_trusted_proxy(address: str | None, trusted=None) -> bool:
    return forwarded.in_networks(address, settings.TRUSTED_PROXIES if trusted is None else trusted)


def resolve_client(peer: str, forwarded_for: str | None, real_ip: str | None, trusted=None) -> str:
    """The client address for a connection from ``peer`` (``backendai.forwarded``'s rule)."""
    return forwarded.resolve_client(peer, forwarded_for, real_ip,
                                    settings.TRUSTED_PROXIES if trusted is None else trusted)


def resolve_scheme(peer: str, forwarded_proto: str | None, default: str, trusted=None) -> str:
    return forwarded.resolve_scheme(peer, forwarded_proto, default,
                                    settings.TRUSTED_PROXIES if trusted is None else trusted)


def client_address(request) -> str:
    """The client's address for a Django request, under ASGI or WSGI."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    scope = getattr(request, "scope", None)
    if scope is not None and scope.get(RESOLVED_KEY):
        return remote  # the ASGI wrapper already applied the rule to the scope
    return resolve_client(remote, request.META.get("HTTP_X_FORWARDED_FOR"), request.META.get("HTTP_X_REAL_IP"))


def scope_client_address(scope) -> str:
    """The client's address for an ASGI scope (websocket consumers)."""
    client = scope.get("client") or ("", 0)
    peer = str(client[0]) if client else ""
    if scope.get(RESOLVED_KEY):
        return peer
    headers = {}
    for name, value in scope.get("headers") or []:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return resolve_client(peer, headers.get("x-forwarded-for"), headers.get("x-real-ip"))
