"""The Celery application: workers run reconcilers and passes; beat (exactly
one) triggers them on the schedules kept in the database (django-celery-beat)."""
import os

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    before_task_publish,
    task_postrun,
    task_prerun,
)

from backendai import logfilters, requestctx

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


#: the message header that carries the request id of whoever sent the task
REQUEST_ID_HEADER = "backendai_request_id"
_task_tokens: dict[str, object] = {}


@before_task_publish.connect
def _send_request_id(headers=None, **kwargs):
    """A task sent while serving a request carries its id: the task's log lines name it."""
    ctx = requestctx.current()
    if ctx is not None and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, ctx.request_id)


@task_prerun.connect
def _enter_task_context(task_id=None, task=None, **kwargs):
    """Each task runs with a context: via "daemon" for the beat's periodic passes, "task" for
    the rest; the request id is the sender's (or the task id), ``task``/``task_id`` are fields."""
    name = getattr(task, "name", "") or ""
    periodic = {entry.get("task") for entry in (app.conf.beat_schedule or {}).values()}
    request = getattr(task, "request", None)
    sender_id = getattr(request, REQUEST_ID_HEADER, None) or (getattr(request, "headers", None) or {}).get(
        REQUEST_ID_HEADER)
    ctx = requestctx.for_task(name, request_id=sender_id or (task_id or "").replace("-", ""),
                              via="daemon" if name in periodic else "task")
    ctx.extra["task_id"] = task_id
    _task_tokens[task_id] = requestctx.set_current(ctx)


@task_postrun.connect
def _leave_task_context(task_id=None, **kwargs):
    token = _task_tokens.pop(task_id, None)
    if token is not None:
        requestctx.reset(token)
