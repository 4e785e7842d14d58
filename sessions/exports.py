"""The sessions app's CSV reports (``backend.ai admin export sessions|audit-logs``).

Superadmins and domain admins only (others get 403); a superadmin sees every session,
a domain admin those of their own domain (``sessions.services.visible_sessions``).

**audit-logs** is the session status history we keep: we record no audit log of API
actions (who did what, with which request id), so the report's rows are the entries of
each session's ``status_history``, one row per status the session entered, with the
time it entered it.  ``entity_type`` is always ``session``, ``operation`` always
``status_change`` and ``status`` the status entered.  The client's filters on what we
do not record (``triggered_by``, ``acted_as``, ``request_id``) match no row.  The
entries are expanded by the database (``jsonb_array_elements`` on PostgreSQL,
``json_each`` on SQLite) so that the order (by time by default) and the filters apply
across all sessions while rows are still read through one cursor.
"""
from __future__ import annotations

import uuid

from django.db import connection
from django.db.models import F

from accounts.services.access import is_admin_like
from backendai.exports.registry import CHUNK_ROWS, Column, Report, empty, picked, queryset_rows
from backendai.exports.request import Choice, Nested, Range, Text, UUIDs
from sessions.models import SessionType
from sessions.services import visible_sessions

SESSIONS = Report(
    key="sessions",
    name="Sessions",
    description="Compute sessions: owner, image, status, resource group, occupied slots and lifetime.",
    columns=(
        Column("id", "ID", "The session's id.", "uuid"),
        Column("name", "Name", "The session's name.", "string"),
        Column("session_type", "Type", "interactive, batch, inference or system.", "string"),
        Column("domain_name", "Domain", "The owner's domain.", "string", "domain_id"),
        Column("project_name", "Project", "The project the session runs for.", "string", "project__name"),
        Column("user_email", "User Email", "The owner's e-mail address.", "string", "user__email"),
        Column("access_key", "Access Key", "The owner's keypair.", "string", "access_key_id"),
        Column("image", "Image", "The container image.", "string"),
        Column("status", "Status", "The session's status.", "string"),
        Column("status_info", "Status Info", "Why the status was last set.", "string"),
        Column("result", "Result", "UNDEFINED, SUCCESS or FAILURE.", "string"),
        Column("scaling_group_name", "Resource Group", "The resource group (scaling group) it runs in.", "string",
               "scaling_group_id"),
        Column("cluster_size", "Cluster Size", "The number of kernels.", "integer"),
        Column("occupying_slots", "Occupying Slots", "The resources it occupies (slot -> amount).", "json"),
        Column("created_at", "Created At", "When the session was created.", "datetime"),
        Column("terminated_at", "Terminated At", "When the session ended (empty while it lives).", "datetime"),
    ),
    filters={
        "name": Text("name"),
        "session_type": Choice("session_type", choices=tuple(SessionType.values), case="lower"),
        "domain_name": Text("domain__name"),  # a string lookup through the key (no join): not on domain_id
        "access_key": Text("access_key__access_key"),
        "user": Nested({"email": Text("user__email"), "username": Text("user__username")}),
        "status": Choice("status", case="upper"),  # a status of the real manager's that we lack matches nothing
        "scaling_group_name": Text("scaling_group__name"),
        "created_at": Range("created_at"),
        "terminated_at": Range("terminated_at"),
    },
    orders={"name": "name", "session_type": "session_type", "domain_name": "domain_id", "access_key": "access_key_id",
            "status": "status", "scaling_group_name": "scaling_group_id", "cluster_size": "cluster_size",
            "created_at": "created_at", "terminated_at": "terminated_at"},
    rows=lambda user, export: queryset_rows(visible_sessions(user), export),
    allowed=is_admin_like,
)


# --- audit-logs: the session status history -------------------------------------------------

ENTITY_TYPE = "session"
OPERATION = "status_change"
UNRECORDED = ("triggered_by", "acted_as", "request_id")


def _uuid_text(value) -> str:
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


# one expanded row: (session id, name, domain, access key, e-mail, ordinal, status, entered at)
_GETTERS = {
    "id": lambda r: f"{_uuid_text(r[0])}:{r[5]}",
    "entity_type": lambda r: ENTITY_TYPE,
    "entity_id": lambda r: _uuid_text(r[0]),
    "entity_name": lambda r: r[1],
    "operation": lambda r: OPERATION,
    "status": lambda r: r[6],
    "created_at": lambda r: r[7],
    "description": lambda r: f"Session {r[1]!r} entered {r[6]}",
    "domain_name": lambda r: r[2],
    "access_key": lambda r: r[3],
    "user_email": lambda r: r[4],
}


def _history_rows(user, export):
    conditions = export.conditions
    if any(name in conditions for name in UNRECORDED):
        return empty()
    for name, constant in (("entity_type", ENTITY_TYPE), ("operation", OPERATION)):
        if name in conditions and not conditions[name].matches(constant):
            return empty()
    sessions = visible_sessions(user).order_by()
    if "entity_id" in conditions:
        sessions = sessions.filter(conditions["entity_id"].q())
    base, params = sessions.values(
        x_id=F("id"), x_name=F("name"), x_domain=F("domain_id"), x_access_key=F("access_key_id"),
        x_email=F("user__email"), x_history=F("status_history"),
    ).query.sql_with_params()
    postgres = connection.vendor == "postgresql"
    if postgres:
        expanded = (
            "SELECT b.x_id, b.x_name, b.x_domain, b.x_access_key, b.x_email, e.ord, e.entry ->> 'status' AS status, "
            "(e.entry ->> 'timestamp')::timestamptz AS ts "
            f"FROM ({base}) AS b CROSS JOIN LATERAL jsonb_array_elements("
            "CASE jsonb_typeof(b.x_history) WHEN 'array' THEN b.x_history ELSE '[]'::jsonb END"
            ") WITH ORDINALITY AS e(entry, ord)")
        moment = "h.ts"
    else:
        expanded = (
            "SELECT b.x_id, b.x_name, b.x_domain, b.x_access_key, b.x_email, CAST(e.key AS INTEGER) + 1 AS ord, "
            "json_extract(e.value, '$.status') AS status, json_extract(e.value, '$.timestamp') AS ts "
            f"FROM ({base}) AS b, json_each(b.x_history) AS e")
        moment = "julianday(h.ts)"
    where, params = [], list(params)
    if "status" in conditions:
        values = conditions["status"].values
        where.append(f"h.status IN ({', '.join(['%s'] * len(values))})")
        params.extend(values)
    if "created_at" in conditions:
        for bound, operator in (("after", ">="), ("before", "<=")):
            value = getattr(conditions["created_at"], bound)
            if value is not None:
                where.append(f"{moment} {operator} " + ("%s" if postgres else "julianday(%s)"))
                params.append(value if postgres else value.isoformat())
    columns = {"entity_id": "h.x_id", "status": "h.status", "created_at": moment}
    ordering = [f"{columns[key]} {'DESC' if descending else 'ASC'}" for key, descending in export.order
                if key in columns]  # entity_type, operation and triggered_by are the same on every row
    sql = (f"SELECT * FROM ({expanded}) AS h" + (f" WHERE {' AND '.join(where)}" if where else "")
           + f" ORDER BY {', '.join([*ordering, moment, 'h.x_id', 'h.ord'])}")
    return picked(_GETTERS, export, _fetch(sql, params))


def _fetch(sql: str, params: list):
    """The rows of ``sql`` through a server-side cursor where there is one (PostgreSQL,
    unless disabled for pgbouncer), ``CHUNK_ROWS`` at a time."""
    server_side = connection.vendor == "postgresql" and not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    with (connection.chunked_cursor() if server_side else connection.cursor()) as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(CHUNK_ROWS):
            yield from rows


AUDIT_LOGS = Report(
    key="audit-logs",
    name="Audit Logs (session status history)",
    description=("The session status history: one row per status a session entered, with when. No audit log of "
                 "API actions is kept, so who triggered a change and its request id are not recorded."),
    columns=(
        Column("id", "ID", "<session id>:<position in its history, from 1>.", "string"),
        Column("entity_type", "Entity Type", "Always session.", "string"),
        Column("entity_id", "Entity ID", "The session's id.", "uuid"),
        Column("entity_name", "Entity Name", "The session's name.", "string"),
        Column("operation", "Operation", "Always status_change.", "string"),
        Column("status", "Status", "The status the session entered.", "string"),
        Column("created_at", "Created At", "When it entered that status.", "datetime"),
        Column("description", "Description", "The change in words.", "string"),
        Column("domain_name", "Domain", "The session owner's domain.", "string"),
        Column("access_key", "Access Key", "The session owner's keypair.", "string"),
        Column("user_email", "User Email", "The session owner's e-mail address.", "string"),
    ),
    filters={
        "entity_type": Text(), "entity_id": Text("id", is_uuid=True), "operation": Text(), "status": Choice(case="upper"),
        "triggered_by": Text(), "acted_as": UUIDs(), "request_id": Text(), "created_at": Range(),
    },
    orders={"entity_type": "entity_type", "entity_id": "entity_id", "operation": "operation", "status": "status",
            "created_at": "created_at", "triggered_by": "triggered_by"},
    rows=_history_rows,
    allowed=is_admin_like,
)

REPORTS = (SESSIONS, AUDIT_LOGS)
