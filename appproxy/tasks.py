"""Celery entry points for the app proxy (thin: call services).

Beat: ``mark_lost_workers`` every 15 s and ``sweep_circuits`` every 15 s
(docs/appproxy.md lists the schedule lines)."""
from celery import shared_task

from appproxy import services


@shared_task(name="appproxy.tasks.mark_lost_workers", ignore_result=True)
def mark_lost_workers() -> int:
    return services.mark_lost_workers()


@shared_task(name="appproxy.tasks.sweep_circuits", ignore_result=True)
def sweep_circuits() -> dict:
    return services.sweep_circuits()


@shared_task(name="appproxy.tasks.remove_session_circuits", ignore_result=True)
def remove_session_circuits(session_id: str, reason: str = "session-ended") -> int:
    return services.remove_session_circuits(session_id, reason)
