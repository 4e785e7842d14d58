"""Celery entry points for folders (thin: call services)."""
from celery import shared_task

from vfolders import services


@shared_task(name="vfolders.tasks.reconcile")
def reconcile() -> dict:
    """Finish interrupted purges and give up clones whose worker died (``VFOLDER_CLONE_TIMEOUT``)."""
    return {**services.reconcile(), "clones_given_up": services.reconcile_clones()}


@shared_task(name="vfolders.tasks.measure_quota_scopes")
def measure_quota_scopes() -> int:
    """Re-measure the usage of every quota scope (the storage proxies measure; for the admin)."""
    return services.measure_all_scopes()


@shared_task(name="vfolders.tasks.check_storage_proxies")
def check_storage_proxies() -> dict:
    """Ask every storage proxy for its status and volumes; one that has not answered for
    ``STORAGE_PROXY_LOST_TIMEOUT`` seconds is LOST (its folders answer 503 until it is back)."""
    return services.check_all_proxies()
