"""Who is the client?  The one rule for forwarded addresses, used everywhere.

A reverse proxy tells us the client's address in ``X-Forwarded-For`` (or
``X-Real-IP``) and the scheme it was reached over in ``X-Forwarded-Proto``.
Anybody can send those headers, so they are believed only when the direct
peer is in ``settings.TRUSTED_PROXIES``.  Then the client is the right-most
``X-Forwarded-For`` hop that is not itself a trusted proxy (each trusted proxy
appends the address it saw; hops to the left of the first untrusted one were
written by the client and are ignored).

* Under ASGI, ``backendai.asgi.TrustedProxyHeaders`` rewrites
  ``scope["client"]`` and ``scope["scheme"]`` once, before Django or Channels
  see the connection; everything downstream reads the scope (``REMOTE_ADDR``).
* Under WSGI only ``REMOTE_ADDR`` and the headers exist:
  ``client_address(request)`` applies the same rule to them.
"""
from __future__ import annotations

import ipaddress

from django.conf import settings

#: set on an ASGI scope once its client and scheme were resolved
RESOLVED_KEY = "backendai.client_resolved"


def _ip(value: str):
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[v6]:port"
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # "v4:port"
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def is_trusted_proxy(address: str | None, trusted=None) -> bool:
    trusted = settings.TRUSTED_PROXIES if trusted is None else trusted
    ip = _ip(address) if address else None
    return ip is not None and any(ip in net for net in trusted)


def resolve_client(peer: str, forwarded_for: str | None, real_ip: str | None, trusted=None) -> str:
    """The client address for a connection from ``peer`` carrying these headers."""
    trusted = settings.TRUSTED_PROXIES if trusted is None else trusted
    if not is_trusted_proxy(peer, trusted):
        return peer
    if forwarded_for:
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            ip = _ip(hop)
            if ip is None:  # garbage in the chain: stop at the last address we could trust
                break
            client = str(ip)
            if not any(ip in net for net in trusted):
                break
        return client
    if real_ip:
        ip = _ip(real_ip)
        if ip is not None:
            return str(ip)
    return peer


def resolve_scheme(peer: str, forwarded_proto: str | None, default: str, trusted=None) -> str:
    """``http``/``https`` as the client used it (``ws``/``wss`` for websockets)."""
    if not forwarded_proto or not is_trusted_proxy(peer, trusted):
        return default
    proto = forwarded_proto.split(",")[0].strip().lower()
    if proto not in ("http", "https"):
        return default
    if default in ("ws", "wss"):
        return "wss" if proto == "https" else "ws"
    return proto


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
