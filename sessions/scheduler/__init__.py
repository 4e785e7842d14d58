"""The scheduler: places PENDING sessions on agents (docs/scheduler.md).

Public API (what Celery tasks, views and the admin call):

``run_pass(scaling_group_name, *, now=None) -> PassResult``
    One pass for one scaling group, under its advisory lock.
``run_all_passes(*, now=None) -> list[PassResult]``
    One pass per scaling group that has pending sessions.
``reconcile_stuck(scheduled_timeout=300, preparing_timeout=900, terminating_timeout=600,
lost_grace=None, *, now=None) -> ReconcileResult``
    Stuck SCHEDULED/PREPARING/PULLING/TERMINATING sessions, kernels on agents
    LOST for ``lost_grace`` seconds (``AGENT_LOST_GRACE`` when None), then every
    agent's occupancy recomputed.
``recompute_agent_occupancy(agent_ids=None) -> int``
    ``Agent.occupied_slots`` from the live kernels, set-based; returns how many changed.
``wait_reasons(session) -> list[str]``
    Why a pending session waits, from its ``status_data``, for its owner.

The whole package sits above ``sessions.services`` (the reconcilers use its
status doors) and below the Celery tasks and views that call it.
"""
from __future__ import annotations

from sessions.occupancy import recompute_agent_occupancy
from sessions.scheduler.dispatcher import PassResult, run_all_passes, run_pass
from sessions.scheduler.reconcilers import ReconcileResult, reconcile_stuck

__all__ = ["PassResult", "ReconcileResult", "reconcile_stuck", "recompute_agent_occupancy", "run_all_passes",
           "run_pass", "wait_reasons"]


def wait_reasons(session) -> list[str]:
    """Human-readable reasons a PENDING session waits (empty when it does not)."""
    if getattr(session, "status", None) != "PENDING":
        return []
    data = session.status_data if isinstance(session.status_data, dict) else {}
    sched = data.get("scheduler") or {}
    reasons = [f"{p.get('name')}: {p.get('msg')}" for p in sched.get("failed_predicates") or [] if isinstance(p, dict)]
    if sched.get("msg"):
        reasons.append(str(sched["msg"]))
    if not reasons and session.status_info:
        reasons.append(session.status_info)
    return reasons
