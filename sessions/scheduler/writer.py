"""Set-based write-back with guard predicates.

``write`` applies a batch of session and kernel changes in FOUR statements on
PostgreSQL, whatever the batch size:

* ``CREATE TEMPORARY TABLE IF NOT EXISTS ... ON COMMIT DROP`` (the batch table
  lives only as long as the caller's transaction);
* one ``COPY ... FROM STDIN`` of every decided row into it (text format, built
  in one buffer: no per-row parameter binding), then ``ANALYZE`` of it (a
  temporary table has no statistics: the planner would take it for one row
  and nest loops over it);
* one ``UPDATE ... FROM`` the batch table: the session rows, each guarded by the
  status the decision was made on (``WHERE t.status = sd.expect``), and, in a
  data-modifying CTE joined with the first update's RETURNING, the kernel rows
  only of sessions that came back, again guarded by their status.  The
  statement returns only the exceptions (rows whose guard failed, and the agent
  of kernels whose agent was kept); everything else is known from what was sent.

So a session cancelled by its owner (or moved by an agent report) between the
snapshot and the write keeps what the other writer did, and none of its
kernels is touched.  Status history is appended with ``||``.

Agents' occupancy is ``sessions.occupancy`` (one statement, recomputed from
the live kernels).

SQLite (local runs only) gets a per-row fallback with the same guards.
"""
from __future__ import annotations

import functools
import itertools
import json
import uuid
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.backends.utils import CursorDebugWrapper

from sessions.lifecycle import IllegalTransition, kernel_can_move, session_can_move, session_path
from sessions.models import Kernel, Session

_KEEP = object()


@functools.lru_cache(maxsize=256)
def _session_move_legal(expect: str, status: str, reschedule: bool) -> bool:
    if reschedule:
        return session_can_move(expect, status, reschedule=True)
    return session_path(expect, status) is not None


@functools.lru_cache(maxsize=256)
def _kernel_move_legal(expect: str, status: str, reschedule: bool) -> bool:
    return kernel_can_move(expect, status, reschedule=reschedule)


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
        if not _session_move_legal(self.expect, self.status, self.reschedule):
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
        if self.status != self.expect and not _kernel_move_legal(self.expect, self.status, self.reschedule):
            raise IllegalTransition(f"kernel {self.id} cannot move from {self.expect} to {self.status}")


@dataclass
class WriteResult:
    sessions: set  # ids of the sessions changed
    kernels: dict  # kernel id -> agent id (after the change) of the kernels changed


def write(sessions: list[SessionChange], kernels: list[KernelChange], now) -> WriteResult:
    if not sessions:
        return WriteResult(set(), {})
    if connection.vendor == "postgresql":
        return _write_pg(sessions, kernels, now)
    return _write_fallback(sessions, kernels, now)


_BATCH_TABLE = "bai_scheduler_batch"
_BATCH_COLUMNS = ("batch", "kind", "id", "session_id", "expect", "status", "info", "data", "agent_ids", "occupying",
                  "hist", "term", "result", "set_agent", "agent_id", "agent_addr", "occupied")
_batches = itertools.count(1)


def _copy_text(value) -> str:
    """One field of PostgreSQL's text COPY format."""
    if value is None:
        return "\\N"
    text = value if isinstance(value, str) else str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


_encode = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per row


def _copy_json(value) -> str:
    if value is None:
        return "\\N"
    text = _encode(value)
    # the encoder escapes every control character, so only backslashes need doubling
    return text.replace("\\", "\\\\") if "\\" in text else text


def _copy_rows(batch: int, sessions, kernels) -> bytes:
    """The decided rows in COPY text format (one temporary table holds both kinds: ``s`` and ``k``)."""
    t = _copy_text
    b = str(batch)
    memo: dict = {}

    def js(value):
        # slot maps and history entries are mostly shared objects (the snapshot decodes each distinct
        # slot map once, the dispatcher builds one history entry per status): encode each once
        if value is None:
            return "\\N"
        single = isinstance(value, list) and len(value) == 1
        ref = value[0] if single else value  # kept in the memo, so its id is not reused meanwhile
        key = (single, id(ref))
        hit = memo.get(key)
        if hit is None or hit[0] is not ref:
            hit = memo[key] = (ref, _copy_json(value))
        return hit[1]

    lines = []
    for c in sessions:
        lines.append("\t".join((
            b, "s", str(c.id), "\\N", t(c.expect), t(c.status), t(c.status_info), _copy_json(c.status_data),
            js(c.agent_ids), js(c.occupying_slots), js(c.history or None), "t" if c.terminated else "f",
            t(c.result), "f", "\\N", "\\N", "\\N")))
    for c in kernels:
        set_agent = c.agent_id is not _KEEP
        lines.append("\t".join((
            b, "k", str(c.id), str(c.session_id), t(c.expect), t(c.status), t(c.status_info), "\\N", "\\N", "\\N",
            js(c.history or None), "t" if c.terminated else "f", "\\N", "t" if set_agent else "f",
            t(c.agent_id) if set_agent else "\\N", t(c.agent_addr), js(c.occupied_slots))))
    lines.append("")
    return "\n".join(lines).encode()


def _copy(cursor, sql: str, data: bytes) -> None:
    """``COPY ... FROM STDIN`` through Django's cursor wrappers, so the statement is
    counted like any other (``execute_wrapper`` hooks, ``CaptureQueriesContext``)."""
    def executor(sql_, params, many, context):
        with cursor.cursor.copy(sql_) as copy:
            copy.write(data)

    if isinstance(cursor, CursorDebugWrapper):
        with cursor.debug_sql(sql):
            cursor._execute_with_wrappers(sql, None, False, executor)  # noqa: SLF001
    else:
        cursor._execute_with_wrappers(sql, None, False, executor)  # noqa: SLF001


def _write_pg(sessions, kernels, now) -> WriteResult:
    """Four statements whatever the batch size: create the transaction's temporary
    table (if this transaction has not yet), COPY the decided rows into it, ANALYZE
    it (so the planner hashes the joins instead of nesting loops), and one guarded
    ``UPDATE ... FROM`` of the sessions whose data-modifying CTE updates the
    kernels of the sessions that came back.  The statement returns only the
    exceptions (rows whose guard failed, kernels whose agent was kept): the rest is
    known from what was sent."""
    st = connection.ops.quote_name(Session._meta.db_table)
    kt = connection.ops.quote_name(Kernel._meta.db_table)
    tmp = _BATCH_TABLE
    batch = next(_batches)
    create = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {tmp} (batch integer, kind char(1), id uuid, session_id uuid, "
              "expect text, status text, info text, data jsonb, agent_ids jsonb, occupying jsonb, hist jsonb, "
              "term boolean, result text, set_agent boolean, agent_id text, agent_addr text, occupied jsonb) "
              "ON COMMIT DROP")
    copy_sql = f"COPY {tmp} ({', '.join(_BATCH_COLUMNS)}) FROM STDIN"
    update = f"""
WITH s AS (
  UPDATE {st} AS t SET
    status = sd.status,
    status_info = COALESCE(sd.info, t.status_info),
    status_data = COALESCE(sd.data, t.status_data),
    agent_ids = COALESCE(sd.agent_ids, t.agent_ids),
    occupying_slots = COALESCE(sd.occupying, t.occupying_slots),
    status_changed = CASE WHEN sd.status <> t.status THEN %(now)s ELSE t.status_changed END,
    status_history = CASE WHEN sd.hist IS NULL THEN t.status_history ELSE t.status_history || sd.hist END,
    terminated_at = CASE WHEN sd.term THEN COALESCE(t.terminated_at, %(now)s) ELSE t.terminated_at END,
    result = COALESCE(sd.result, t.result)
  FROM {tmp} AS sd
  WHERE sd.batch = %(batch)s AND sd.kind = 's' AND t.id = sd.id AND t.status = sd.expect
  RETURNING t.id
), k AS (
  UPDATE {kt} AS t SET
    status = kd.status,
    status_info = COALESCE(kd.info, t.status_info),
    agent_id = CASE WHEN kd.set_agent THEN kd.agent_id ELSE t.agent_id END,
    agent_addr = CASE WHEN kd.set_agent THEN COALESCE(kd.agent_addr, '') ELSE t.agent_addr END,
    occupied_slots = COALESCE(kd.occupied, t.occupied_slots),
    status_changed = CASE WHEN kd.status <> t.status THEN %(now)s ELSE t.status_changed END,
    status_history = CASE WHEN kd.hist IS NULL THEN t.status_history ELSE t.status_history || kd.hist END,
    terminated_at = CASE WHEN kd.term THEN COALESCE(t.terminated_at, %(now)s) ELSE t.terminated_at END
  FROM {tmp} AS kd JOIN s ON s.id = kd.session_id
  WHERE kd.batch = %(batch)s AND kd.kind = 'k' AND t.id = kd.id AND t.status = kd.expect
  RETURNING t.id, t.agent_id, kd.set_agent
)
SELECT 'k', CAST(id AS text), agent_id FROM k WHERE NOT set_agent
UNION ALL
SELECT 'x', CAST(d.id AS text), NULL FROM {tmp} d
  WHERE d.batch = %(batch)s AND d.kind = 's' AND NOT EXISTS (SELECT 1 FROM s WHERE s.id = d.id)
UNION ALL
SELECT 'y', CAST(d.id AS text), NULL FROM {tmp} d
  WHERE d.batch = %(batch)s AND d.kind = 'k' AND NOT EXISTS (SELECT 1 FROM k WHERE k.id = d.id)
"""
    kept_agents, lost_sessions, lost_kernels = {}, set(), set()
    # ON COMMIT DROP needs a transaction; inside the pass's own this adds no savepoint
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(create)
        _copy(cursor, copy_sql, _copy_rows(batch, sessions, kernels))
        # without statistics the planner takes the batch for one row and joins it, and the
        # sessions that came back, in nested loops: quadratic in the batch size
        cursor.execute(f"ANALYZE {tmp} (batch, kind, id, session_id)")
        cursor.execute(update, {"now": now, "batch": batch})
        for kind, ident, agent_id in cursor.fetchall():
            if kind == "k":
                kept_agents[ident] = agent_id
            elif kind == "x":
                lost_sessions.add(ident)
            else:
                lost_kernels.add(ident)
    changed_sessions = {_as_uuid(c.id) for c in sessions if not lost_sessions or str(c.id) not in lost_sessions}
    changed_kernels = {}
    for c in kernels:
        key = str(c.id)
        if key in lost_kernels:
            continue
        if c.agent_id is _KEEP:
            agent = kept_agents.get(key)
        else:
            agent = None if c.agent_id is None else str(c.agent_id)
        changed_kernels[_as_uuid(c.id)] = agent
    return WriteResult(changed_sessions, changed_kernels)


def _as_uuid(value):
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


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
