"""The one rule for forwarded client addresses, without Django, so the manager
(``backendai.api.clientip``) and the proxy worker (``appproxy.worker``) apply it alike.

A reverse proxy tells us the client's address in ``X-Forwarded-For`` (or
``X-Real-IP``) and the scheme in ``X-Forwarded-Proto``.  Anybody can send those
headers, so they count only when the direct peer is in the trusted networks.
Then the client is the right-most ``X-Forwarded-For`` hop that is not itself a
trusted proxy: each trusted proxy appends the address it saw, and hops to the
left of the first untrusted one were written by the client.
"""
from __future__ import annotations

import ipaddress


def parse_ip(value: str):
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``::1`` or ``[::1]:80`` (IPv4-mapped
    IPv6 reads as IPv4); None when it isn't one."""
    value = value.strip()
    if value.startswith("[") and "]" in value:
        value = value[1:value.index("]")]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped is not None else ip


def in_networks(address: str | None, networks) -> bool:
    ip = parse_ip(address) if address else None
    return ip is not None and any(ip in net for net in networks)


def resolve_client(peer: str, forwarded_for: str | None, real_ip: str | None, trusted) -> str:
    """The client address for a connection from ``peer`` carrying these headers."""
    if not in_networks(peer, trusted):
        return peer
    if forwarded_for:
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            ip = parse_ip(hop)
            if ip is None:  # garbage in the chain: stop at the last address we could trust
                break
            client = str(ip)
            if not any(ip in net for net in trusted):
                break
        return client
    ip = parse_ip(real_ip) if real_ip else None
    return str(ip) if ip is not None else peer


def resolve_scheme(peer: str, forwarded_proto: str | None, default: str, trusted) -> str:
    """``http``/``https`` as the client used it (``ws``/``wss`` for websockets)."""
    if not forwarded_proto or not in_networks(peer, trusted):
        return default
    proto = forwarded_proto.split(",")[0].strip().lower()
    if proto not in ("http", "https"):
        return default
    if default in ("ws", "wss"):
        return "wss" if proto == "https" else "ws"
    return proto
