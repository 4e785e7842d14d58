"""The Celery application: workers run reconcilers and passes; beat (exactly
one) triggers them on the schedules kept in the database (django-celery-beat)."""
import logging
import os
import threading

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_ready,
)

from backendai import logfilters, requestctx

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backendai.settings")

app = Celery("backendai")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def warm_producer() -> None:
    """Open a producer of the pool in a background thread now, rather than in the first enqueue of
    this process: the task registry, and the embedded broker (``backendai.broker``), which imports
    SQLAlchemy and creates its tables on first use: about 0.6 s that the first session created after
    a start used to wait for (bench/hints/run.py's "cold" column).  Best effort: the first enqueue tries again."""

    app.finalize(auto=True)  # the task registry (imports the tasks modules: here, not in a thread)

    def warm():
        try:
            with app.producer_pool.acquire(block=True, timeout=5) as producer:
                producer.connection.ensure_connection(max_retries=1)
                producer.maybe_declare(app.amqp.queues[app.conf.task_default_queue])  # the broker's tables
        except Exception as exc:  # noqa: BLE001 - the first enqueue connects (and reports) itself
            logging.getLogger(__name__).debug("could not warm the Celery producer: %s", exc)

    threading.Thread(target=warm, name="celery-warm-producer", daemon=True).start()


@worker_ready.connect
@worker_process_init.connect
def _warm_worker(sender=None, **kwargs):
    """The process that runs tasks (the worker itself with ``--pool=solo`` or threads, each prefork
    child) starts its hint relay before the first scheduling pass needs it (``backendai.hints``)."""
    pool = getattr(sender, "pool", None)
    if pool is not None and type(pool).__module__.endswith(".prefork"):
        return  # the prefork parent runs no task: its children warm themselves
    from backendai import hints

    hints.warm_relay()


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
