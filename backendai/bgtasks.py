"""Background tasks: a long job (an image rescan, a folder clone) run by a Celery
worker, whose progress the caller follows over ``GET /events/background-task``
(Backend.AI's ``bgtask_*`` events; the view is ``accounts/api/bgtask_events.py``).
Plumbing: it imports no app; an app hands it the dotted path of its function.

Starting one (from a service, inside or outside a transaction)::

    from backendai import bgtasks

    @bgtasks.background
    def clone_folder(progress: bgtasks.Progress, source_id: str, target_id: str) -> str:
        progress.update(0, total=len(files), message="copying")
        for done, name in enumerate(files, 1):
            ...
            progress.update(done, message=f"copied {name}")   # raises Cancelled once cancelled
        return f"{len(files)} file(s) copied"                  # the message of bgtask_done
        # or bgtasks.Outcome("12 copied", errors=["a.txt: permission denied"]) to list problems

    task_id = bgtasks.start("vfolder_clone", "vfolders.services.clone.clone_folder",
                            str(source.pk), str(target.pk), owner=user.pk)
    # answer {"bgtask_id": task_id} (a vfolder clone) or {"task_id": task_id} (rescan_images)

* ``start(name, func_path, *args, owner=None, **kwargs) -> str`` records a PENDING
  ``backendai.models.BackgroundTask`` and queues it for a worker once the caller's
  transaction commits (nothing runs if it rolls back).  Arguments must be JSON
  values; the function must be marked ``@background`` (the worker refuses any
  other callable).  ``owner`` (a user id) and superadmins may follow it.
* The worker (``backendai.tasks.run_background_task``, in the embedded mode too)
  calls ``run(task_id)``: it claims the row (PENDING -> RUNNING, once), calls
  ``func(progress, *args, **kwargs)`` outside any transaction, and records the
  outcome: DONE with the returned text, FAILED with the message of a
  ``BackendAIError`` or ``TaskFailed`` it raised (any other exception is logged
  and reported as an internal error, never echoed), CANCELLED when ``cancel``
  won.  A function may return an ``Outcome(message, errors)``: the errors travel
  in ``bgtask_done`` (26.09 clients print them).  A test runs ``run(task_id)``
  itself, as the worker would.
* ``Progress.update(current, total=None, message=None)``: one UPDATE, seen at once
  by every stream.  ``cancel(task_id)`` stops a pending task and makes the next
  ``update`` of a running one raise ``Cancelled``.
* The stream: ``stream_state`` / ``updated_event`` / ``final_event`` build the
  SSE blocks: ``bgtask_updated`` ``{task_id, message, current_progress,
  total_progress}`` on each report, then one of ``bgtask_done``, ``bgtask_failed``,
  ``bgtask_cancelled`` ``{task_id, message}`` (``errors`` too when a finished
  task listed some), then ``server_close`` ``{}``; a
  finished task replays its last report and outcome.

* Metrics with the reference's names (Prometheus, recorded by whichever process ends a
  task, shared through ``PROMETHEUS_MULTIPROC_DIR`` like the scheduler's):
  ``backendai_bgtask_count{name}`` counts the tasks a worker started,
  ``backendai_bgtask_done_count{name,status}`` (counters are exported with ``_total``) the tasks
  that ended (done, failed, cancelled, given up by ``reconcile``) and
  ``backendai_bgtask_processing_time_sec{name}`` observes started_at -> finished_at of those a
  worker had started (``backendai.telemetry``); ``/metrics`` adds the gauge
  ``backendai_bgtask_status_count{name,status}`` read from the table at scrape time (``backendai.metrics``).

A worker killed in the middle of a task leaves it RUNNING; the stream of such a
task ends after ``MAX_STREAM_SECONDS`` without ``server_close`` (the client
reconnects).  Rows are kept; ``purge_finished`` drops old finished ones.
"""
from __future__ import annotations

import importlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Callable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from backendai import telemetry
from backendai.api import errors
from backendai.celery import app as celery_app
from backendai.models import BackgroundTask, BackgroundTaskStatus

log = logging.getLogger(__name__)

RUN_TASK = "backendai.tasks.run_background_task"
FINISHED = (BackgroundTaskStatus.DONE, BackgroundTaskStatus.FAILED, BackgroundTaskStatus.CANCELLED)
FINAL_EVENT = {BackgroundTaskStatus.DONE: "bgtask_done", BackgroundTaskStatus.FAILED: "bgtask_failed",
               BackgroundTaskStatus.CANCELLED: "bgtask_cancelled"}
RETRY = "retry: 5\n"  # seconds: the official clients sleep this long before reconnecting
SERVER_CLOSE = "event: server_close\ndata: {}\n" + RETRY + "\n"
INTERNAL_ERROR = "Internal error while running the task (the worker's log has the details)."


def _observe_finished(name: str, status: str, started_at=None, finished_at=None) -> None:
    """Count a task that ended (once, by whoever's guarded UPDATE ended it) and its duration."""
    seconds = None
    if started_at is not None and finished_at is not None:
        seconds = (finished_at - started_at).total_seconds()
    telemetry.observe_bgtask_done(name, status, seconds)


class TaskFailed(Exception):
    """Raised by a task function: the task fails with this message (shown to the caller)."""


class Cancelled(Exception):
    """Raised by ``Progress.update`` once the task was cancelled."""


@dataclass(frozen=True)
class Outcome:
    """What a task function may return instead of a plain message."""

    message: str
    errors: tuple[str, ...] | list[str] = ()


def background(func: Callable) -> Callable:
    """Mark ``func(progress, *args, **kwargs)`` as runnable by ``start``."""
    func.__bgtask__ = True
    return func


# --- starting ---------------------------------------------------------------------------------

def start(name: str, func_path: str, *args: Any, owner: Any = None, **kwargs: Any) -> str:
    """Record a task and queue it for a worker when the current transaction commits; its id."""
    _resolve(func_path)  # a typo fails here, in the caller, not later in the worker
    try:
        json.dumps([args, kwargs])
    except (TypeError, ValueError) as exc:
        raise TypeError(f"background task arguments must be JSON values: {exc}") from None
    task = BackgroundTask.objects.create(name=name[:64], func_path=func_path, args=list(args), kwargs=kwargs,
                                         owner_id=str(owner) if owner is not None else "")
    transaction.on_commit(partial(_dispatch, str(task.pk)))
    log.info("background task %s (%s) queued", task.pk, name)
    return str(task.pk)


def _dispatch(task_id: str) -> None:
    try:
        celery_app.send_task(RUN_TASK, args=[task_id])
    except Exception as exc:  # noqa: BLE001 - a broker that refuses: the task fails visibly instead of hanging
        log.warning("could not queue background task %s: %s", task_id, exc)
        if _finish(task_id, BackgroundTaskStatus.FAILED, "Could not queue the task (no broker).",
                   from_status=BackgroundTaskStatus.PENDING):
            name = BackgroundTask.objects.filter(pk=task_id).values_list("name", flat=True).first()
            _observe_finished(name or "", BackgroundTaskStatus.FAILED)


def _resolve(func_path: str) -> Callable:
    module_name, _, attribute = func_path.rpartition(".")
    try:
        func = getattr(importlib.import_module(module_name), attribute, None) if module_name else None
    except ImportError:
        func = None
    if func is None or not getattr(func, "__bgtask__", False):
        raise ValueError(f"{func_path} is not a function marked @bgtasks.background")
    return func


# --- running (the worker) ---------------------------------------------------------------------

class Progress:
    """What a task function reports through (one UPDATE per call)."""

    def __init__(self, task_id: str):
        self.task_id = task_id

    def update(self, current: float, total: float | None = None, message: str | None = None) -> None:
        fields: dict[str, Any] = {"current_progress": float(current), "revision": F("revision") + 1,
                                  "updated_at": timezone.now()}
        if total is not None:
            fields["total_progress"] = float(total)
        if message is not None:
            fields["message"] = str(message)
        if not BackgroundTask.objects.filter(pk=self.task_id, status=BackgroundTaskStatus.RUNNING).update(**fields):
            raise Cancelled(self.task_id)


def run(task_id: str) -> str | None:
    """Run a queued task once (the worker's entry point); its final status, or None
    when it was not PENDING (already run, or cancelled before it started)."""
    now = timezone.now()
    claimed = BackgroundTask.objects.filter(pk=task_id, status=BackgroundTaskStatus.PENDING).update(
        status=BackgroundTaskStatus.RUNNING, started_at=now, updated_at=now, revision=F("revision") + 1)
    if not claimed:
        return None
    task = BackgroundTask.objects.get(pk=task_id)
    telemetry.observe_bgtask_started(task.name)
    problems: list[str] = []
    try:
        result = _resolve(task.func_path)(Progress(task_id), *task.args, **task.kwargs)
    except Cancelled:
        log.info("background task %s (%s) cancelled", task_id, task.name)
        return BackgroundTaskStatus.CANCELLED
    except errors.BackendAIError as exc:
        status, message = BackgroundTaskStatus.FAILED, str(exc.msg or exc.error_title)
    except TaskFailed as exc:
        status, message = BackgroundTaskStatus.FAILED, str(exc)
    except Exception:  # noqa: BLE001 - recorded as failed; the text stays in the log, not in the event
        log.exception("background task %s (%s) failed", task_id, task.name)
        status, message = BackgroundTaskStatus.FAILED, INTERNAL_ERROR
    else:
        status = BackgroundTaskStatus.DONE
        if isinstance(result, Outcome):
            message, problems = result.message, [str(e) for e in result.errors]
        else:
            message = "" if result is None else str(result)
    if _finish(task_id, status, message, from_status=BackgroundTaskStatus.RUNNING, problems=problems):
        _observe_finished(task.name, status, task.started_at, timezone.now())
    log.info("background task %s (%s) %s: %s", task_id, task.name, status, message)
    return status


def _finish(task_id: str, status: str, message: str, from_status: str, problems: list[str] | None = None) -> bool:
    now = timezone.now()
    return bool(BackgroundTask.objects.filter(pk=task_id, status=from_status).update(
        status=status, message=message, errors=problems or [], finished_at=now, updated_at=now,
        revision=F("revision") + 1))


def cancel(task_id: str) -> bool:
    """Cancel a task that has not finished; False when it already had."""
    row = BackgroundTask.objects.filter(pk=task_id).values_list("name", "started_at").first()
    now = timezone.now()
    cancelled = bool(BackgroundTask.objects.filter(pk=task_id).exclude(status__in=FINISHED).update(
        status=BackgroundTaskStatus.CANCELLED, message="Cancelled.", finished_at=now,
        revision=F("revision") + 1))
    if cancelled and row is not None:
        _observe_finished(row[0], BackgroundTaskStatus.CANCELLED, row[1], now)
    return cancelled


#: A RUNNING task that reported nothing for this long lost its worker (killed mid-task).
STALLED_AFTER = timedelta(minutes=30)
#: A PENDING task no worker claimed for this long lost its queue message (a broker restarted).
UNCLAIMED_AFTER = timedelta(minutes=10)
STALLED_MESSAGE = "The worker running the task stopped before it finished; start it again."
UNCLAIMED_MESSAGE = "No worker took the task in time; start it again."


def reconcile(now=None, *, stalled_after: timedelta = STALLED_AFTER, unclaimed_after: timedelta = UNCLAIMED_AFTER,
              keep_finished: timedelta = timedelta(days=7)) -> dict:
    """The reconciler of background tasks (beat, every minute): a RUNNING task silent for
    ``stalled_after`` and a PENDING one unclaimed for ``unclaimed_after`` end FAILED with a
    message saying so (their followers get ``bgtask_failed`` instead of waiting forever);
    finished tasks older than ``keep_finished`` are deleted.  Each is one guarded UPDATE, so
    a task that reports or finishes meanwhile is left alone."""
    now = now or timezone.now()
    stalled = _give_up(BackgroundTask.objects.filter(status=BackgroundTaskStatus.RUNNING,
                                                     updated_at__lt=now - stalled_after), STALLED_MESSAGE, now)
    unclaimed = _give_up(BackgroundTask.objects.filter(status=BackgroundTaskStatus.PENDING,
                                                       created_at__lt=now - unclaimed_after), UNCLAIMED_MESSAGE, now)
    if stalled or unclaimed:
        log.warning("background tasks: %d stalled and %d unclaimed ended as failed", stalled, unclaimed)
    purged = BackgroundTask.objects.filter(status__in=FINISHED, finished_at__lt=now - keep_finished).delete()[0]
    return {"stalled": stalled, "unclaimed": unclaimed, "purged": purged}


def _give_up(stuck, message: str, now) -> int:
    """End the tasks of ``stuck`` (a guarded query) as failed; how many it ended.  The tasks are
    read first for the metrics, then ended by one UPDATE that keeps the guard."""
    found = list(stuck.values_list("pk", "name", "started_at"))
    if not found:
        return 0
    ended = stuck.filter(pk__in=[pk for pk, _, _ in found]).update(
        status=BackgroundTaskStatus.FAILED, message=message, finished_at=now, updated_at=now,
        revision=F("revision") + 1)
    for _, name, started_at in found[:ended]:  # a task that ended meanwhile counted itself
        _observe_finished(name, BackgroundTaskStatus.FAILED, started_at, now)
    return ended


def ended_unsuccessfully(func_path: str) -> list[list]:
    """The ``args`` of the tasks of ``func_path`` that ended failed or cancelled (cancelled before
    a worker took them too, or given up by ``reconcile``): what their owners' reconcilers undo
    without waiting for their own timeouts."""
    return [list(args) for args in BackgroundTask.objects.filter(
        func_path=func_path, status__in=(BackgroundTaskStatus.FAILED, BackgroundTaskStatus.CANCELLED),
    ).values_list("args", flat=True)]


def purge_finished(older_than: timedelta = timedelta(days=7)) -> int:
    return BackgroundTask.objects.filter(status__in=FINISHED,
                                         finished_at__lt=timezone.now() - older_than).delete()[0]


# --- following --------------------------------------------------------------------------------

def followable(task_id: str | None, user) -> BackgroundTask:
    """The task ``user`` asks to follow: its starter's, or any for a superadmin."""
    if not task_id:
        raise errors.InvalidAPIParameters("task_id is required")
    try:
        key = uuid.UUID(str(task_id))
    except ValueError:
        raise errors.InvalidAPIParameters("task_id must be a UUID") from None
    task = BackgroundTask.objects.filter(pk=key).first()
    if task is None or not (getattr(user, "is_superadmin", False) or task.owner_id == str(user.pk)):
        raise errors.object_not_found("background task", f"No background task {key}")
    return task


@dataclass(frozen=True)
class State:
    task_id: str
    status: str
    revision: int
    current_progress: float
    total_progress: float
    message: str
    errors: list

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def stream_state(task_id: str) -> State | None:
    row = BackgroundTask.objects.filter(pk=task_id).values_list(
        "status", "revision", "current_progress", "total_progress", "message", "errors").first()
    return None if row is None else State(str(task_id), *row)


def _block(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n{RETRY}\n"


def updated_event(state: State) -> str:
    return _block("bgtask_updated", {"task_id": state.task_id, "message": state.message,
                                     "current_progress": state.current_progress,
                                     "total_progress": state.total_progress})


def final_event(state: State) -> str:
    data = {"task_id": state.task_id, "message": state.message}
    if state.errors:
        data["errors"] = list(state.errors)
    return _block(FINAL_EVENT[state.status], data)
