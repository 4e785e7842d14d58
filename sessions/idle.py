"""Idle checks (reference §10), run as a reconciler every few seconds.

* ``session_lifetime`` (always on): the keypair policy's ``max_session_lifetime``.
* ``network_timeout``: no user activity (apps, terminals, API calls on the
  session) for the policy's ``idle_timeout`` (>0), or ``IDLE_NETWORK_TIMEOUT``
  when the policy says "use the default" (<0).  0 disables.  Batch sessions
  are exempt.
* ``utilization``: averages of the kernels' reported utilisation over
  ``IDLE_UTILIZATION_WINDOW`` below every threshold of
  ``IDLE_UTILIZATION_THRESHOLDS`` (e.g. ``cpu_util=2``), after a full window.

``report`` gives the remaining seconds per checker (negative: expired), which
users see as ``idleChecks``.
"""
from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from sessions.lifecycle import SessionStatus
from sessions.models import Session, SessionType

log = logging.getLogger(__name__)
SAMPLE_EVERY = 15  # seconds between utilisation samples kept per kernel


def _policy(session):
    keypair = session.access_key
    return keypair.resource_policy if keypair is not None else None


def lifetime_remaining(session: Session, now: datetime) -> float | None:
    policy = _policy(session)
    if policy is None or not policy.max_session_lifetime:
        return None
    return policy.max_session_lifetime - (now - session.created_at).total_seconds()


def network_remaining(session: Session, now: datetime) -> float | None:
    if session.session_type == SessionType.BATCH:
        return None
    policy = _policy(session)
    timeout = policy.idle_timeout if policy is not None else -1
    if timeout < 0:
        timeout = getattr(settings, "IDLE_NETWORK_TIMEOUT", 0)
    if not timeout:
        return None
    started = session.last_access or session.status_changed or session.created_at
    return timeout - (now - started).total_seconds()


def utilization_remaining(session: Session, now: datetime) -> float | None:
    thresholds = getattr(settings, "IDLE_UTILIZATION_THRESHOLDS", {}) or {}
    window = getattr(settings, "IDLE_UTILIZATION_WINDOW", 600)
    if not thresholds or session.status != SessionStatus.RUNNING:
        return None
    started = session.status_changed or session.created_at
    samples = []
    for kernel in session.kernels.all():
        samples.extend((kernel.status_data or {}).get("util_series", []))
    cutoff = (now - timedelta(seconds=window)).timestamp()
    recent = [s for s in samples if s.get("t", 0) >= cutoff]
    if (now - started).total_seconds() < window or not recent:
        return float(window)  # still within the first window
    for metric, limit in thresholds.items():
        values = [float(s[metric]) for s in recent if s.get(metric) is not None]
        if values and sum(values) / len(values) >= float(limit):
            return float(window)  # busy: the window restarts
    return -1.0


CHECKERS = {
    "session_lifetime": (lifetime_remaining, "idle-session-lifetime"),
    "network_timeout": (network_remaining, "idle-timeout"),
    "utilization": (utilization_remaining, "idle-utilization"),
}


def report(session: Session, now: datetime) -> dict:
    result = {}
    for name, (check, _) in CHECKERS.items():
        remaining = check(session, now)
        if remaining is not None:
            result[name] = {"remaining": round(remaining, 1), "remaining_time_type": "expire_after"}
    return result


def find_idle(now: datetime | None = None) -> list[tuple[Session, str]]:
    now = now or timezone.now()
    expired = []
    sessions = (Session.objects.filter(status=SessionStatus.RUNNING).exclude(session_type=SessionType.SYSTEM)
                .select_related("access_key__resource_policy").prefetch_related("kernels"))
    for session in sessions:
        for name, (check, reason) in CHECKERS.items():
            remaining = check(session, now)
            if remaining is not None and remaining < 0:
                expired.append((session, reason))
                break
    return expired


def record_sample(kernel, stats: dict | None, now: datetime) -> bool:
    """Keep a bounded utilisation series on the kernel (one sample per 15 s)."""
    if not stats:
        return False
    series = list((kernel.status_data or {}).get("util_series", []))
    ts = now.timestamp()
    if series and ts - series[-1].get("t", 0) < SAMPLE_EVERY:
        return False
    window = getattr(settings, "IDLE_UTILIZATION_WINDOW", 600)
    sample = {"t": ts}
    for key in ("cpu_util", "mem_used", "cuda_util", "cuda_mem"):
        if stats.get(key) is not None:
            try:
                value = float(stats[key])
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):  # "NaN"/"inf" would make the JSON column refuse the whole sync
                sample[key] = value
    series = [s for s in series if s.get("t", 0) >= ts - window] + [sample]
    kernel.status_data = {**(kernel.status_data or {}), "util_series": series}
    return True
