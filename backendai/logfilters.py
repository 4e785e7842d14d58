"""Logging filters for a console that shows what matters (no Django here).

Beat sends its periodic tasks every few seconds and the worker logs each one
received and succeeded, at INFO: the embedded stack's console printed a line
every two seconds and buried state changes, warnings and errors.
:class:`PeriodicChatter` demotes exactly those lines to DEBUG:

* beat's ``Scheduler: Sending due task ...`` (``celery.beat``);
* the worker's ``Task <name>[<id>] received`` (``celery.worker.strategy``) and
  ``Task <name>[<id>] succeeded in ...`` (``celery.app.trace``), for the
  periodic tasks named in ``periodic_tasks`` only: a task sent for an event (a
  session to schedule) still shows, and so does every failure or retry.

A demoted record is shown only where its logger is enabled for DEBUG (e.g.
``LOG_LEVEL=DEBUG``).  The filter sits on handlers: ``settings.LOGGING``'s console
handler, and Celery's handlers through :func:`install` (``backendai/celery.py``).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["PeriodicChatter", "install"]

BEAT_LOGGER = "celery.beat"
BEAT_SENDING = "Scheduler: Sending due task"
TASK_LOGGERS = {"celery.worker.strategy": " received", "celery.app.trace": " succeeded in "}


class PeriodicChatter(logging.Filter):
    def __init__(self, periodic_tasks: Iterable[str] = ()):
        super().__init__()
        self.periodic_tasks = frozenset(periodic_tasks)

    def is_chatter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return False
        message = record.msg if isinstance(record.msg, str) else ""
        if record.name == BEAT_LOGGER:
            return message.startswith(BEAT_SENDING)
        marker = TASK_LOGGERS.get(record.name)
        if marker is None or marker not in message:
            return False
        args = record.args
        name = args.get("name") if isinstance(args, dict) else None
        return name in self.periodic_tasks

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.is_chatter(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def install(logger: logging.Logger, periodic_tasks: Iterable[str]) -> None:
    """Put a :class:`PeriodicChatter` on each of ``logger``'s handlers that has none yet."""
    tasks = list(periodic_tasks)
    for handler in logger.handlers:
        if not any(isinstance(existing, PeriodicChatter) for existing in handler.filters):
            handler.addFilter(PeriodicChatter(tasks))
