"""The Celery application: workers run reconcilers and passes; beat (exactly
one) triggers them on the schedules kept in the database (django-celery-beat)."""
import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from backendai import logfilters

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backendai.settings")

app = Celery("backendai")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _quiet_periodic_chatter(logger=None, **kwargs):
    """Whatever handlers Celery set up (settings.LOGGING's console handler already has the
    filter), the periodic tasks' routine lines are DEBUG there too (backendai/logfilters.py)."""
    if logger is not None:
        periodic = {entry["task"] for entry in (app.conf.beat_schedule or {}).values() if "task" in entry}
        logfilters.install(logger, periodic)
