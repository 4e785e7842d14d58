"""Last-access reports from workers: they move circuits' and sessions' ``last_access``
forward, which feeds the idle checks."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from datetime import timezone as dt_timezone

from django.db.models import Q
from django.utils import timezone

from appproxy.models import Circuit, Worker
from sessions import services as session_services

log = logging.getLogger(__name__)


MAX_ACCESS_REPORTS = 2000


def _parse_when(value) -> datetime | None:
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), tz=dt_timezone.utc)
        parsed = datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt_timezone.utc)


def record_access(worker: Worker, reports: dict) -> int:
    """``{circuit_id: time}`` from a worker: move circuits' and their sessions'
    ``last_access`` forward (never back), which feeds the idle checks."""
    now = timezone.now()
    when_by_id = {}
    for circuit_id, value in list(reports.items())[:MAX_ACCESS_REPORTS]:
        when = _parse_when(value)
        try:
            key = str(uuid.UUID(str(circuit_id)))
        except ValueError:
            log.info("proxy worker %s reported access to %r, which is not a circuit id", worker.authority,
                     circuit_id)
            continue
        if when is not None:
            when_by_id[key] = min(when, now)
    if not when_by_id:
        return 0
    sessions = dict(Circuit.objects.filter(worker=worker, pk__in=list(when_by_id)).values_list("pk", "session_id"))
    latest_by_session: dict = {}
    for circuit_id, session_id in sessions.items():
        when = when_by_id[str(circuit_id)]
        Circuit.objects.filter(pk=circuit_id).filter(Q(last_access__isnull=True) | Q(last_access__lt=when)).update(
            last_access=when)
        if session_id is not None:  # inference circuits have no session
            latest_by_session[session_id] = max(when, latest_by_session.get(session_id, when))
    for session_id, when in latest_by_session.items():
        session_services.touch_session(session_id, when)
    return len(sessions)
