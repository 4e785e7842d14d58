"""The coordinator's clocks, read from settings at each use (tests and operators may change them)."""
from __future__ import annotations

from django.conf import settings


def _setting(name: str, default):
    return getattr(settings, name, default)


def heartbeat_timeout() -> float:
    return float(_setting("APPPROXY_WORKER_HEARTBEAT_TIMEOUT", 30))


def idle_timeout() -> float:
    return float(_setting("APPPROXY_CIRCUIT_IDLE_TIMEOUT", 3600))


def setup_token_ttl() -> float:
    return float(_setting("APPPROXY_SETUP_TOKEN_TTL", 120))


def permit_ttl() -> float:
    return float(_setting("APPPROXY_PERMIT_TTL", 7 * 86400))


def tombstone_retention() -> float:
    return float(_setting("APPPROXY_TOMBSTONE_RETENTION", 86400))
