"""Celery entry points for folders (thin: call services)."""
from celery import shared_task

from vfolders import services


@shared_task(name="vfolders.tasks.reconcile")
def reconcile() -> dict:
    """Finish interrupted purges, sweep abandoned staged uploads and give up clones
    whose worker died (``VFOLDER_CLONE_TIMEOUT``)."""
    return {**services.reconcile(), "clones_given_up": services.reconcile_clones()}


@shared_task(name="vfolders.tasks.measure_quota_scopes")
def measure_quota_scopes() -> int:
    """Re-measure the usage of every quota scope from the disk (for the admin)."""
    return services.measure_all_scopes()
