"""The kernel half of the agent protocol (docs/agent-protocol.md): what an agent's
sync or events report moves kernels forward; the sync's answer is the desired
state of the agent's kernels.

This module decides a kernel's next status from an agent's report: a report
becomes a target status (``REPORTED_STATUS``) and goes through the kernel's one
door (``sessions.services.move_kernel``, which refuses what the lifecycle map in
``sessions.lifecycle`` forbids).  The agent row itself (heartbeat, capacity,
images) is ``agents.services.record_heartbeat``.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents import protocol
from agents import services as agent_services
from agents.models import Agent, AgentToken, ContainerRegistry
from backendai import telemetry
from sessions import idle, occupancy, signals, ssh
from sessions import services as session_services
from sessions.lifecycle import (
    AGENT_DESIRED_KERNEL,
    DEAD_SESSION,
    TERMINAL_KERNEL,
    KernelStatus,
    kernel_report_is_behind,
)
from sessions.models import Kernel

log = logging.getLogger(__name__)

MAX_LOG_BYTES = protocol.LOG_LIMIT
# What an agent may report, and the manager-side kernel status it becomes.
REPORTED_STATUS = {
    protocol.ReportedStatus.PULLING.value: KernelStatus.PULLING,
    protocol.ReportedStatus.PREPARING.value: KernelStatus.PREPARING,
    protocol.ReportedStatus.RUNNING.value: KernelStatus.RUNNING,
    protocol.ReportedStatus.TERMINATED.value: KernelStatus.TERMINATED,
    protocol.ReportedStatus.ERROR.value: KernelStatus.ERROR,
}
_FINAL_REPORTS = {s.value for s in protocol.ReportedStatus if s.final}


@transaction.atomic
def sync(token: AgentToken, payload: dict, peer_address: str) -> dict:
    """Record what an agent has and answer what the manager wants (idempotent): the
    agent row (``agents.services.record_heartbeat``), then its kernels' reports,
    then the occupancy recomputed and the desired state read back."""
    agent = agent_services.record_heartbeat(token, payload, peer_address)
    unknown = apply_kernel_reports(agent, payload.get("kernels", []), timezone.now())
    recompute_occupancy([agent.pk])
    return desired_state(agent, unknown)


def apply_kernel_reports(agent: Agent, reports: list[dict], now=None) -> list[dict]:
    """Move manager-side kernels forward from what the agent reports.  Returns
    stop orders for reported kernels the manager does not want.

    Runs inside the caller's transaction, which holds the agent's row.  The
    reported kernels' sessions and then their kernels are locked in primary-key
    order (``sessions.services.lock_sessions``, the lock order every status writer
    follows) before anything is read for a decision, so a destroy that committed
    first is seen, and one that comes later waits: a report can never undo a
    termination.  A report that is merely behind (PULLING for a RUNNING kernel,
    RUNNING for a TERMINATING one) moves nothing and logs nothing; its other
    fields (stats, logs, ports) are still recorded.  A constant number of
    statements whatever the number of kernels: one read, two locks, one bulk
    write of kernels and one of sessions."""
    now = now or timezone.now()
    by_id = {str(r["kernel_id"]): r for r in reports}
    if not by_id:
        return []
    owned = dict(Kernel.objects.filter(pk__in=list(by_id), agent_id=agent.pk).values_list("pk", "session_id"))
    locked = session_services.lock_sessions(set(owned.values()))
    kernels = {str(k.pk): k for _, siblings in locked.values() for k in siblings}
    stop: list[dict] = []
    changed_kernels, touched_sessions = [], {}
    for kernel_id, report in by_id.items():
        kernel = kernels.get(kernel_id)
        reported = report.get("status")
        if kernel is None or kernel.agent_id != agent.pk:
            if reported not in _FINAL_REPORTS:
                stop.append({"kernel_id": kernel_id, "reason": "terminated-unknown-container"})
            continue
        if kernel.status in TERMINAL_KERNEL:
            if reported not in _FINAL_REPORTS:
                stop.append({"kernel_id": kernel_id, "reason": kernel.status_info or "already-terminated"})
            continue
        target = REPORTED_STATUS.get(reported)
        if target is None:
            continue
        if kernel_report_is_behind(kernel.status, target):
            target = KernelStatus(kernel.status)  # a stale report: record what else it says
        if (kernel.status == KernelStatus.RESTARTING and target == KernelStatus.RUNNING
                and report.get("restart_id") != (kernel.status_data or {}).get("restart_id")):
            target = KernelStatus.RESTARTING  # the agent has not applied this restart yet
        reason = report.get("reason") or None
        if target == KernelStatus.TERMINATED and kernel.status != KernelStatus.TERMINATING:
            reason = reason or "self-terminated"
        logs = report.get("last_logs")
        before = kernel.status
        changed = session_services.move_kernel(
            kernel, target, reason=reason, now=now,
            container_id=report.get("container_id") or None,
            service_ports=report.get("service_ports") or None,
            kernel_host=report.get("host") or (agent.addr if target == KernelStatus.RUNNING else None),
            exit_code=report.get("exit_code"),
            container_log=logs[-MAX_LOG_BYTES:] if isinstance(logs, str) and logs else None,
            last_stat=report.get("stats") or None,
        )
        if logs and (kernel.status_data or {}).get("logs_requested_at"):
            kernel.status_data = {**kernel.status_data, "logs_received_at": now.isoformat()}
            changed = True
        if kernel.status == KernelStatus.RUNNING and idle.record_sample(kernel, report.get("stats"), now):
            changed = True
        if changed:
            changed_kernels.append(kernel)
        if kernel.status != before:
            touched_sessions[kernel.session_id] = locked[kernel.session_id]
            log.info("kernel %s of session %s on agent %s is %s", kernel.pk, kernel.session_id, agent.pk, kernel.status)
    if changed_kernels:
        Kernel.objects.bulk_update(changed_kernels, [*session_services.KERNEL_REPORT_FIELDS, "status_data"])
    changed_sessions, freed_groups = [], set()
    for session, siblings in touched_sessions.values():
        if session_services.refresh_session_status(session, siblings, now=now):
            changed_sessions.append(session)
            if session.status in DEAD_SESSION and session.scaling_group_id:
                freed_groups.add(session.scaling_group_id)
    if changed_sessions:
        session_services.save_sessions(changed_sessions)
    if freed_groups:  # capacity came free: a pass now, not at the next tick
        for group in freed_groups:
            transaction.on_commit(lambda g=group: signals.capacity_freed(g))
    return stop


def desired_state(agent: Agent, extra_stop: list[dict] | None = None) -> dict:
    kernels = list(
        Kernel.objects.select_related("session", "session__access_key").filter(agent=agent)
        .filter(status__in=[*AGENT_DESIRED_KERNEL, KernelStatus.TERMINATING])
    )
    registries = {r.registry_name: r for r in ContainerRegistry.objects.filter(
        registry_name__in={k.registry for k in kernels if k.registry})}
    desired, stop, restart, want_logs = [], list(extra_stop or []), [], []
    for kernel in kernels:
        if kernel.status == KernelStatus.TERMINATING:
            stop.append({"kernel_id": str(kernel.pk), "reason": kernel.status_info or "user-requested"})
            continue
        desired.append(kernel_spec(kernel, registries.get(kernel.registry)))
        data = kernel.status_data or {}
        if kernel.status == KernelStatus.RESTARTING:
            restart.append({"kernel_id": str(kernel.pk), "restart_id": data.get("restart_id", "")})
        if data.get("logs_requested_at") and data.get("logs_received_at", "") < data["logs_requested_at"]:
            want_logs.append(str(kernel.pk))
    return {
        "agent_id": agent.pk,
        "status": agent.status,
        "schedulable": agent.schedulable,
        "sync_interval": settings.AGENT_SYNC_INTERVAL,
        "desired": desired,
        "stop": stop,
        "restart": restart,
        "want_logs": want_logs,
    }


def kernel_spec(kernel: Kernel, registry: ContainerRegistry | None) -> dict:
    """One desired kernel in the protocol's shape (``agents.protocol.KernelSpec`` parses it on the agent)."""
    session = kernel.session
    return protocol.desired_kernel(
        kernel_id=str(kernel.pk),
        session_id=str(session.pk),
        session_name=session.name,
        session_type=session.session_type,
        cluster_role=kernel.cluster_role,
        cluster_idx=kernel.cluster_idx,
        cluster_hostname=kernel.cluster_hostname,
        image=kernel.image,
        architecture=kernel.architecture,
        registry=(
            {"url": registry.url, "username": registry.username, "password": registry.password} if registry else None
        ),
        slots=kernel.requested_slots,
        resource_opts=kernel.resource_opts,
        environ=kernel.environ,
        mounts=kernel.mounts,
        service_ports=[
            {"name": p["name"], "protocol": p["protocol"], "container_ports": p["container_ports"]}
            for p in kernel.service_ports
        ],
        startup_command=kernel.startup_command or None,
        bootstrap_script=kernel.bootstrap_script or None,
        batch_timeout=session.batch_timeout,
        ssh_keypair=ssh.kernel_ssh_keypair(kernel),
    )


def record_events(token: AgentToken, agent_id: str, events: list[dict]) -> int:
    """Kernel statuses an agent reports between syncs take the same path as a sync's reports
    (``backendai_event_*{event_name="agent_kernel_events"}``: one per batch an agent posts)."""
    with telemetry.handling_event("agent_kernel_events"), transaction.atomic():
        agent = agent_services.locked_agent(token, agent_id)
        apply_kernel_reports(agent, events)
        recompute_occupancy([agent.pk])
    return len(events)


def recompute_occupancy(agent_ids: list[str]) -> None:
    """Occupied slots are the sum of the live kernels placed on each agent (one statement)."""
    occupancy.rewrite_occupancy(agent_ids)
