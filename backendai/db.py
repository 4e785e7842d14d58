"""Database connections held by a thread for as short a time as possible.

Under ASGI every synchronous request runs in a worker thread and, with a pool
configured (``DB_POOL_MAX_SIZE``), borrows a connection from its process's pool
on first use.  Django returns it at the end of the request.  Code that waits
for a long time in the middle of a request (the agent sync's long poll, a
streamed download) must give its connection back first, or a few such waits
exhaust the pool for everyone else.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from django.db import connections


def release_connections() -> int:
    """Give this thread's idle database connections back (to the pool, or close them).

    A connection inside an ``atomic`` block is kept: closing it would break the
    transaction.  Returns how many were released.  The next query opens or
    borrows a connection again, transparently."""
    released = 0
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        conn.close()
        released += 1
    return released


@contextmanager
def released():
    """Run a wait with no database connection held by this thread."""
    release_connections()
    yield


# --- connection pools across fork() ------------------------------------------------------------
#: pools inherited from a parent process: kept referenced so that nothing in the child closes them
_inherited_pools: list = []


def forget_inherited_pools() -> int:
    """In a freshly forked child (Celery's prefork pool, an embedded beat): drop the parent's
    PostgreSQL connection pools without closing them, so the child opens pools of its own.

    A pool does not survive fork(): its worker threads stay behind in the parent and its idle
    connections share their sockets with the parent's, so a child that borrowed one would talk over
    the parent's session, and one that closed it would end the parent's session.  psycopg never
    finishes a connection it did not open in this process when it is garbage-collected, but an
    explicit close does; hence the references kept in ``_inherited_pools``.  Returns how many
    pools were dropped."""
    try:
        from django.db.backends.postgresql.base import DatabaseWrapper
    except Exception:  # no psycopg installed (SQLite only)
        return 0
    pools = DatabaseWrapper._connection_pools
    dropped = len(pools)
    if dropped:
        _inherited_pools.extend(pools.values())
        pools.clear()
    return dropped


os.register_at_fork(after_in_child=forget_inherited_pools)
