"""The embedded mode's Celery broker: kombu's SQLAlchemy transport on a SQLite
file under the data directory (``<DATA_DIR>/broker.sqlite3``).

Why not kombu's filesystem transport (what the embedded mode used before): a
producer creates the message file and then fills it, and a consumer listing
the folder can open it in between; the half-written JSON killed the worker.
Here a message is one row inserted in a transaction, and a consumer claims it
with one ``DELETE ... RETURNING`` in another, so a reader sees a message
whole or not at all, and a producer killed half-way leaves nothing behind
(SQLite rolls the transaction back).  docs/architecture.md ("Background work")
compares the alternatives.

What this module adds to kombu's transport, and why it is hand-written:

* SQLite for several processes.  Every connection runs in WAL mode with a busy
  timeout, and every transaction starts with ``BEGIN IMMEDIATE`` (SQLAlchemy's
  documented pysqlite recipe: the driver's own implicit transactions are turned
  off), so two writers wait for each other instead of failing when a read
  transaction upgrades to a write.  kombu's channel keeps an ORM session whose
  read transactions stay open between calls; with ``BEGIN IMMEDIATE`` that would
  hold the write lock, so the channel's queue operations are rewritten here as
  short SQLAlchemy Core transactions on kombu's own tables.
* A claimed row is deleted (kombu only hides it, so its table grows forever).
  Delivery stays at most once for a worker killed with a message in hand, as
  with every virtual kombu transport without a visibility timeout: the tasks
  are periodic passes and hints that the next pass repeats.
* A row whose payload cannot be decoded is logged (WARNING, with its id and the
  reason) and dropped; the consumer goes on with the next row.  In kombu the
  decoding error escapes ``drain_events`` and stops the worker.
* Engines are forgotten in a forked child (a SQLite connection must never cross
  a fork).

Nothing here imports Django: the transport is named by ``CELERY_BROKER_TRANSPORT``
(``backendai.broker:Transport``) with ``CELERY_BROKER_URL = sqlite:///<path>``.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime
from json import dumps, loads
from queue import Empty

from kombu.transport import sqlalchemy as kombu_sqla
from kombu.utils.encoding import bytes_to_str
from sqlalchemy import create_engine, delete, event, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

log = logging.getLogger(__name__)

#: seconds a statement waits for another process's write lock before failing
BUSY_TIMEOUT = 30
#: undecodable rows dropped in one ``_get`` call before it answers "empty" (and is polled again)
MAX_SKIPPED_PER_GET = 100
#: seconds between polls of an empty queue: a claim is one short statement, and a
#: hint to the scheduler should not wait a whole second in the queue
POLLING_INTERVAL = 0.1


class UndecodableMessage(ValueError):
    """A stored payload that is not a kombu message."""


def _sqlite_for_several_processes(engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # No implicit BEGIN from the driver: SQLAlchemy's "begin" event below emits ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT * 1000}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Channel(kombu_sqla.Channel):
    """kombu's SQLAlchemy channel with short Core transactions and a tolerant reader."""

    _engines: dict = {}  # this transport's own engine cache (kombu's is shared with its plain transport)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._queue_ids: dict[str, int] = {}

    # --- the engine ---------------------------------------------------------------------------

    def _engine_from_config(self):
        url = self.connection.client.hostname
        sqlite = make_url(url).get_backend_name() == "sqlite"
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT} if sqlite else {})
        if sqlite:
            _sqlite_for_several_processes(engine)
        return engine

    @property
    def engine(self):
        return self._open()[0]

    @property
    def _messages(self):
        return self.message_cls.__table__

    @property
    def _queues(self):
        return self.queue_cls.__table__

    # --- queue operations ---------------------------------------------------------------------

    def _queue_id(self, queue: str) -> int:
        cached = self._queue_ids.get(queue)
        if cached is not None:
            return cached
        queues = self._queues
        find = select(queues.c.id).where(queues.c.name == queue)
        try:
            with self.engine.begin() as conn:
                queue_id = conn.scalar(find)
                if queue_id is None:
                    queue_id = conn.execute(insert(queues).values(name=queue)).inserted_primary_key[0]
        except IntegrityError:
            # created by another process between our select and insert (not on SQLite, where
            # BEGIN IMMEDIATE serializes the two)
            with self.engine.begin() as conn:
                queue_id = conn.scalar(find)
        self._queue_ids[queue] = queue_id
        return queue_id

    def _new_queue(self, queue, **kwargs):
        self._queue_id(queue)

    def _put(self, queue, payload, **kwargs):
        queue_id = self._queue_id(queue)
        with self.engine.begin() as conn:
            conn.execute(insert(self._messages).values(
                queue_id=queue_id, payload=dumps(payload), visible=True, version=1, timestamp=datetime.now()))

    def _get(self, queue):
        queue_id = self._queue_id(queue)
        messages = self._messages
        oldest = (select(messages.c.id).where(messages.c.queue_id == queue_id)
                  .order_by(messages.c.id).limit(1).scalar_subquery())
        claim = delete(messages).where(messages.c.id == oldest).returning(messages.c.id, messages.c.payload)
        for _skipped in range(MAX_SKIPPED_PER_GET):
            with self.engine.begin() as conn:
                row = conn.execute(claim).first()
            if row is None:
                raise Empty()
            try:
                return self._decode(row.payload)
            except UndecodableMessage as exc:
                log.warning("broker: dropped message %s from queue %r: %s", row.id, queue, exc)
        raise Empty()

    def _decode(self, raw) -> dict:
        """The kombu message in a stored payload, or ``UndecodableMessage`` saying what is wrong."""
        try:
            payload = loads(bytes_to_str(raw))
        except (TypeError, ValueError) as exc:
            raise UndecodableMessage(f"not JSON ({_short(exc)})") from None
        if not isinstance(payload, dict):
            raise UndecodableMessage(f"a JSON {type(payload).__name__}, not an object")
        properties = payload.get("properties")
        if not isinstance(properties, dict) or "delivery_tag" not in properties:
            raise UndecodableMessage("no properties.delivery_tag")
        body = payload.get("body")
        if body:
            try:
                self.decode_body(body, properties.get("body_encoding"))
            except Exception as exc:  # noqa: BLE001 - any codec failure means the same: unusable
                raise UndecodableMessage(f"body does not decode ({_short(exc)})") from None
        return payload

    def _purge(self, queue):
        queue_id = self._queue_id(queue)
        with self.engine.begin() as conn:
            return conn.execute(delete(self._messages).where(self._messages.c.queue_id == queue_id)).rowcount

    def _size(self, queue):
        queue_id = self._queue_id(queue)
        with self.engine.begin() as conn:
            return conn.scalar(select(func.count()).select_from(self._messages)
                               .where(self._messages.c.queue_id == queue_id))


def _short(exc: Exception, limit: int = 120) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"


class Transport(kombu_sqla.Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL


def _forget_engines_after_fork() -> None:
    """A forked child opens its own SQLite connections (the parent's stay the parent's)."""
    for engine, _sessionmaker in list(Channel._engines.values()):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_engines_after_fork)
