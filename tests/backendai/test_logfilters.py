"""The console filter (``backendai.logfilters``) as ``settings.LOGGING`` and Celery install it:
periodic-task chatter becomes DEBUG, everything that matters stays."""
from __future__ import annotations

import io
import logging
import logging.config

import pytest
from celery.app.trace import LOG_FAILURE, LOG_RECEIVED, LOG_SUCCESS
from django.conf import settings

from backendai import logfilters


@pytest.fixture
def console():
    """A console handler built from settings.LOGGING's own filter definition, on a private logger tree."""
    stream = io.StringIO()
    spec = dict(settings.LOGGING["filters"]["periodic_chatter"])
    factory = spec.pop("()")
    assert factory == "backendai.logfilters.PeriodicChatter"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(logfilters.PeriodicChatter(**spec))
    roots = [logging.getLogger(name) for name in ("celery", "backendai.test")]
    saved = [(r, r.level, r.propagate) for r in roots]
    for root in roots:
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    yield stream
    for root, level, propagate in saved:
        root.removeHandler(handler)
        root.setLevel(level)
        root.propagate = propagate


def task_line(logger, fmt, name, **extra):
    context = {"name": name, "id": "0f0e", "runtime": 0.01, "return_value": None, "description": "raised",
               "exc": "boom", **extra}
    logger.info(fmt, context, extra={"data": context}) if fmt != LOG_FAILURE else logger.error(fmt, context)


def test_periodic_chatter_is_demoted_and_warnings_events_and_failures_stay(console):
    beat = logging.getLogger("celery.beat")
    strategy = logging.getLogger("celery.worker.strategy")
    trace = logging.getLogger("celery.app.trace")
    beat.info("Scheduler: Sending due task %s (%s)", "sessions.schedule_pending", "sessions.tasks.schedule_pending")
    task_line(strategy, LOG_RECEIVED, "sessions.tasks.schedule_pending")
    task_line(trace, LOG_SUCCESS, "agents.tasks.mark_lost_agents")
    # not periodic: a session to schedule, sent when it was created
    task_line(strategy, LOG_RECEIVED, "sessions.tasks.schedule")
    task_line(trace, LOG_FAILURE, "sessions.tasks.reconcile")
    beat.warning("beat: database unavailable; retrying in 2 s")
    logging.getLogger("backendai.test").info("agent node-1 is LOST")
    lines = console.getvalue().splitlines()
    assert lines == [
        "INFO celery.worker.strategy Task sessions.tasks.schedule[0f0e] received",
        "ERROR celery.app.trace Task sessions.tasks.reconcile[0f0e] raised: boom",
        "WARNING celery.beat beat: database unavailable; retrying in 2 s",
        "INFO backendai.test agent node-1 is LOST",
    ]


def test_demoted_lines_show_as_debug_when_the_log_level_is_debug(console):
    celery_logger = logging.getLogger("celery")
    celery_logger.setLevel(logging.DEBUG)
    logging.getLogger("celery.beat").info("Scheduler: Sending due task %s (%s)", "agents.mark_lost",
                                          "agents.tasks.mark_lost_agents")
    assert console.getvalue() == "DEBUG celery.beat Scheduler: Sending due task agents.mark_lost " \
                                 "(agents.tasks.mark_lost_agents)\n"


def test_every_periodic_task_of_the_schedule_is_known_to_the_filter():
    spec = settings.LOGGING["filters"]["periodic_chatter"]
    assert set(spec["periodic_tasks"]) == {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "console" in settings.LOGGING["handlers"] and \
        settings.LOGGING["handlers"]["console"]["filters"] == ["periodic_chatter"]


def test_celery_puts_the_filter_on_the_handlers_it_sets_up():
    from celery.signals import after_setup_logger

    import backendai.celery  # noqa: F401 - connects the signal

    logger = logging.Logger("celery-setup-test")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    for _ in range(2):  # idempotent
        after_setup_logger.send(sender=None, logger=logger, loglevel=logging.INFO, logfile=None, format="",
                                colorize=False)
    chatter = [f for f in handler.filters if isinstance(f, logfilters.PeriodicChatter)]
    assert len(chatter) == 1 and "sessions.tasks.schedule_pending" in chatter[0].periodic_tasks
