"""Beat's scheduler: django-celery-beat's database scheduler that outlives its database.

django-celery-beat reads the schedule from the database when beat starts and on
later ticks; a refused connection there escapes ``tick()`` and ends the beat
service, and while beat was embedded in a worker the worker kept running with
no beat at all (no scheduler pass, no reconciler, no LOST detection, and
nothing said so).  This subclass:

* retries the database with exponential backoff (``BACKOFF_START`` doubling up
  to ``BACKOFF_CAP`` seconds, forever, one WARNING per failure) when installing
  the schedule at start-up and on every tick, instead of dying;
* re-reads the whole schedule after a failure (django-celery-beat forgets a
  change it failed to load);
* records its last tick in the database (``backendai.health.record_heartbeat``,
  the ``Heartbeat`` row ``beat``) at most every ``heartbeat_every`` seconds, so
  ``/readyz``, ``manage.py healthcheck`` and the admin's cluster overview report
  a beat that stopped ticking, and the embedded supervisor restarts it.

Selected by ``CELERY_BEAT_SCHEDULER = "backendai.beat:ResilientDatabaseScheduler"``.
"""
from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, connections, transaction
from django_celery_beat.schedulers import DatabaseScheduler

from backendai import health

log = logging.getLogger(__name__)

DATABASE_ERRORS = (DatabaseError, InterfaceError)
BACKOFF_START = 0.5
BACKOFF_CAP = 10.0


class ResilientDatabaseScheduler(DatabaseScheduler):
    backoff_start = BACKOFF_START
    backoff_cap = BACKOFF_CAP

    def __init__(self, *args, **kwargs):
        self._failures = 0
        self._last_recorded: float | None = None
        # a third of the allowed age, and no more than the scheduler's 5 s loop
        self.heartbeat_every = min(5.0, settings.BEAT_MAX_AGE / 3)
        super().__init__(*args, **kwargs)

    # --- start-up ---------------------------------------------------------------------------------

    def setup_schedule(self):
        """Install the schedule from settings into the database, waiting for the database as long as it takes."""
        while True:
            try:
                self._initial_read, self._schedule = True, None
                super().setup_schedule()
            except DATABASE_ERRORS as exc:
                time.sleep(self._failed("installing the schedule", exc))
            else:
                self._recovered()
                return

    def update_from_dict(self, mapping):
        """django-celery-beat's, except that a database error propagates (to be retried) instead of
        dropping the entry with a logged traceback."""
        entries = {}
        for name, entry_fields in mapping.items():
            try:
                entry = self.Entry.from_entry(name, app=self.app, **entry_fields)
            except DATABASE_ERRORS:
                raise
            except Exception:  # noqa: BLE001 - a malformed entry: log it, install the others
                log.exception("beat: cannot install the schedule entry %r (%r)", name, entry_fields)
                continue
            if entry.model.enabled:
                entries[name] = entry
        self.schedule.update(entries)

    # --- every tick -------------------------------------------------------------------------------

    def tick(self, *args, **kwargs):
        try:
            interval = super().tick(*args, **kwargs)
            self._record_tick()
        except DATABASE_ERRORS as exc:
            # Read everything again once the database answers: the heap and a schedule that
            # may have failed half-way through loading.
            self._initial_read, self._heap = True, None
            return self._failed("a tick", exc)
        self._recovered()
        return interval

    def schedule_changed(self):
        """django-celery-beat's, except that a database error propagates to ``tick`` (retried with
        backoff) instead of a logged traceback on every tick and a change that is never loaded."""
        close_old_connections()
        try:
            transaction.commit()  # see the changes of other transactions (MySQL's REPEATABLE READ)
        except transaction.TransactionManagementError:
            pass
        last, self._last_timestamp = self._last_timestamp, self.Changes.last_change()
        return bool(self._last_timestamp and self._last_timestamp > (last or self._last_timestamp))

    def _record_tick(self) -> None:
        now = time.monotonic()
        if self._last_recorded is not None and now - self._last_recorded < self.heartbeat_every:
            return
        health.record_heartbeat(health.BEAT)
        self._last_recorded = now
        log.debug("beat: tick recorded")

    # --- failures ---------------------------------------------------------------------------------

    def _failed(self, what: str, exc: Exception) -> float:
        """Log the failure, drop the broken connections; the seconds to wait before the next try."""
        self._failures += 1
        delay = min(self.backoff_cap, self.backoff_start * 2 ** (self._failures - 1))
        log.warning("beat: database error during %s (failure %d in a row), retrying in %.1f s: %s",
                    what, self._failures, delay, " ".join(str(exc).split())[:300])
        try:
            connections.close_all()
        except Exception:  # noqa: BLE001 - a connection that cannot even close is gone anyway
            log.debug("beat: closing the broken database connections failed", exc_info=True)
        return delay

    def _recovered(self) -> None:
        if self._failures:
            log.info("beat: the database answers again after %d failure(s)", self._failures)
            self._failures = 0
