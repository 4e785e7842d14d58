"""Celery entry points of the plumbing: the background-task runner and its reconciler (``backendai.bgtasks``)."""
from celery import shared_task

from backendai import auditlog, bgtasks


@shared_task(name=bgtasks.RUN_TASK, ignore_result=True)
def run_background_task(task_id: str) -> None:
    bgtasks.run(task_id)


@shared_task(name="backendai.tasks.prune_audit_log", ignore_result=True)
def prune_audit_log() -> int:
    """Delete audit entries older than ``AUDIT_RETENTION_DAYS`` (beat: hourly)."""
    return auditlog.prune()


@shared_task(name="backendai.tasks.reconcile_background_tasks", ignore_result=True)
def reconcile_background_tasks() -> dict:
    return bgtasks.reconcile()
