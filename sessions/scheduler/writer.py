"""Set-based write-back with guard predicates.

``write`` applies a batch of session and kernel changes in ONE statement on
PostgreSQL, whatever the batch size:

* the session rows are updated from the decided rows, expanded server-side
  from one JSON parameter with ``jsonb_to_recordset`` (the same as
  ``FROM unnest(%s::uuid[], ...)`` but far cheaper to bind: psycopg quotes
  arrays element by element in Python), each guarded by the status the
  decision was made on (``WHERE t.status = sd.expect``); the statement
  returns the ids it really changed;
* the kernel rows are updated only for sessions that came back (a data-modifying
  CTE joined with the first update's RETURNING), again guarded by their status.

So a session cancelled by its owner (or moved by an agent report) between the
snapshot and the write keeps what the other writer did, and none of its
kernels is touched.  Status history is appended with ``||``.

Agents' occupancy is ``sessions.occupancy`` (one statement, recomputed from
the live kernels).

SQLite (local runs only) gets a per-row fallback with the same guards.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from django.db import connection

from sessions.lifecycle import IllegalTransition, kernel_can_move, session_can_move, session_path
from sessions.models import Kernel, Session

_KEEP = object()


@dataclass
class SessionChange:
    """One session's set-based write.  Built only for a move the lifecycle allows
    (``IllegalTransition`` otherwise): from ``expect`` (also the write's guard)
    to ``status``, directly or through the progress states whose entries
    ``history`` carries; ``reschedule`` is the one backward move (to PENDING)."""

    id: object
    expect: str  # the status the decision was made on (guard)
    status: str
    status_info: str | None = None  # None: keep
    status_data: dict | None = None  # None: keep
    agent_ids: list | None = None  # None: keep
    occupying_slots: dict | None = None  # None: keep
    history: list = field(default_factory=list)  # entries to append
    terminated: bool = False  # set terminated_at (if not yet set)
    result: str | None = None
    reschedule: bool = False

    def __post_init__(self):
        if self.status == self.expect:
            return
        if self.reschedule:
            legal = session_can_move(self.expect, self.status, reschedule=True)
        else:
            legal = session_path(self.expect, self.status) is not None
        if not legal:
            raise IllegalTransition(f"session {self.id} cannot move from {self.expect} to {self.status}")


@dataclass
class KernelChange:
    """One kernel's set-based write, built only for a move the lifecycle allows
    (see ``SessionChange``)."""

    id: object
    session_id: object
    expect: str
    status: str
    status_info: str | None = None
    agent_id: object = _KEEP  # _KEEP, None (clear) or an id
    agent_addr: str | None = None  # with agent_id
    occupied_slots: dict | None = None
    history: list = field(default_factory=list)
    terminated: bool = False
    reschedule: bool = False

    def __post_init__(self):
        if self.status != self.expect and not kernel_can_move(self.expect, self.status, reschedule=self.reschedule):
            raise IllegalTransition(f"kernel {self.id} cannot move from {self.expect} to {self.status}")


@dataclass
class WriteResult:
    sessions: set  # ids of the sessions changed
    kernels: dict  # kernel id -> agent id (after the change) of the kernels changed


def _dumps(value) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def write(sessions: list[SessionChange], kernels: list[KernelChange], now) -> WriteResult:
    if not sessions:
        return WriteResult(set(), {})
    if connection.vendor == "postgresql":
        return _write_pg(sessions, kernels, now)
    return _write_fallback(sessions, kernels, now)


def _write_pg(sessions, kernels, now) -> WriteResult:
    """One statement.  The batch travels as two JSON documents expanded with
    ``jsonb_to_recordset`` (a single text parameter each: far cheaper to bind
    than a dozen arrays of tens of thousands of elements)."""
    st = connection.ops.quote_name(Session._meta.db_table)
    kt = connection.ops.quote_name(Kernel._meta.db_table)
    sql = f"""
WITH sd AS (
  SELECT * FROM jsonb_to_recordset(%s::jsonb)
    AS sd(id uuid, expect text, status text, info text, data jsonb, agent_ids jsonb, occupying jsonb, hist jsonb,
          term boolean, result text)
), s AS (
  UPDATE {st} AS t SET
    status = sd.status,
    status_info = COALESCE(sd.info, t.status_info),
    status_data = COALESCE(sd.data, t.status_data),
    agent_ids = COALESCE(sd.agent_ids, t.agent_ids),
    occupying_slots = COALESCE(sd.occupying, t.occupying_slots),
    status_changed = CASE WHEN sd.status <> t.status THEN %s ELSE t.status_changed END,
    status_history = CASE WHEN sd.hist IS NULL THEN t.status_history ELSE t.status_history || sd.hist END,
    terminated_at = CASE WHEN sd.term THEN COALESCE(t.terminated_at, %s) ELSE t.terminated_at END,
    result = COALESCE(sd.result, t.result)
  FROM sd
  WHERE t.id = sd.id AND t.status = sd.expect
  RETURNING t.id
), kd AS (
  SELECT * FROM jsonb_to_recordset(%s::jsonb)
    AS kd(id uuid, session_id uuid, expect text, status text, info text, set_agent boolean, agent_id text,
          agent_addr text, occupied jsonb, hist jsonb, term boolean)
), k AS (
  UPDATE {kt} AS t SET
    status = kd.status,
    status_info = COALESCE(kd.info, t.status_info),
    agent_id = CASE WHEN kd.set_agent THEN kd.agent_id ELSE t.agent_id END,
    agent_addr = CASE WHEN kd.set_agent THEN COALESCE(kd.agent_addr, '') ELSE t.agent_addr END,
    occupied_slots = COALESCE(kd.occupied, t.occupied_slots),
    status_changed = CASE WHEN kd.status <> t.status THEN %s ELSE t.status_changed END,
    status_history = CASE WHEN kd.hist IS NULL THEN t.status_history ELSE t.status_history || kd.hist END,
    terminated_at = CASE WHEN kd.term THEN COALESCE(t.terminated_at, %s) ELSE t.terminated_at END
  FROM kd JOIN s ON s.id = kd.session_id
  WHERE t.id = kd.id AND t.status = kd.expect
  RETURNING t.id, t.agent_id
)
SELECT 's', CAST(id AS text), NULL FROM s
UNION ALL
SELECT 'k', CAST(id AS text), agent_id FROM k
"""
    session_rows = [
        {"id": str(c.id), "expect": c.expect, "status": c.status, "info": c.status_info, "data": c.status_data,
         "agent_ids": c.agent_ids, "occupying": c.occupying_slots, "hist": c.history or None,
         "term": c.terminated, "result": c.result}
        for c in sessions
    ]
    kernel_rows = [
        {"id": str(c.id), "session_id": str(c.session_id), "expect": c.expect, "status": c.status,
         "info": c.status_info, "set_agent": c.agent_id is not _KEEP,
         "agent_id": None if c.agent_id is _KEEP or c.agent_id is None else str(c.agent_id),
         "agent_addr": c.agent_addr, "occupied": c.occupied_slots, "hist": c.history or None, "term": c.terminated}
        for c in kernels
    ]
    params = [_dumps(session_rows), now, now, _dumps(kernel_rows), now, now]
    changed_sessions, changed_kernels = set(), {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for kind, ident, agent_id in cursor.fetchall():
            if kind == "s":
                changed_sessions.add(uuid.UUID(ident))
            else:
                changed_kernels[uuid.UUID(ident)] = agent_id
    return WriteResult(changed_sessions, changed_kernels)


def _write_fallback(sessions, kernels, now) -> WriteResult:
    """Per-row writes for SQLite: same guards, same effect, not constant."""
    changed_sessions, changed_kernels = set(), {}
    rows = {sid: (status, history, terminated_at) for sid, status, history, terminated_at in
            Session.objects.filter(pk__in=[c.id for c in sessions]).values_list(
                "id", "status", "status_history", "terminated_at")}
    for c in sessions:
        current = rows.get(c.id)
        if current is None or current[0] != c.expect:
            continue
        fields = {"status": c.status, "status_history": [*(current[1] or []), *c.history]}
        if c.status != current[0]:
            fields["status_changed"] = now
        if c.status_info is not None:
            fields["status_info"] = c.status_info
        if c.status_data is not None:
            fields["status_data"] = c.status_data
        if c.agent_ids is not None:
            fields["agent_ids"] = c.agent_ids
        if c.occupying_slots is not None:
            fields["occupying_slots"] = c.occupying_slots
        if c.terminated and current[2] is None:
            fields["terminated_at"] = now
        if c.result is not None:
            fields["result"] = c.result
        if Session.objects.filter(pk=c.id, status=c.expect).update(**fields):
            changed_sessions.add(c.id)
    kernel_rows = {
        k: (status, history, terminated_at, agent_id)
        for k, status, history, terminated_at, agent_id in Kernel.objects.filter(
            pk__in=[c.id for c in kernels]).values_list("id", "status", "status_history", "terminated_at", "agent_id")
    }
    for c in kernels:
        row = kernel_rows.get(c.id)
        if c.session_id not in changed_sessions or row is None or row[0] != c.expect:
            continue
        fields = {"status": c.status, "status_history": [*(row[1] or []), *c.history]}
        if c.status != row[0]:
            fields["status_changed"] = now
        if c.status_info is not None:
            fields["status_info"] = c.status_info
        if c.agent_id is not _KEEP:
            fields["agent_id"] = c.agent_id
            fields["agent_addr"] = c.agent_addr or ""
        if c.occupied_slots is not None:
            fields["occupied_slots"] = c.occupied_slots
        if c.terminated and row[2] is None:
            fields["terminated_at"] = now
        if Kernel.objects.filter(pk=c.id, status=c.expect).update(**fields):
            changed_kernels[c.id] = fields["agent_id"] if c.agent_id is not _KEEP else row[3]
    return WriteResult(changed_sessions, changed_kernels)
