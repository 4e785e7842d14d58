"""The app proxy's answers to the sessions app (connected in ``AppProxyConfig.ready``):
a session that ends loses its circuits, and a session page may submit forms to
the workers' setup endpoints."""
from __future__ import annotations

import logging

from appproxy import gateway

log = logging.getLogger(__name__)


def drop_circuits_of_ended_session(sender=None, session_id=None, reason: str = "session-ended", **_) -> None:
    """Receiver of ``sessions.signals.session_ended`` (through the coordinator, wherever it runs).
    A coordinator that cannot be reached now costs nothing: the sweep removes the routes later."""
    try:
        gateway.coordinator().remove_session_circuits(session_id, reason=str(reason or "session-ended")[:64])
    except gateway.CoordinatorUnavailable as exc:
        log.warning("routes of ended session %s stay until the next sweep: %s", session_id, exc.msg)
