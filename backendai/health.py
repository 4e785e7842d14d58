"""Health of the manager as a whole: the one place that decides what "healthy" means.

Checks (each a dict with ``ok`` and details, so callers read one stable shape):

* ``database``: a ``SELECT 1`` answers;
* ``redis``: answers a PING when ``REDIS_URL`` is set (``configured: false`` and ok otherwise);
* ``beat``: the beat's last recorded tick (``Heartbeat`` row ``beat``) is younger than
  ``BEAT_MAX_AGE``; ``age`` is in seconds, ``null`` when no tick was ever recorded.

Used by ``/readyz`` (200 or 503), the admin's cluster overview and ``manage.py
healthcheck`` (exit 1 when unhealthy); beat itself records its ticks through
``record_heartbeat``.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connections
from django.utils import timezone

log = logging.getLogger(__name__)

BEAT = "beat"
_STARTED_AT = timezone.now()  # when this process imported us: "started_at" of what it records


def record_heartbeat(name: str, now: datetime | None = None) -> None:
    """Record that the process kind ``name`` is alive, here and now (one UPDATE, an INSERT the first time)."""
    from backendai.models import Heartbeat

    now = now or timezone.now()
    fields = {"last_seen": now, "started_at": _STARTED_AT, "pid": os.getpid(), "host": socket.gethostname()[:255]}
    if Heartbeat.objects.filter(name=name).update(**fields):
        return
    try:
        Heartbeat.objects.create(name=name, **fields)
    except IntegrityError:  # created meanwhile by another process of the same kind
        Heartbeat.objects.filter(name=name).update(**fields)


def check_database() -> dict:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - report whatever broke
        return {"ok": False, "error": _one_line(exc)}


def check_redis() -> dict:
    if not settings.REDIS_URL:
        return {"ok": True, "configured": False}
    try:
        import redis

        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
        return {"ok": True, "configured": True}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "configured": True, "error": _one_line(exc)}


def check_beat(now: datetime | None = None) -> dict:
    """``{"ok", "age", "max_age", "last_seen", "pid", "host"}`` (+ ``error`` when not ok)."""
    from backendai.models import Heartbeat

    max_age = settings.BEAT_MAX_AGE
    result = {"ok": False, "age": None, "max_age": max_age, "last_seen": None, "pid": None, "host": None}
    try:
        beat = Heartbeat.objects.filter(name=BEAT).first()
    except Exception as exc:  # noqa: BLE001 - the database check says more
        return {**result, "error": f"cannot read the beat's heartbeat: {_one_line(exc)}"}
    if beat is None:
        return {**result, "error": "beat has never recorded a tick"}
    age = max(0.0, ((now or timezone.now()) - beat.last_seen).total_seconds())
    result.update(age=round(age, 1), last_seen=beat.last_seen.isoformat(), pid=beat.pid, host=beat.host)
    if age > max_age:
        return {**result, "error": f"beat's last tick is {age:.0f} s old (BEAT_MAX_AGE is {max_age} s)"}
    return {**result, "ok": True}


def run_checks() -> dict[str, dict]:
    return {"database": check_database(), "redis": check_redis(), "beat": check_beat()}


def failing(checks: dict[str, dict]) -> list[str]:
    return [name for name, check in checks.items() if not check["ok"]]


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
