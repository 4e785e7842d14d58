"""Celery entry points for model serving (thin: call the services).

Beat: ``autoscale_endpoints`` every 5 s (``serving.services.autoscale.evaluate_rules``),
``reconcile_endpoints`` every 2 s (``serving.services.reconcile``; services and ended replica
sessions also ask for a pass at once), ``prune_events`` hourly."""
import logging

from celery import shared_task

from serving.services import autoscale, events, reconcile

log = logging.getLogger(__name__)


@shared_task(name="serving.tasks.autoscale_endpoints", ignore_result=True)
def autoscale_endpoints() -> int:
    """One autoscaling pass; the number of endpoints whose replicas it changed."""
    return len(autoscale.evaluate_rules())


@shared_task(name="serving.tasks.reconcile_endpoints", ignore_result=True)
def reconcile_endpoints() -> dict:
    """One reconciler pass over every endpoint (replicas, route statuses, circuits)."""
    return reconcile.reconcile_endpoints()


@shared_task(name="serving.tasks.prune_events", ignore_result=True)
def prune_events() -> int:
    """Keep the newest events of each endpoint."""
    return events.prune()


def replica_ended(sender=None, session_id=None, **_) -> None:
    """Receiver of ``sessions.signals.session_ended``: when the session is a replica, a pass now
    (a hint: the periodic pass converges anyway)."""
    from serving.models import Routing

    if session_id is None or not Routing.objects.filter(session_id=session_id).exists():
        return
    try:
        reconcile_endpoints.delay()
    except Exception as exc:  # noqa: BLE001 - a broker hiccup only delays the pass
        log.debug("could not hint the serving reconciler: %s", exc)
