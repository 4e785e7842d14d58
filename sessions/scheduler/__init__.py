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

Imports are lazy so that importing this package never touches the app registry.
"""
from __future__ import annotations

__all__ = ["PassResult", "ReconcileResult", "reconcile_stuck", "recompute_agent_occupancy", "run_all_passes",
           "run_pass", "wait_reasons"]


def run_pass(scaling_group_name: str, *, now=None):
    from sessions.scheduler.dispatcher import run_pass as _run_pass

    return _run_pass(scaling_group_name, now=now)


def run_all_passes(*, now=None):
    from sessions.scheduler.dispatcher import run_all_passes as _run_all

    return _run_all(now=now)


def reconcile_stuck(scheduled_timeout: float = 300, preparing_timeout: float = 900, terminating_timeout: float = 600,
                    lost_grace: float | None = None, *, now=None):
    from sessions.scheduler.reconcilers import reconcile_stuck as _reconcile

    return _reconcile(scheduled_timeout, preparing_timeout, terminating_timeout, lost_grace, now=now)


def recompute_agent_occupancy(agent_ids=None) -> int:
    from sessions.scheduler.reconcilers import recompute_agent_occupancy as _recompute

    return _recompute(agent_ids)


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


def __getattr__(name):
    if name == "PassResult":
        from sessions.scheduler.dispatcher import PassResult

        return PassResult
    if name == "ReconcileResult":
        from sessions.scheduler.reconcilers import ReconcileResult

        return ReconcileResult
    raise AttributeError(name)
