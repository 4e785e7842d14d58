"""The app proxy's answers to the sessions app (connected in ``AppProxyConfig.ready``):
a session that ends loses its circuits, and a session page may submit forms to
the workers' setup endpoints."""
from __future__ import annotations

from appproxy import services


def drop_circuits_of_ended_session(sender=None, session_id=None, reason: str = "session-ended", **_) -> None:
    """Receiver of ``sessions.signals.session_ended``."""
    services.remove_session_circuits(session_id, reason=reason)
