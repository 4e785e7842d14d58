"""What the sessions app tells whoever listens, without knowing who listens.

The sessions app sits below the app proxy (and the Celery entry points sit above
the services that send these), so it never calls them: it sends a signal and
the interested code connects a receiver in its ``AppConfig.ready()``:

* ``session_queued`` / ``capacity_freed``: a session was enqueued, or one ended
  and gave capacity back.  ``sessions.tasks`` hints the scheduler to run a pass
  for the scaling group now rather than at its next tick.
* ``session_ended``: a session is ending (TERMINATING or TERMINATED).  The app
  proxy drops the session's circuits (its periodic sweep converges anyway).

Every signal is a hint (DESIGN.md §4.1): receivers run after the commit, and a
receiver that fails is logged, never raised into the writer that sent it.
"""
from __future__ import annotations

import logging
import time

from django.dispatch import Signal

from backendai import telemetry

log = logging.getLogger(__name__)

#: kwargs: ``session_id``, ``scaling_group``
session_queued = Signal()
#: kwargs: ``scaling_group``
capacity_became_free = Signal()
#: kwargs: ``session_id``, ``reason``
session_ended = Signal()


#: their event names (``backendai_event_*{event_name}``)
_NAMES = {id(session_queued): "session_enqueued", id(capacity_became_free): "session_capacity_freed",
          id(session_ended): "session_ended"}


def _send(signal: Signal, **kwargs) -> None:
    started = time.perf_counter()
    failed = False
    for receiver, result in signal.send_robust(sender=None, **kwargs):
        if isinstance(result, Exception):
            failed = True
            log.warning("%s receiver %s failed: %s", kwargs, getattr(receiver, "__qualname__", receiver), result)
    telemetry.observe_event(_NAMES.get(id(signal), "other"), seconds=time.perf_counter() - started, failed=failed)


def queued(session_id, scaling_group: str | None) -> None:
    """A session was enqueued (call after the commit)."""
    _send(session_queued, session_id=session_id, scaling_group=scaling_group)


def capacity_freed(scaling_group: str | None) -> None:
    """A session ended and its capacity is free (call after the commit)."""
    _send(capacity_became_free, scaling_group=scaling_group)


def ended(session_id, reason: str) -> None:
    """A session is ending (call after the commit)."""
    _send(session_ended, session_id=session_id, reason=reason)
