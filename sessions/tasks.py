"""Celery entry points for sessions (thin: call the scheduler and services).

Beat runs ``schedule_pending`` every 2 s (a pass only for groups with pending
sessions), ``schedule_all`` every 30 s, the reconcilers, idle checks and
callback delivery; enqueue and termination send ``schedule`` at once."""
import logging

from celery import shared_task
from django.conf import settings

from sessions import scheduler, services

log = logging.getLogger(__name__)


@shared_task(name="sessions.tasks.schedule", ignore_result=True)
def schedule(scaling_group: str | None = None) -> None:
    if scaling_group:
        scheduler.run_pass(scaling_group)
    else:
        scheduler.run_all_passes()


def hint_scheduler(sender=None, scaling_group: str | None = None, **_) -> None:
    """Receiver of ``sessions.signals.session_queued`` and ``capacity_became_free``:
    a pass for the group now, not at the next tick (best effort: the periodic pass
    picks it up anyway)."""
    try:
        schedule.delay(scaling_group)
    except Exception as exc:  # noqa: BLE001 - a broker hiccup only delays the pass
        log.debug("could not hint the scheduler: %s", exc)


@shared_task(name="sessions.tasks.schedule_pending", ignore_result=True)
def schedule_pending() -> None:
    """A pass for each scaling group that has pending sessions (one cheap query when none)."""
    for group in services.groups_with_pending():
        scheduler.run_pass(group)


@shared_task(name="sessions.tasks.schedule_all", ignore_result=True)
def schedule_all() -> None:
    scheduler.run_all_passes()


@shared_task(name="sessions.tasks.reconcile", ignore_result=True)
def reconcile() -> None:
    scheduler.reconcile_stuck(
        scheduled_timeout=settings.SESSION_SCHEDULED_TIMEOUT,
        preparing_timeout=settings.SESSION_PREPARING_TIMEOUT,
        terminating_timeout=settings.SESSION_TERMINATING_TIMEOUT,
        lost_grace=settings.AGENT_LOST_GRACE,
    )


@shared_task(name="sessions.tasks.idle_check", ignore_result=True)
def idle_check() -> int:
    return services.terminate_idle()


@shared_task(name="sessions.tasks.deliver_callbacks", ignore_result=True)
def deliver_callbacks() -> int:
    return services.deliver_callbacks()
