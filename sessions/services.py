"""Business rules for sessions and kernels: the only place that changes their
statuses.  Every move is checked against ``sessions.lifecycle``."""
from __future__ import annotations

import logging
import secrets
from typing import Iterable

from django.db import transaction
from django.utils import timezone

from sessions.lifecycle import (
    DEAD_SESSION,
    TERMINAL_KERNEL,
    KernelStatus,
    SessionStatus,
    derive_session_status,
    kernel_can_move,
    session_path,
)
from sessions.models import Kernel, Session, SessionResult, SessionType

log = logging.getLogger(__name__)


def _history_entry(status: str, now) -> dict:
    return {"status": status, "timestamp": now.isoformat()}


def move_kernel(kernel: Kernel, new_status: str, *, reason: str | None = None, now=None, **fields) -> bool:
    """Move a kernel to ``new_status`` if the lifecycle allows it; set ``fields``.
    Returns whether anything changed.  The caller saves (see ``save_kernel``)."""
    now = now or timezone.now()
    changed = False
    if new_status != kernel.status:
        if not kernel_can_move(kernel.status, new_status):
            log.warning("refused kernel move %s -> %s (kernel %s, session %s)",
                        kernel.status, new_status, kernel.pk, kernel.session_id)
            return False
        kernel.status = new_status
        kernel.status_changed = now
        kernel.status_history = [*kernel.status_history, _history_entry(new_status, now)]
        if reason:
            kernel.status_info = reason[:64]
        if new_status in TERMINAL_KERNEL and kernel.terminated_at is None:
            kernel.terminated_at = now
        changed = True
    for name, value in fields.items():
        if value is not None and getattr(kernel, name) != value:
            setattr(kernel, name, value)
            changed = True
    return changed


def refresh_session_status(session: Session, kernels: Iterable[Kernel] | None = None, now=None) -> bool:
    """Re-derive the session's status from its kernels; batch results from exit codes."""
    now = now or timezone.now()
    kernels = list(kernels if kernels is not None else session.kernels.all())
    derived = derive_session_status([k.status for k in kernels])
    changed = False
    if derived != session.status:
        path = session_path(session.status, derived)
        if path is None:
            log.warning("refused session move %s -> %s (session %s)", session.status, derived, session.pk)
            return False
        session.status = derived
        session.status_changed = now
        session.status_history = [*session.status_history, *(_history_entry(s, now) for s in path)]
        main = next((k for k in kernels if k.cluster_role == "main"), kernels[0] if kernels else None)
        if main is not None and main.status_info and derived in (SessionStatus.TERMINATED, SessionStatus.ERROR):
            session.status_info = main.status_info
        if derived in DEAD_SESSION or derived == SessionStatus.ERROR:
            session.terminated_at = session.terminated_at or now
        if derived == SessionStatus.TERMINATED and session.session_type == SessionType.BATCH and main is not None:
            session.result = SessionResult.SUCCESS if main.exit_code == 0 else SessionResult.FAILURE
        changed = True
    return changed


def save_session(session: Session) -> None:
    session.save(update_fields=["status", "status_changed", "status_history", "status_info", "terminated_at", "result"])


KERNEL_REPORT_FIELDS = ["status", "status_changed", "status_history", "status_info", "terminated_at", "container_id",
                        "service_ports", "kernel_host", "exit_code", "container_log", "last_stat", "occupied_slots"]


@transaction.atomic
def create_session_on_agent(
    *, user, image: str, agent, slots: dict, name: str | None = None, session_type: str = SessionType.INTERACTIVE,
    environ: dict | None = None, startup_command: str = "", service_ports: list | None = None,
    mounts: list | None = None, resource_opts: dict | None = None, batch_timeout: int | None = None,
    registry: str = "", architecture: str | None = None,
) -> Session:
    """Place a single-kernel session directly on ``agent`` (SCHEDULED at once).
    Used for a superadmin's manual placement and by the agent tests; the
    scheduler places everything else."""
    project = user.projects.order_by("name").first()
    now = timezone.now()
    session = Session.objects.create(
        name=name or f"sess-{secrets.token_hex(4)}", creation_id=secrets.token_hex(16), session_type=session_type,
        scaling_group=agent.scaling_group, domain_id=user.domain_id, project=project, user=user,
        access_key=user.main_keypair, image=image, architecture=architecture or agent.architecture,
        requested_slots=slots, occupying_slots=slots, environ=environ or {}, resource_opts=resource_opts or {},
        startup_command=startup_command or "", batch_timeout=batch_timeout, agent_ids=[agent.pk],
        status=SessionStatus.SCHEDULED, status_changed=now,
        status_history=[_history_entry(SessionStatus.PENDING, now), _history_entry(SessionStatus.SCHEDULED, now)],
    )
    Kernel.objects.create(
        session=session, agent=agent, agent_addr=agent.addr, image=image, architecture=session.architecture,
        registry=registry, requested_slots=slots, occupied_slots=slots, resource_opts=resource_opts or {},
        environ=environ or {}, mounts=mounts or [], service_ports=service_ports or [],
        startup_command=startup_command or "", status=KernelStatus.SCHEDULED, status_changed=now,
        status_history=[_history_entry(KernelStatus.SCHEDULED, now)],
    )
    log.info("session %s placed on agent %s for user %s", session.pk, agent.pk, user.pk)
    from agents import services as agent_services

    transaction.on_commit(lambda: agent_services.poke_agent(agent.pk))
    return session


@transaction.atomic
def request_termination(session: Session, reason: str = "user-requested", forced: bool = False) -> Session:
    """Ask the session's kernels to stop: live kernels go TERMINATING (their agent
    stops them and reports back); kernels not yet on an agent are cancelled.
    ``forced`` marks them TERMINATED at once; an agent still running one is told
    to stop it at its next sync."""
    session = Session.objects.select_for_update().get(pk=session.pk)
    now = timezone.now()
    kernels = list(session.kernels.select_for_update())
    agents = set()
    for kernel in kernels:
        if kernel.status in (KernelStatus.PENDING,):
            move_kernel(kernel, KernelStatus.CANCELLED, reason=reason, now=now)
        elif kernel.status not in TERMINAL_KERNEL:
            target = KernelStatus.TERMINATED if forced else KernelStatus.TERMINATING
            if not move_kernel(kernel, target, reason=reason, now=now) and forced:
                move_kernel(kernel, KernelStatus.ERROR, reason=reason, now=now)
            if kernel.agent_id:
                agents.add(kernel.agent_id)
        kernel.save(update_fields=KERNEL_REPORT_FIELDS)
    if refresh_session_status(session, kernels, now):
        session.status_info = reason
        save_session(session)
    from agents import services as agent_services

    for agent_id in agents:
        transaction.on_commit(lambda a=agent_id: agent_services.poke_agent(a))
    return session
