"""The snapshot a pass decides on, read in a constant number of statements.

Whatever the queue length, one pass of a scaling group reads:

1. the pending sessions of the group, joined with their keypair's policy, the
   user's main keypair policy, the project's and the domain's limits;
2. the kernels of those sessions;
3. their dependencies with the dependencies' status and result;
4. the ALIVE agents of the group;
5. the agents' occupancy, recomputed from the kernels in occupying statuses
   (never read from ``Agent.occupied_slots``, which is only a cache);
6. the usage (slots and session counts) of the keypairs, users, projects and
   domains that have pending sessions here, aggregated in SQL;
7. the known slot types;
8. only when a policy sets a pending limit: the same keypairs' pending
   sessions in other groups.

Everything else happens in memory.

No model instance is built and no ORM field conversion runs: on PostgreSQL each
query is compiled by the ORM and run on a plain cursor (``_rows``), so the JSON
columns arrive as text and are decoded once per distinct value (a queue repeats
the same few slot maps); other databases (SQLite, the embedded default) go
through ``values_list``, which decodes them itself.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection

from agents.models import Agent, AgentStatus
from backendai.services import known_slot_types
from sessions.lifecycle import AGENT_OCCUPYING_KERNEL, CONCURRENCY_SESSION, OCCUPYING_SESSION, SessionStatus
from sessions.models import Kernel, Session, SessionDependency

S = SessionStatus
PRIVATE_SESSION_TYPES = frozenset({"system"})
# Quotas count OCCUPYING_SESSION; max_concurrent_sessions counts CONCURRENCY_SESSION (sessions.lifecycle).


@dataclass(eq=False)
class PendingKernel:
    id: uuid.UUID
    role: str
    idx: int
    hostname: str
    architecture: str
    status: str
    requested_raw: dict
    request: tuple = ()


@dataclass(eq=False)
class PendingSession:
    id: uuid.UUID
    name: str
    created_at: datetime
    priority: int
    session_type: str
    cluster_mode: str
    designated: list
    access_key: str | None
    user_id: uuid.UUID
    project_id: uuid.UUID
    domain_id: str
    architecture: str
    starts_at: datetime | None
    status_data: dict
    requested_raw: dict
    kernels: list = field(default_factory=list)
    request: tuple = ()
    error: str | None = None

    @property
    def retries(self) -> int:
        sched = self.status_data.get("scheduler") if isinstance(self.status_data, dict) else None
        try:
            return int((sched or {}).get("retries", 0))
        except (TypeError, ValueError):
            return 0

    @property
    def is_private(self) -> bool:
        return self.session_type in PRIVATE_SESSION_TYPES


@dataclass
class KeypairPolicy:
    name: str
    total_resource_slots: dict
    unlimited_for_unspecified: bool
    max_concurrent_sessions: int
    max_concurrent_sftp_sessions: int
    max_pending_session_count: int | None
    max_pending_session_resource_slots: dict | None


@dataclass
class Dependency:
    id: uuid.UUID
    name: str
    status: str
    result: str


@dataclass
class RawSnapshot:
    """What the database said, before conversion to vectors."""

    pending: list[PendingSession]
    keypair_policies: dict[str, KeypairPolicy]
    user_limits: dict  # user id -> (total_resource_slots, unlimited_for_unspecified) of the main keypair's policy
    project_limits: dict
    domain_limits: dict
    dependencies: dict  # session id -> [Dependency]
    agents: list[tuple]  # (id, addr, architecture, available_slots, schedulable)
    occupancy: dict  # agent id -> {slot: amount}
    usage: dict  # ('k'|'u'|'p'|'d'|'g', owner) -> {slot: amount}
    concurrency: dict  # access key -> [regular, private]
    pending_elsewhere: list  # (id, access_key, created_at, requested_slots)
    slot_types: dict


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _json_each() -> str:
    return "jsonb_each_text" if connection.vendor == "postgresql" else "json_each"


def _norm_uuid(value):
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def _rows(queryset) -> list[tuple]:
    """The tuples of a ``values_list`` queryset.  On PostgreSQL its SQL runs on a
    plain cursor (no per-field converters: psycopg already gives UUIDs, datetimes
    and numbers; JSON columns stay text for ``_JsonCache``)."""
    if connection.vendor != "postgresql":
        return list(queryset)
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


class _JsonCache:
    """Decodes JSON text once per distinct value; already-decoded values pass through.
    The decoded objects are shared, so the pass treats them as read-only."""

    def __init__(self):
        self.seen: dict = {}

    def __call__(self, value):
        if not isinstance(value, str):
            return value
        decoded = self.seen.get(value)
        if decoded is None:
            try:
                decoded = json.loads(value)
            except ValueError:
                decoded = value
            self.seen[value] = decoded
        return decoded


_PENDING_COLUMNS = (
    "id", "name", "created_at", "priority", "session_type", "cluster_mode", "agent_ids", "access_key_id",
    "user_id", "project_id", "domain_id", "architecture", "starts_at", "status_data", "requested_slots",
    "access_key__resource_policy_id",
    "access_key__resource_policy__total_resource_slots",
    "access_key__resource_policy__default_for_unspecified",
    "access_key__resource_policy__max_concurrent_sessions",
    "access_key__resource_policy__max_concurrent_sftp_sessions",
    "access_key__resource_policy__max_pending_session_count",
    "access_key__resource_policy__max_pending_session_resource_slots",
    "user__main_keypair__resource_policy__total_resource_slots",
    "user__main_keypair__resource_policy__default_for_unspecified",
    "project__total_resource_slots",
    "domain__total_resource_slots",
)


def load(group_name: str, *, with_group_usage: bool, slot_types: dict | None = None) -> RawSnapshot:
    """Everything one pass decides on, in a fixed number of statements: the pending
    sessions with their owners' limits, their kernels and dependencies, the group's
    agents and occupancy, the owners' usage, and pending sessions elsewhere that
    count against pending limits.  ``slot_types``: the known slot types when the
    caller read them already (``preview``), else read here (statement 7)."""
    decode = _JsonCache()
    snapshot = _pending_sessions(group_name, decode)
    if not snapshot.pending:
        return snapshot
    by_id = {session.id: session for session in snapshot.pending}
    _attach_kernels(group_name, by_id, decode)
    snapshot.dependencies = _dependencies(group_name)
    snapshot.agents = alive_agents(group_name, decode)
    snapshot.occupancy = _agent_occupancy(group_name)
    snapshot.usage, snapshot.concurrency = _owner_usage(group_name, with_group_usage)
    snapshot.pending_elsewhere = _pending_elsewhere(group_name, snapshot.keypair_policies, decode)
    snapshot.slot_types = slot_types if slot_types is not None else known_slot_types()
    return snapshot


def alive_agents(group_name: str, decode=None) -> list[tuple]:
    """(id, addr, architecture, available_slots, schedulable) of the group's ALIVE agents, by id (one statement)."""
    decode = decode or _JsonCache()
    return [(agent_id, addr, arch, decode(available), schedulable) for agent_id, addr, arch, available, schedulable in
            _rows(Agent.objects.filter(scaling_group_id=group_name, status=AgentStatus.ALIVE).order_by("id")
                  .values_list("id", "addr", "architecture", "available_slots", "schedulable"))]


def _pending_sessions(group_name: str, decode) -> RawSnapshot:
    """The group's PENDING sessions, oldest first, with their keypair, user, project
    and domain limits (one statement, the limits joined in)."""
    pending: list[PendingSession] = []
    keypair_policies: dict[str, KeypairPolicy] = {}
    user_limits, project_limits, domain_limits = {}, {}, {}
    rows = _rows(Session.objects.filter(scaling_group_id=group_name, status=S.PENDING)
                 .order_by("created_at", "id").values_list(*_PENDING_COLUMNS))
    for (sid, name, created, priority, stype, cmode, agent_ids, ak, user_id, project_id, domain_id, arch, starts_at,
         status_data, requested, kp_policy, kp_total, kp_default, kp_conc, kp_sftp, kp_pcount, kp_pslots,
         u_total, u_default, p_total, d_total) in rows:
        agent_ids, status_data, requested = decode(agent_ids), decode(status_data), decode(requested)
        pending.append(PendingSession(
            id=sid, name=name, created_at=created, priority=priority, session_type=stype, cluster_mode=cmode,
            designated=[str(a) for a in agent_ids] if isinstance(agent_ids, list) else [],
            access_key=ak, user_id=user_id, project_id=project_id, domain_id=domain_id, architecture=arch,
            starts_at=starts_at, status_data=status_data if isinstance(status_data, dict) else {},
            requested_raw=requested if isinstance(requested, dict) else {},
        ))
        if ak is not None and kp_policy is not None and ak not in keypair_policies:
            kp_total, kp_pslots = decode(kp_total), decode(kp_pslots)
            keypair_policies[ak] = KeypairPolicy(
                name=kp_policy, total_resource_slots=kp_total or {},
                unlimited_for_unspecified=kp_default != "LIMITED",
                max_concurrent_sessions=kp_conc, max_concurrent_sftp_sessions=kp_sftp,
                max_pending_session_count=kp_pcount, max_pending_session_resource_slots=kp_pslots or None,
            )
        if user_id not in user_limits:
            # no main keypair (or policy): no user-level limit
            user_limits[user_id] = ((decode(u_total) or {}, u_default != "LIMITED") if u_default is not None
                                    else ({}, True))
        if project_id not in project_limits:
            project_limits[project_id] = decode(p_total) or {}
        if domain_id not in domain_limits:
            domain_limits[domain_id] = decode(d_total) or {}
    if not pending:
        keypair_policies, user_limits, project_limits, domain_limits = {}, {}, {}, {}
    return RawSnapshot(pending=pending, keypair_policies=keypair_policies, user_limits=user_limits,
                       project_limits=project_limits, domain_limits=domain_limits, dependencies={}, agents=[],
                       occupancy={}, usage={}, concurrency={}, pending_elsewhere=[], slot_types={})


def _attach_kernels(group_name: str, by_id: dict, decode) -> None:
    """Each pending session's kernels, main first (one statement)."""
    for kid, session_id, role, idx, hostname, arch, requested, status in _rows(
        Kernel.objects.filter(session__scaling_group_id=group_name, session__status=S.PENDING)
        .order_by()
        .values_list("id", "session_id", "cluster_role", "cluster_idx", "cluster_hostname", "architecture",
                     "requested_slots", "status")
    ):
        session = by_id.get(session_id)
        if session is not None:
            requested = decode(requested)
            session.kernels.append(PendingKernel(kid, role, idx, hostname, arch, status,
                                                 requested if isinstance(requested, dict) else {}))
    for session in by_id.values():
        if len(session.kernels) > 1:
            session.kernels.sort(key=lambda k: (k.role != "main", k.idx, k.hostname))


def _dependencies(group_name: str) -> dict:
    """{session id: [Dependency]} of the group's pending sessions (one statement)."""
    dependencies: dict = {}
    for session_id, dep_id, dep_name, dep_status, dep_result in _rows(
        SessionDependency.objects.filter(session__scaling_group_id=group_name, session__status=S.PENDING)
        .order_by()
        .values_list("session_id", "depends_on_id", "depends_on__name", "depends_on__status", "depends_on__result")
    ):
        dependencies.setdefault(session_id, []).append(Dependency(dep_id, dep_name, dep_status, dep_result))
    return dependencies


def _pending_elsewhere(group_name: str, keypair_policies: dict, decode=None) -> list:
    """Pending sessions in other groups of keypairs with pending limits (one statement, only when needed)."""
    limited = [ak for ak, p in keypair_policies.items()
               if p.max_pending_session_count is not None or p.max_pending_session_resource_slots]
    if not limited:
        return []
    decode = decode or _JsonCache()
    return [(sid, ak, created, decode(requested)) for sid, ak, created, requested in _rows(
        Session.objects.filter(status=S.PENDING, access_key_id__in=limited)
        .exclude(scaling_group_id=group_name)
        .order_by()
        .values_list("id", "access_key_id", "created_at", "requested_slots"))]


def _agent_occupancy(group_name: str) -> dict:
    """{agent id: {slot: summed amount}} over the live kernels of the group's ALIVE agents."""
    kernel_statuses = sorted(AGENT_OCCUPYING_KERNEL)
    sql = (
        f"SELECT k.agent_id, j.key, SUM(CAST(j.value AS NUMERIC)) "
        f"FROM {_table(Kernel)} k JOIN {_table(Agent)} a ON a.id = k.agent_id, {_json_each()}(k.requested_slots) j "
        f"WHERE a.scaling_group_id = %s AND a.status = 'ALIVE' "
        f"AND k.status IN ({', '.join(['%s'] * len(kernel_statuses))}) "
        f"GROUP BY k.agent_id, j.key"
    )
    out: dict = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [group_name, *kernel_statuses])
        for agent_id, key, total in cursor.fetchall():
            out.setdefault(agent_id, {})[key] = total
    return out


def _owner_usage(group_name: str, with_group_usage: bool) -> tuple[dict, dict]:
    """Slots held by the keypairs, users, projects and domains that have pending
    sessions in the group, and the keypairs' live-session counts, in one
    statement: the owners are collected once (``pend``), the live sessions of any
    of them scanned once (``live``), their slot maps expanded once (``slots``)."""
    t = _table(Session)
    each = _json_each()
    occupying = [str(s) for s in OCCUPYING_SESSION]
    conc = [str(s) for s in CONCURRENCY_SESSION]
    occ_in = ", ".join(["%s"] * len(occupying))
    conc_in = ", ".join(["%s"] * len(conc))
    sql = [
        f"WITH pend AS (SELECT DISTINCT access_key, user_id, project_id, domain_id FROM {t} "
        f"WHERE scaling_group_id = %s AND status = 'PENDING'), "
        f"live AS (SELECT s.access_key, s.user_id, s.project_id, s.domain_id, s.session_type, s.status, "
        f"s.scaling_group_id, s.requested_slots FROM {t} s WHERE s.status IN ({conc_in}) AND ("
        f"s.access_key IN (SELECT access_key FROM pend) OR s.user_id IN (SELECT user_id FROM pend) OR "
        f"s.project_id IN (SELECT project_id FROM pend) OR s.domain_id IN (SELECT domain_id FROM pend))), "
        f"slots AS (SELECT l.access_key, l.user_id, l.project_id, l.domain_id, l.scaling_group_id, j.key AS k, "
        f"CAST(j.value AS NUMERIC) AS v FROM live l, {each}(l.requested_slots) j WHERE l.status IN ({occ_in})) "
    ]
    params: list = [group_name, *conc, *occupying]
    parts = []
    for scope, column in (("k", "access_key"), ("u", "user_id"), ("p", "project_id"), ("d", "domain_id")):
        parts.append(f"SELECT '{scope}', CAST({column} AS TEXT), k, SUM(v) FROM slots "
                     f"WHERE {column} IN (SELECT {column} FROM pend) GROUP BY {column}, k")
    parts.append("SELECT 'c', access_key, session_type, COUNT(*) FROM live "
                 "WHERE access_key IN (SELECT access_key FROM pend) GROUP BY access_key, session_type")
    if with_group_usage:
        parts.append("SELECT 'g', access_key, k, SUM(v) FROM slots WHERE scaling_group_id = %s "
                     "AND access_key IN (SELECT access_key FROM pend) GROUP BY access_key, k")
        params.append(group_name)
    usage: dict = {}
    concurrency: dict = {}
    with connection.cursor() as cursor:
        cursor.execute(sql[0] + " UNION ALL ".join(parts), params)
        for scope, owner, key, total in cursor.fetchall():
            if owner is None:
                continue
            if scope == "c":
                counts = concurrency.setdefault(owner, [0, 0])
                counts[1 if key in PRIVATE_SESSION_TYPES else 0] += int(total)
                continue
            if scope in ("u", "p"):
                owner = _norm_uuid(owner)
            usage.setdefault((scope, owner), {})[key] = total
    return usage, concurrency
