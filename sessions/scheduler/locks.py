"""One pass per scaling group at a time.

PostgreSQL: ``pg_try_advisory_xact_lock(key)`` inside the pass's transaction
(released at commit or rollback); a second pass for the same group gets
``False`` at once and skips.  Other databases (SQLite for local runs): a
process-level lock per group, taken without waiting; SQLite itself serialises
writers between processes, and the guard predicates keep the writes honest.
"""
from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager

from django.db import connection

_process_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def lock_key(namespace: str, name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_*`` from a namespace and a name."""
    digest = hashlib.sha256(f"backendai:{namespace}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def process_lock(namespace: str, name: str):
    """Yields whether this process got the lock (never waits)."""
    if connection.vendor == "postgresql":
        yield True
        return
    with _guard:
        lock = _process_locks.setdefault(f"{namespace}:{name}", threading.Lock())
    acquired = lock.acquire(blocking=False)
    try:
        yield acquired
    finally:
        if acquired:
            lock.release()


def try_xact_lock(namespace: str, name: str) -> bool:
    """Take the transaction-scoped advisory lock on PostgreSQL (True elsewhere)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_key(namespace, name)])
        return bool(cursor.fetchone()[0])
