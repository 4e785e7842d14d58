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
``find_stuck(...same arguments...) -> list[Finding]``
    What ``reconcile_stuck`` would do, read only (the operators' maintenance page shows it first).
``recompute_agent_occupancy(agent_ids=None) -> int``
    ``Agent.occupied_slots`` from the live kernels, set-based; returns how many changed.
``wait_reasons(session) -> list[str]``
    Why a pending session waits, from its ``status_data``, for its owner.
``preview_request(group, *, keypair, owner, project, architecture, per_kernel, ...) -> Preview``
    What a pass would decide now for one more (hypothetical) request, read only:
    the pass's own snapshot and ``decide``, nothing written (``preview`` module;
    the web launcher's "would start now / would wait / cannot start").

The whole package sits above ``sessions.services`` (the reconcilers use its
status doors) and below the Celery tasks and views that call it.
"""
from __future__ import annotations

from sessions.occupancy import recompute_agent_occupancy
from sessions.scheduler.dispatcher import PassResult, run_all_passes, run_pass
from sessions.scheduler.preview import Preview, preview_request
from sessions.scheduler.reconcilers import Finding, ReconcileResult, find_stuck, reconcile_stuck

__all__ = ["Finding", "PassResult", "Preview", "ReconcileResult", "find_stuck", "reconcile_stuck", "recompute_agent_occupancy", "run_all_passes",
           "preview_request", "run_pass", "wait_reasons"]


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
