"""Reconcilers: nothing stays stuck (DESIGN §4 principle 1).

``reconcile_stuck`` finds, in a constant number of statements:

* sessions SCHEDULED longer than ``scheduled_timeout`` or PREPARING/PULLING
  longer than ``preparing_timeout`` (measured from ``status_changed``);
* sessions TERMINATING longer than ``terminating_timeout``;
* sessions with a live kernel on an agent LOST for longer than ``lost_grace``
  (``AGENT_LOST_GRACE``, by default three heartbeat timeouts);

and resolves them:

* **rescheduled**: the session never started (every kernel still SCHEDULED,
  PREPARING, PULLING or BUILDING), one of its agents is LOST, and it was not
  rescheduled before: kernels and session go back to PENDING with their agent
  cleared (status_info ``rescheduled``), so the next pass places them on a live
  agent.  This is the one backward move the scheduler makes (Sokovan's
  RESCHEDULING → PENDING); the LOST agent, if it comes back, is told to stop the
  containers it still has, because the kernels no longer belong to it;
* **failed to start**: otherwise a session stuck before RUNNING is CANCELLED with
  ``failed-to-start`` (kernels not yet running are cancelled, any running one is
  asked to terminate) and the reason in ``status_data.error``;
* **forced**: TERMINATING past the timeout becomes TERMINATED with
  ``hang-timeout``; an agent still running a kernel is told to stop it at its
  next sync;
* **agent lost**: a session that ran on a LOST agent gets its kernels there set to
  ERROR ``agent-lost``, its other live kernels TERMINATING, and so goes ERROR.

Every move goes through ``sessions.services.move_kernel`` /
``refresh_session_status`` (the lifecycle's legality checks); the writes are one
guarded set-based statement (``writer.write``: a compare-and-set on the status
each decision was made on, so a session an agent's report or a destroy moved
meanwhile is left alone and retried on the next run).  The rows to write are
locked first, sessions then kernels in primary-key order (the lock order of
every status writer, see ``sessions.services.lock_sessions``), and the occupancy
of every agent is recomputed from the live kernels after that transaction has
committed, so the reconciler never holds a session while it waits for an agent
(an agent's sync holds its agent, then locks sessions).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Prefetch, Q
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, AgentStatus
from backendai import telemetry
from sessions import occupancy, services
from sessions.lifecycle import (
    RESCHEDULABLE_KERNEL,
    RESCHEDULABLE_SESSION,
    TERMINAL_KERNEL,
    KernelStatus,
    SessionStatus,
    history_entry,
)
from sessions.models import Kernel, Session
from sessions.scheduler import locks, metrics, writer

log = logging.getLogger(__name__)

S, K = SessionStatus, KernelStatus
LOCK_NAMESPACE = "reconcile"
MAX_RESCHEDULES = 1
STARTING_SESSION = (S.SCHEDULED, S.PREPARING, S.PULLING)
EARLY_KERNEL = frozenset({K.PENDING, K.SCHEDULED, K.PREPARING, K.BUILDING, K.PULLING})


@dataclass
class ReconcileResult:
    skipped: str | None = None
    rescheduled: list = field(default_factory=list)
    failed_to_start: list = field(default_factory=list)
    forced: list = field(default_factory=list)
    agent_lost: list = field(default_factory=list)
    lost: list = field(default_factory=list)  # changed by someone else meanwhile; retried next run
    agents_recomputed: int = 0  # agents whose occupied_slots changed
    duration: float = 0.0
    statements: int = 0

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("rescheduled", "failed_to_start", "forced", "agent_lost", "lost"):
            data[key] = [str(i) for i in data[key]]
        return data


class _Counter:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def reconcile_stuck(scheduled_timeout: float = 300, preparing_timeout: float = 900,
                    terminating_timeout: float = 600, lost_grace: float | None = None, *, now=None) -> ReconcileResult:
    """Resolve stuck sessions and kernels on LOST agents; recompute all occupancy.
    Timeouts are seconds; 0 disables that check.  ``lost_grace`` (seconds after an
    agent was marked LOST) defaults to ``AGENT_LOST_GRACE``; 0 ends at once."""
    if lost_grace is None:
        lost_grace = settings.AGENT_LOST_GRACE
    started = time.monotonic()
    counter = _Counter()
    try:
        with connection.execute_wrapper(counter):
            result = _reconcile(scheduled_timeout, preparing_timeout, terminating_timeout, lost_grace,
                                now or timezone.now())
    except Exception:
        metrics.record("reconcile", "failure", time.monotonic() - started)
        log.exception("reconciler failed")
        raise
    result.duration = time.monotonic() - started
    result.statements = counter.count
    metrics.record("reconcile", "skipped" if result.skipped else "success", result.duration)
    metrics.decisions({"rescheduled": len(result.rescheduled), "failed_to_start": len(result.failed_to_start),
                       "forced": len(result.forced), "agent_lost": len(result.agent_lost)})
    return result


def _reconcile(scheduled_timeout, preparing_timeout, terminating_timeout, lost_grace, now) -> ReconcileResult:
    result = ReconcileResult()
    with locks.process_lock(LOCK_NAMESPACE, "all") as got:
        if not got:
            result.skipped = "locked"
            return result
        with transaction.atomic():
            if not locks.try_xact_lock(LOCK_NAMESPACE, "all"):
                result.skipped = "locked"
                return result
            lost_agents, sessions = _candidates(scheduled_timeout, preparing_timeout, terminating_timeout,
                                                lost_grace, now)
            session_changes, kernel_changes, kinds = [], [], {}
            for session in sessions:
                kind = _resolve(session, lost_agents, now, scheduled_timeout, preparing_timeout, terminating_timeout,
                                session_changes, kernel_changes)
                if kind:
                    kinds[session.pk] = kind
            if session_changes:
                _lock_in_order([c.id for c in session_changes], [c.id for c in kernel_changes])
            written = writer.write(session_changes, kernel_changes, now)
            for change in session_changes:
                if change.id not in written.sessions:
                    result.lost.append(change.id)
                    continue
                getattr(result, kinds[change.id]).append(change.id)
            swept_kernels = sum(1 for c in kernel_changes
                                if (c.terminated or c.status == K.TERMINATING) and c.id in written.kernels)
            transaction.on_commit(partial(_observe_sweeps, result, swept_kernels))
            agents = sorted({a for a in written.kernels.values() if a})
            if agents:

                transaction.on_commit(lambda: agent_services.poke_agents(agents))
        # after the commit: the sessions' locks are gone before any agent row is written
        with transaction.atomic():
            result.agents_recomputed = occupancy.rewrite_occupancy(None)
    for kind in ("rescheduled", "failed_to_start", "forced", "agent_lost"):
        for session_id in getattr(result, kind):
            log.warning("reconciler: session %s %s", session_id, kind.replace("_", " "))
    return result


def _observe_sweeps(result: ReconcileResult, kernels: int) -> None:
    """``backendai_sweep_session_count{reason}`` / ``_sweep_kernel_count``: what this sweep ended."""
    for kind in ("failed_to_start", "forced", "agent_lost"):
        telemetry.observe_sweep("session", len(getattr(result, kind)), reason=kind)
    telemetry.observe_sweep("kernel", kernels, reason="reconcile")


def _candidates(scheduled_timeout, preparing_timeout, terminating_timeout, lost_grace, now):
    """The LOST agents past their grace ({id: lost_at}) and the sessions that may be stuck."""
    lost_agents = {
        agent_id: lost_at for agent_id, lost_at in Agent.objects.filter(status=AgentStatus.LOST)
        .values_list("id", "lost_at")
        if lost_agents_due(lost_at, now, lost_grace)
    }
    query = Q(pk__in=[])
    for statuses, timeout in ((S.SCHEDULED,), scheduled_timeout), ((S.PREPARING, S.PULLING), preparing_timeout), \
            ((S.TERMINATING,), terminating_timeout):
        if timeout:
            cutoff = now - timedelta(seconds=timeout)
            query |= Q(status__in=statuses) & (Q(status_changed__lt=cutoff) |
                                               Q(status_changed__isnull=True, created_at__lt=cutoff))
    if lost_agents:
        query |= Q(pk__in=Kernel.objects.filter(agent_id__in=list(lost_agents))
                   .exclude(status__in=TERMINAL_KERNEL).values("session_id"))
    sessions = list(
        Session.objects.filter(query).exclude(status__in=[S.PENDING, S.TERMINATED, S.CANCELLED])
        .order_by("created_at")
        .prefetch_related(Prefetch("kernels", queryset=Kernel.objects.order_by("cluster_idx")))
    )
    return lost_agents, sessions


@dataclass(frozen=True)
class Finding:
    """What ``reconcile_stuck`` would do to one session, found without changing anything."""

    session: Session
    status: str  # the status it is stuck in
    kind: str  # rescheduled | failed_to_start | forced | agent_lost
    stuck_seconds: float
    agents: tuple[str, ...]


def find_stuck(scheduled_timeout: float = 300, preparing_timeout: float = 900, terminating_timeout: float = 600,
               lost_grace: float | None = None, *, now=None) -> list[Finding]:
    """The reconciler's findings, read only: the same selection and decisions as
    ``reconcile_stuck`` with the same arguments, with nothing written (the decisions
    change the loaded rows in memory only)."""
    if lost_grace is None:
        lost_grace = settings.AGENT_LOST_GRACE
    now = now or timezone.now()
    lost_agents, sessions = _candidates(scheduled_timeout, preparing_timeout, terminating_timeout, lost_grace, now)
    findings = []
    for session in sessions:
        status = session.status
        stuck = _stuck_for(session, now)
        agents = tuple(sorted({k.agent_id for k in session.kernels.all() if k.agent_id}))
        kind = _resolve(session, lost_agents, now, scheduled_timeout, preparing_timeout, terminating_timeout, [], [])
        if kind:
            findings.append(Finding(session, status, kind, stuck, agents))
    return findings


def _lock_in_order(session_ids, kernel_ids) -> None:
    """Lock the rows about to be written, sessions then kernels, each in primary-key
    order (the writer's own UPDATE would lock them in whatever order it meets them)."""
    list(Session.objects.select_for_update().filter(pk__in=session_ids).order_by("pk").values_list("pk", flat=True))
    if kernel_ids:
        list(Kernel.objects.select_for_update().filter(pk__in=kernel_ids).order_by("pk").values_list("pk", flat=True))


def lost_agents_due(lost_at, now, grace) -> bool:
    return lost_at is None or (now - lost_at).total_seconds() >= grace


def _stuck_for(session, now) -> float:
    since = session.status_changed or session.created_at
    return (now - since).total_seconds()


def _resolve(session, lost_agents, now, scheduled_timeout, preparing_timeout, terminating_timeout,
             session_changes, kernel_changes) -> str | None:
    kernels = list(session.kernels.all())
    before_session = (session.status, len(session.status_history or []), session.terminated_at, session.result)
    before_kernels = {k.pk: (k.status, len(k.status_history or []), k.agent_id) for k in kernels}
    on_lost = [k for k in kernels if k.agent_id in lost_agents and k.status not in TERMINAL_KERNEL]
    status = session.status
    info = None

    if status == S.TERMINATING:
        stuck = bool(terminating_timeout) and _stuck_for(session, now) >= terminating_timeout
        if not (stuck or on_lost):
            return None
        # a kernel being stopped on an agent that is gone will never report back
        kind, info = ("forced", "hang-timeout") if stuck else ("agent_lost", "agent-lost")
        for kernel in kernels:
            if kernel.status in TERMINAL_KERNEL or not (stuck or kernel in on_lost):
                continue
            if not services.move_kernel(kernel, K.TERMINATED, reason=info, now=now):
                services.move_kernel(kernel, K.ERROR, reason=info, now=now)
        data = None
    elif status in STARTING_SESSION:
        timeout = scheduled_timeout if status == S.SCHEDULED else preparing_timeout
        stuck = bool(timeout) and _stuck_for(session, now) >= timeout
        if on_lost and all(k.status in EARLY_KERNEL for k in kernels) and _reschedules(session) < MAX_RESCHEDULES:
            _reschedule(session, kernels, on_lost, now, session_changes, kernel_changes, before_session,
                        before_kernels)
            return "rescheduled"
        if not (stuck or on_lost):
            return None
        reason = (f"agent(s) {', '.join(sorted({k.agent_id for k in on_lost}))} LOST while the session was {status}"
                  if on_lost else f"{status} for more than {timeout:g} s")
        for kernel in kernels:
            if kernel.status in TERMINAL_KERNEL:
                continue
            target = K.CANCELLED if kernel.status in EARLY_KERNEL else K.TERMINATING
            if kernel in on_lost and target == K.TERMINATING:
                target = K.ERROR
            if not services.move_kernel(kernel, target, reason="failed-to-start", now=now):
                services.move_kernel(kernel, K.ERROR, reason="failed-to-start", now=now)
        kind, info = "failed_to_start", "failed-to-start"
        data = {**(session.status_data or {}), "error": {"reason": reason, "at": now.isoformat()}}
    else:
        if not on_lost:
            return None
        lost_ids = sorted({k.agent_id for k in on_lost})
        for kernel in kernels:
            if kernel.status in TERMINAL_KERNEL:
                continue
            if kernel in on_lost:
                services.move_kernel(kernel, K.ERROR, reason="agent-lost", now=now)
            elif not services.move_kernel(kernel, K.TERMINATING, reason="agent-lost", now=now):
                services.move_kernel(kernel, K.ERROR, reason="agent-lost", now=now)
        kind, info = "agent_lost", "agent-lost"
        data = {**(session.status_data or {}),
                "error": {"reason": f"agent(s) {', '.join(lost_ids)} LOST", "at": now.isoformat()}}

    services.refresh_session_status(session, kernels, now=now)
    session_changes.append(writer.SessionChange(
        session.pk, before_session[0], session.status, status_info=info, status_data=data,
        history=list((session.status_history or [])[before_session[1]:]),
        terminated=session.terminated_at is not None and before_session[2] is None,
        result=session.result if session.result != before_session[3] else None,
    ))
    for kernel in kernels:
        old_status, old_len, _ = before_kernels[kernel.pk]
        if kernel.status == old_status:
            continue
        kernel_changes.append(writer.KernelChange(
            kernel.pk, session.pk, old_status, kernel.status, status_info=kernel.status_info,
            history=list((kernel.status_history or [])[old_len:]), terminated=kernel.status in TERMINAL_KERNEL,
        ))
    return kind


def _reschedules(session) -> int:
    data = session.status_data if isinstance(session.status_data, dict) else {}
    try:
        return int((data.get("reschedule") or {}).get("count", 0))
    except (TypeError, ValueError):
        return 0


def _reschedule(session, kernels, on_lost, now, session_changes, kernel_changes, before_session,
                before_kernels) -> None:
    """Back to PENDING, agents cleared: the one backward move the lifecycle allows."""
    if before_session[0] not in RESCHEDULABLE_SESSION or any(
            before_kernels[k.pk][0] not in RESCHEDULABLE_KERNEL for k in kernels):
        return
    lost_ids = sorted({k.agent_id for k in on_lost})
    msg = (f"agent(s) {', '.join(lost_ids)} LOST while the session was {session.status}; "
           f"it goes back to the queue to be placed on a live agent")
    data = dict(session.status_data or {})
    data["reschedule"] = {"count": _reschedules(session) + 1, "last": now.isoformat(), "reason": msg}
    scheduler = dict(data.get("scheduler") or {})
    scheduler["msg"] = msg
    data["scheduler"] = scheduler
    session_changes.append(writer.SessionChange(
        session.pk, before_session[0], S.PENDING, status_info="rescheduled", status_data=data, agent_ids=[],
        occupying_slots={}, history=[history_entry(S.PENDING, now)], reschedule=True))
    for kernel in kernels:
        old_status = before_kernels[kernel.pk][0]
        kernel_changes.append(writer.KernelChange(
            kernel.pk, session.pk, old_status, K.PENDING, status_info="rescheduled", agent_id=None, agent_addr="",
            occupied_slots={}, history=[history_entry(K.PENDING, now)], reschedule=True))
