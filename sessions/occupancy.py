"""Agents' occupied slots, recomputed from their live kernels, never counted down
(DESIGN.md §4.3): a lost event can't leak capacity.

One statement on PostgreSQL whatever the number of agents (an ``UPDATE ... FROM``
over the aggregated requests of the kernels in ``AGENT_OCCUPYING_KERNEL``); only
rows that differ are written.  SQLite (local runs) gets a per-agent fallback.
Every writer that frees or takes capacity (a sync, a destroy, the scheduler's
write-back, the reconcilers) calls ``recompute_agent_occupancy``.
"""
from __future__ import annotations

from django.db import connection, transaction

from agents.models import Agent
from backendai.slots import ResourceSlot
from sessions.lifecycle import AGENT_OCCUPYING_KERNEL
from sessions.models import Kernel


def recompute_agent_occupancy(agent_ids=None) -> int:
    """Rewrite agents' ``occupied_slots`` from their live kernels (all agents when None),
    set-based; returns how many changed."""
    with transaction.atomic():
        return rewrite_occupancy(agent_ids)


def rewrite_occupancy(agent_ids=None) -> int:
    """``recompute_agent_occupancy`` inside the caller's transaction.

    Rewrites ``occupied_slots`` of the given agents (all agents when None) as
    the sum of their live kernels' requests.  Only rows that differ are written;
    returns how many were."""
    if agent_ids is not None:
        agent_ids = sorted({str(a) for a in agent_ids if a})
        if not agent_ids:
            return 0
    statuses = sorted(AGENT_OCCUPYING_KERNEL)
    if connection.vendor == "postgresql":
        at = connection.ops.quote_name(Agent._meta.db_table)
        kt = connection.ops.quote_name(Kernel._meta.db_table)
        # one aggregation over the live kernels of every agent asked for, joined to the agents: not a
        # subquery per agent, whose plan (with the kernel statuses' statistics stale, as they are right
        # after a pass moved thousands of kernels) can scan every live kernel once per agent
        ids_sql = "SELECT unnest(%(ids)s::text[]) AS id" if agent_ids is not None else f"SELECT id FROM {at}"
        on_agents = "AND k.agent_id = ANY(%(ids)s::text[])" if agent_ids is not None else ""
        sql = f"""
UPDATE {at} AS a SET occupied_slots = COALESCE(o.slots, '{{}}'::jsonb)
FROM (
  SELECT ids.id, s.slots
  FROM ({ids_sql}) ids
  LEFT JOIN (
    SELECT x.agent_id, jsonb_object_agg(x.key, trim_scale(x.total)::text) AS slots FROM (
      SELECT k.agent_id, j.key, SUM(j.value::numeric) AS total
      FROM {kt} k, jsonb_each_text(k.requested_slots) j
      WHERE k.status = ANY(%(statuses)s::text[]) {on_agents}
      GROUP BY k.agent_id, j.key
    ) x
    GROUP BY x.agent_id
  ) s ON s.agent_id = ids.id
) o
WHERE a.id = o.id AND a.occupied_slots IS DISTINCT FROM COALESCE(o.slots, '{{}}'::jsonb)
"""
        params = {"statuses": statuses, "ids": agent_ids}
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount
    query = Agent.objects.all() if agent_ids is None else Agent.objects.filter(pk__in=agent_ids)
    ids = list(query.values_list("pk", flat=True))
    totals = {a: ResourceSlot() for a in ids}
    for agent_id, slots in Kernel.objects.filter(agent_id__in=ids, status__in=statuses).values_list(
            "agent_id", "requested_slots"):
        totals[agent_id] = totals[agent_id] + ResourceSlot.from_json(slots)
    current = dict(query.values_list("pk", "occupied_slots"))
    changed = 0
    for agent_id, total in totals.items():
        if current.get(agent_id) != total.to_json():
            changed += Agent.objects.filter(pk=agent_id).update(occupied_slots=total.to_json())
    return changed
