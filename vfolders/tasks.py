"""Celery entry points for folders (thin: call services)."""
from celery import shared_task

from vfolders import services


@shared_task(name="vfolders.tasks.reconcile")
def reconcile() -> dict:
    """Finish interrupted purges and sweep abandoned staged uploads."""
    return services.reconcile()


@shared_task(name="vfolders.tasks.measure_quota_scopes")
def measure_quota_scopes() -> int:
    """Re-measure the usage of every quota scope from the disk (for the admin)."""
    return services.measure_all_scopes()
