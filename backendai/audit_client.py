"""The audit log (``backendai.models.AuditEntry``) in the shapes of the 26.09 client: the
``audit-logs`` CSV report (``backend.ai admin export audit-logs``, ``POST
/export/audit-logs/csv``) and the v2 search (``backend.ai v2 audit-log search``, ``POST
/v2/audit-logs/search`` with an ``AdminSearchAuditLogsInput``, answered with a
``SearchAuditLogsPayload``).

Both read ``backendai.auditlog.visible_entries``: superadmins every entry, a domain admin
the entries whose actor or target belongs to their domain, anyone else 403
``insufficient-privilege``.  Our columns under the client's names:

* ``entity_type``: ``entity`` (``session``, ``vfolder``, ``user``, ``request``...);
  ``operation``: the action without its entity (``create`` of ``session.create``);
  ``entity_id``: ``target`` (the object's name and id, ``name (id)``, or the name asked for);
* ``status``: ``outcome`` as the client's ``AuditLogStatus``: ``success`` -> ``success``,
  ``refused`` -> ``denied``, ``failed`` -> ``error``.  A filter on ``error`` or ``denied``
  (or our own ``failed`` / ``refused``; ``failure`` is ``error``) picks those outcomes;
  ``unknown`` and ``running`` match nothing (an entry is written when the action ended);
* ``triggered_by``: ``actor_id`` (the acting user's UUID; empty for ``system``, agents and
  proxy workers: ``actor`` names them); ``acted_as``: the same user (we have no
  impersonation); ``request_id``, ``created_at``; ``client_ip``: ``remote_addr``;
* the v2 node's ``id``, ``field_id`` and ``action_id`` (one entry per action): the entry's
  number as a UUID's 128-bit integer (entry 42 is ``00000000-0000-0000-0000-00000000002a``);
  ``duration`` is null (not recorded); ``description`` says who did what to which target,
  the outcome with its detail, and the way in.

The search's filter is the client's ``AuditLogFilter`` (``StringFilter`` on entity_type,
entity_id, operation and triggered_by, the status filter, a ``UUIDFilter`` on acted_as, a
``DateTimeFilter`` on created_at with exclusive ``before``/``after``, and nested ``AND`` /
``OR`` / ``NOT`` lists); several operations of one filter AND together.  ``order`` by
created_at, entity_type, operation or status (default: newest first); ``limit`` (default
50, at most 1000) and ``offset``; the cursor arguments (``first``/``after``/``last``/
``before``) are refused.  Anything malformed is a 400 ``invalid-api-params`` before any
query runs.  The CSV report streams through one cursor (``backendai.exports``).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Case, CharField, Q, Value, When
from django.db.models.functions import Length, Substr

from backendai import auditlog
from backendai.api import errors
from backendai.exports.registry import CHUNK_ROWS, Column, Report, queryset_rows
from backendai.exports.request import Choice, ChoiceCondition, Range, Text, UUIDs, _moment, _object

#: our outcome -> the client's AuditLogStatus
STATUS_OF = {"success": "success", "refused": "denied", "failed": "error"}
#: a status the client may ask for -> our outcomes
OUTCOMES_OF = {"success": ("success",), "denied": ("refused",), "error": ("failed",), "failure": ("failed",),
               "refused": ("refused",), "failed": ("failed",), "unknown": (), "running": ()}
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000
MAX_DEPTH = 4  # nested AND/OR/NOT levels
MAX_NODES = 64  # filter objects in one body


def readable(user) -> bool:
    """Who may read the log at all (the rule of ``auditlog.visible_entries``)."""
    return bool(getattr(user, "is_superadmin", False) or getattr(user, "is_domain_admin", False))


def entries(user):
    """What ``user`` may read, with the client's computed columns (``x_operation``, ``x_status``)."""
    return auditlog.visible_entries(user).annotate(
        x_operation=Substr("action", Length("entity") + 2),
        x_status=Case(*[When(outcome=ours, then=Value(theirs)) for ours, theirs in STATUS_OF.items()],
                      default=Value("unknown"), output_field=CharField()),
    )


def entry_uuid(pk: int) -> uuid.UUID:
    return uuid.UUID(int=int(pk))


def _user_uuid(text: str):
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        return None


def describe(actor, action, target, outcome, detail, via) -> str:
    text = f"{actor or 'system'} {action}" + (f" {target}" if target else "") + f": {outcome}"
    return text + (f" ({detail})" if detail else "") + (f" via {via}" if via else "")


# --- the CSV report -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Status(Choice):
    """The client's status list, read as our outcomes."""

    def parse(self, label: str, raw) -> ChoiceCondition:
        asked = super().parse(label, raw).values
        return ChoiceCondition("outcome", tuple(dict.fromkeys(o for value in asked for o in OUTCOMES_OF[value])))


def _rows(user, export):
    """The report's rows: its columns read in one query, the description composed in Python."""
    wanted = [column.key for column in export.columns]
    if "description" not in wanted:
        return queryset_rows(entries(user), export)
    paths = ["actor", "action", "target", "outcome", "detail", "via"]
    ordering = [("-" if descending else "") + export.report.orders[key] for key, descending in export.order]
    rows = (entries(user).filter(export.q()).order_by(*ordering, export.report.tiebreak)
            .values_list(*[column.path for column in export.columns if column.key != "description"], *paths)
            .iterator(chunk_size=CHUNK_ROWS))
    position = wanted.index("description")

    def composed():
        try:
            for row in rows:
                values = list(row[:len(wanted) - 1])
                values.insert(position, describe(*row[len(wanted) - 1:]))
                yield tuple(values)
        finally:
            rows.close()

    return composed()


AUDIT_LOGS = Report(
    key="audit-logs",
    name="Audit Logs",
    description=("Who did what to which object, from where, and how it ended: one row per state-changing action "
                 "(API, GraphQL, web UI, admin, daemons), refused and failed ones included."),
    columns=(
        Column("id", "ID", "The entry's number.", "integer", "pk"),
        Column("entity_type", "Entity Type", "What kind of object: session, vfolder, user, keypair, request...",
               "string", "entity"),
        Column("entity_id", "Entity ID", "The object: its name and id, or the name the caller asked for.", "string",
               "target"),
        Column("operation", "Operation", "What was done to it: create, destroy, update, login...", "string",
               "x_operation"),
        Column("status", "Status", "success, denied (refused: a 4xx) or error (failed).", "string", "x_status"),
        Column("triggered_by", "Triggered By", "The acting user's id (empty for the system, agents and workers).",
               "string", "actor_id"),
        Column("acted_as", "Acted As", "The user the action ran as (the same user: there is no impersonation).",
               "string", "actor_id"),
        Column("request_id", "Request ID", "The request's X-Request-ID.", "string"),
        Column("created_at", "Created At", "When the action ended.", "datetime"),
        Column("description", "Description", "The entry in words.", "string"),
        Column("actor", "Actor", "The actor: e-mail, access key, agent:<id>, proxy-worker:<name> or system.",
               "string"),
        Column("actor_domain", "Actor Domain", "The actor's domain.", "string"),
        Column("access_key", "Access Key", "The keypair the request was signed with.", "string"),
        Column("action", "Action", "entity.operation, e.g. session.create.", "string"),
        Column("target_domain", "Target Domain", "The object's domain, when it has one.", "string"),
        Column("via", "Via", "api, graphql, webui, admin, daemon, task or cli.", "string"),
        Column("detail", "Detail", "The problem or error when not a success.", "string"),
        Column("client_ip", "Client IP", "The client's address.", "string", "remote_addr"),
        Column("user_agent", "User Agent", "The client's User-Agent.", "string"),
    ),
    filters={
        "entity_type": Text("entity"), "entity_id": Text("target"), "operation": Text("x_operation"),
        "status": Status(choices=tuple(OUTCOMES_OF), case="lower"), "triggered_by": Text("actor_id"),
        "acted_as": UUIDs("actor_id"), "request_id": Text("request_id"), "created_at": Range("created_at"),
    },
    orders={"entity_type": "entity", "entity_id": "target", "operation": "x_operation", "status": "x_status",
            "created_at": "created_at", "triggered_by": "actor_id"},
    rows=_rows,
    allowed=readable,
)

REPORTS = (AUDIT_LOGS,)


# --- the v2 search --------------------------------------------------------------------------------

_FILTER_KEYS = ("entity_type", "entity_id", "operation", "status", "triggered_by", "acted_as", "created_at",
                "AND", "OR", "NOT")
_TEXTS = {"entity_type": Text("entity"), "entity_id": Text("target"), "operation": Text("x_operation"),
          "triggered_by": Text("actor_id")}
_BODY_KEYS = ("filter", "order", "first", "after", "last", "before", "limit", "offset")
_ORDERS = {"created_at": "created_at", "entity_type": "entity", "operation": "x_operation", "status": "x_status"}


def _status_value(label: str, value) -> tuple[str, ...]:
    if not isinstance(value, str) or value.lower() not in OUTCOMES_OF:
        raise errors.InvalidAPIParameters(f"{label}: one of success, error, unknown, running, denied")
    return OUTCOMES_OF[value.lower()]


def _status_q(label: str, raw) -> Q:
    raw = _object(label, raw, ("equals", "in", "in_", "not_equals", "not_in"))
    query = Q()
    for key, value in raw.items():
        if value is None:
            continue
        if key in ("in", "in_", "not_in"):
            if not isinstance(value, list) or len(value) > 10:
                raise errors.InvalidAPIParameters(f"{label}.{key}: a list of at most 10 statuses")
            outcomes = [o for i, v in enumerate(value) for o in _status_value(f"{label}.{key}[{i}]", v)]
        else:
            outcomes = list(_status_value(f"{label}.{key}", value))
        matched = Q(outcome__in=outcomes)
        query &= ~matched if key.startswith("not") else matched
    return query


def _time_q(label: str, raw) -> Q:
    raw = _object(label, raw, ("before", "after", "equals", "not_equals"))
    query = Q()
    for key, lookup in (("before", "lt"), ("after", "gt"), ("equals", "exact"), ("not_equals", "exact")):
        if raw.get(key) is not None:
            matched = Q(**{f"created_at__{lookup}": _moment(f"{label}.{key}", raw[key])})
            query &= ~matched if key == "not_equals" else matched
    return query


def _filter_q(raw, label: str, depth: int, budget: list) -> Q:
    budget[0] -= 1
    if budget[0] < 0:
        raise errors.InvalidAPIParameters(f"filter: more than {MAX_NODES} filter objects")
    if depth > MAX_DEPTH:
        raise errors.InvalidAPIParameters(f"{label}: AND/OR/NOT nested more than {MAX_DEPTH} deep")
    raw = _object(label, raw, _FILTER_KEYS)
    query = Q()
    for key, value in raw.items():
        if value is None:
            continue
        where = f"{label}.{key}"
        if key in _TEXTS:
            query &= _TEXTS[key].parse(where, value).q()
        elif key == "status":
            query &= _status_q(where, value)
        elif key == "acted_as":
            query &= UUIDs("actor_id").parse(where, value).q()
        elif key == "created_at":
            query &= _time_q(where, value)
        else:
            if not isinstance(value, list) or len(value) > MAX_NODES:
                raise errors.InvalidAPIParameters(f"{where}: a list of filters")
            parts = [_filter_q(item, f"{where}[{i}]", depth + 1, budget) for i, item in enumerate(value)]
            if key == "AND":
                for part in parts:
                    query &= part
            elif key == "OR":
                if parts:
                    either = Q(pk__in=[])
                    for part in parts:
                        either |= part
                    query &= either
            else:
                for part in parts:
                    query &= ~part
    return query


def _integer(label: str, value, default: int | None, low: int, high: int) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise errors.InvalidAPIParameters(f"{label}: an integer from {low} to {high}")
    return value


def _ordering(raw) -> list[str]:
    if raw is None:
        return ["-created_at", "-id"]
    if not isinstance(raw, list) or len(raw) > len(_ORDERS):
        raise errors.InvalidAPIParameters(f"order: a list of at most {len(_ORDERS)} {{field, direction}}")
    found = []
    for index, item in enumerate(raw):
        label = f"order[{index}]"
        item = _object(label, item, ("field", "direction"))
        field = item.get("field")
        if not isinstance(field, str) or field not in _ORDERS:
            raise errors.InvalidAPIParameters(f"{label}.field: one of {', '.join(_ORDERS)}")
        direction = item.get("direction") or "DESC"
        if not isinstance(direction, str) or direction.upper() not in ("ASC", "DESC"):
            raise errors.InvalidAPIParameters(f"{label}.direction: ASC or DESC")
        found.append(("-" if direction.upper() == "DESC" else "") + _ORDERS[field])
    return [*found, "-id"]


def node(row) -> dict:
    pk = entry_uuid(row.pk)
    return {
        "id": str(pk), "field_id": str(pk), "action_id": str(pk), "entity_type": row.entity or None,
        "operation": row.x_operation, "entity_id": row.target or None, "created_at": _iso(row.created_at),
        "request_id": row.request_id or None, "triggered_by": row.actor_id or None,
        "acted_as": str(_user_uuid(row.actor_id)) if _user_uuid(row.actor_id) else None,
        "description": describe(row.actor, row.action, row.target, row.outcome, row.detail, row.via),
        "duration": None, "client_ip": row.remote_addr or None, "status": row.x_status,
    }


def _iso(value: datetime) -> str:
    return value.isoformat()


def search(user, body) -> dict:
    """``POST /v2/audit-logs/search``: the ``SearchAuditLogsPayload`` for ``body``."""
    visible = entries(user)  # refuses a user before the body is looked at
    body = _object("body", body if body is not None else {}, _BODY_KEYS)
    for key in ("first", "after", "last", "before"):
        if body.get(key) is not None:
            raise errors.InvalidAPIParameters(f"{key}: cursor pagination is not supported; use limit and offset")
    condition = _filter_q(body["filter"], "filter", 0, [MAX_NODES]) if body.get("filter") is not None else Q()
    ordering = _ordering(body.get("order"))
    limit = _integer("limit", body.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _integer("offset", body.get("offset"), 0, 0, MAX_OFFSET)
    query = visible.filter(condition)
    rows = list(query.order_by(*ordering)[offset:offset + limit])
    total = query.count()
    return {"items": [node(row) for row in rows], "total_count": total,
            "has_next_page": offset + len(rows) < total, "has_previous_page": offset > 0}

