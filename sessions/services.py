"""Business rules for sessions and kernels: the only place that changes their
statuses.  Every move is checked against ``sessions.lifecycle``."""
from __future__ import annotations

import logging
import re as _re
import secrets
import socket
import time
from datetime import timedelta
from typing import Iterable

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, F, Func, IntegerField, Q
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent, AgentStatus
from backendai import admission, requestctx, telemetry
from backendai import services as manager_services
from backendai.actions import audited
from backendai.api import errors
from backendai.db import release_connections
from backendai.prepared import Prepared
from backendai.slots import ResourceSlot
from sessions import idle, occupancy, signals, validation
from sessions.enqueue import owner_keypair
from sessions.lifecycle import (
    CONCURRENCY_SESSION,
    DEAD_SESSION,
    OCCUPYING_SESSION,
    RUNNING_SESSION,
    TERMINAL_KERNEL,
    KernelStatus,
    SessionStatus,
    derive_session_status,
    history_entry,
)
from sessions.models import Kernel, ResourcePreset, Session, SessionResult, SessionType

log = logging.getLogger(__name__)


def move_kernel(kernel: Kernel, new_status: str, *, reason: str | None = None, now=None, **fields) -> bool:
    """Move a kernel to ``new_status`` through its door (``Kernel.move_to``: refused
    when the lifecycle forbids it, and then nothing else changes either); set
    ``fields``.  Returns whether anything changed.  The caller saves."""
    changed = False
    if new_status != kernel.status:
        if not kernel.move_to(new_status, reason=reason, now=now):
            return False
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
        if not session.move_to(derived, now=now):
            return False
        main = next((k for k in kernels if k.cluster_role == "main"), kernels[0] if kernels else None)
        if main is not None and main.status_info and derived in (SessionStatus.TERMINATED, SessionStatus.ERROR):
            session.status_info = main.status_info
        if derived in DEAD_SESSION or derived == SessionStatus.ERROR:
            session.terminated_at = session.terminated_at or now
        if derived == SessionStatus.TERMINATED and session.session_type == SessionType.BATCH and main is not None:
            session.result = SessionResult.SUCCESS if main.exit_code == 0 else SessionResult.FAILURE
        changed = True
    return changed


SESSION_STATUS_FIELDS = ["status", "status_changed", "status_history", "status_info", "terminated_at", "result"]


def save_session(session: Session) -> None:
    """Write a session's status fields; the caller holds its row lock (``lock_sessions``)."""
    session.save(update_fields=SESSION_STATUS_FIELDS)


def save_sessions(sessions: list[Session]) -> None:
    """``save_session`` for many, in one statement."""
    if sessions:
        Session.objects.bulk_update(sessions, SESSION_STATUS_FIELDS)


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
        status_history=[history_entry(SessionStatus.PENDING, now), history_entry(SessionStatus.SCHEDULED, now)],
    )
    Kernel.objects.create(
        session=session, agent=agent, agent_addr=agent.addr, image=image, architecture=session.architecture,
        registry=registry, requested_slots=slots, occupied_slots=slots, resource_opts=resource_opts or {},
        environ=environ or {}, mounts=mounts or [], service_ports=service_ports or [],
        startup_command=startup_command or "", status=KernelStatus.SCHEDULED, status_changed=now,
        status_history=[history_entry(KernelStatus.SCHEDULED, now)],
    )
    log.info("session %s placed on agent %s for user %s", session.pk, agent.pk, user.pk)

    transaction.on_commit(lambda: agent_services.poke_agent(agent.pk))
    return session


def lock_sessions(session_ids) -> dict:
    """Lock sessions, then all their kernels, each in primary-key order, and return
    ``{session_id: (session, kernels)}`` (kernels by ``cluster_idx``, each with its
    session attached: no query per kernel).

    This is the one lock order of every writer of statuses that locks rows (an
    agent's sync, a destroy, a restart, the reconcilers before their
    compare-and-set): two of them never wait for each other in a cycle.  Must run
    inside a transaction.  Writers that also write agents (occupancy) do that
    after the sessions' transaction commits, or lock the agent first (the sync).
    On SQLite (embedded mode) the locks are no-ops and ``IMMEDIATE`` transactions
    serialize writers instead."""
    ids = {session_id for session_id in session_ids if session_id}
    if not ids:
        return {}
    sessions = list(Session.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
    kernels = list(Kernel.objects.select_for_update().filter(session_id__in=[s.pk for s in sessions]).order_by("pk"))
    locked = {session.pk: (session, []) for session in sessions}
    for kernel in kernels:
        session, siblings = locked[kernel.session_id]
        kernel.session = session
        siblings.append(kernel)
    for _, siblings in locked.values():
        siblings.sort(key=lambda k: (k.cluster_idx, k.cluster_role))
    return locked


def lock_session(session_id) -> tuple[Session, list[Kernel]]:
    """One session and its kernels, locked (see ``lock_sessions``)."""
    locked = lock_sessions([session_id])
    if session_id not in locked:
        raise errors.object_not_found("session", "The session no longer exists")
    return locked[session_id]


@audited("session", "terminate", "session")
@transaction.atomic
def request_termination(session: Session, reason: str = "user-requested", forced: bool = False, now=None) -> Session:
    """Ask the session's kernels to stop: live kernels go TERMINATING (their agent
    stops them and reports back); kernels not yet on an agent are cancelled.

    ``forced``, and any destroy of a session in ERROR, ends it at once: every kernel
    that is not already ended (ERROR ones included) goes TERMINATED and so does the
    session; an agent still running one is told to stop it at its next sync (its
    report can't bring it back: it is answered with a stop order).  The rows are
    locked first (``lock_sessions``), so an agent's sync that read the kernel
    before waits and then sees the termination."""
    session, kernels = lock_session(session.pk)
    if session.status in DEAD_SESSION:
        return session
    now = now or timezone.now()
    end_now = forced or session.status == SessionStatus.ERROR
    agents, changed = set(), []
    for kernel in kernels:
        moved = False
        if kernel.status == KernelStatus.PENDING:
            moved = move_kernel(kernel, KernelStatus.CANCELLED, reason=reason, now=now)
        elif kernel.status == KernelStatus.ERROR and end_now:
            moved = move_kernel(kernel, KernelStatus.TERMINATED, reason=reason, now=now)
        elif kernel.status not in TERMINAL_KERNEL:
            target = KernelStatus.TERMINATED if end_now else KernelStatus.TERMINATING
            moved = move_kernel(kernel, target, reason=reason, now=now)
            if not moved and end_now:
                moved = move_kernel(kernel, KernelStatus.ERROR, reason=reason, now=now)
        if kernel.agent_id:
            agents.add(kernel.agent_id)
        if moved:
            changed.append(kernel)
    if changed:
        Kernel.objects.bulk_update(changed, KERNEL_REPORT_FIELDS)
    if refresh_session_status(session, kernels, now):
        session.status_info = reason
        save_session(session)
        log.info("session %s is %s (%s%s)", session.pk, session.status, reason, ", forced" if forced else "")
    _after_termination(session, agents, reason)
    return session


def _after_termination(session: Session, agents: set, reason: str) -> None:
    """After the commit: poke the agents, release their slots (occupancy is written
    after the sessions' locks are gone, keeping the lock order), drop the session's
    app routes and, if it ended, let the scheduler use the capacity at once."""
    agent_ids = sorted(agents)
    if agent_ids:
        transaction.on_commit(lambda: occupancy.recompute_agent_occupancy(agent_ids))
        transaction.on_commit(lambda: agent_services.poke_agents(agent_ids))
    # its app routes end with it (the app proxy listens; its periodic sweep converges anyway)
    transaction.on_commit(lambda: signals.ended(session.pk, reason))
    if session.status in DEAD_SESSION:
        group = session.scaling_group_id
        transaction.on_commit(lambda: signals.capacity_freed(group))


# --- lookups and user-facing operations -----------------------------------------------------------

_UUID_RE = _re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def owner_scope(actor, actor_keypair, owner_access_key: str | None):
    """The keypair whose sessions a call addresses (admins may name another)."""
    return owner_keypair(actor, actor_keypair, validation.check_access_key_param(owner_access_key))


def visible_sessions(actor):
    query = Session.objects.all()
    if actor.is_superadmin:
        return query
    if actor.is_domain_admin:
        return query.filter(domain_id=actor.domain_id)
    return query.filter(user=actor)


_session_by_id = Prepared("session by id")
_kernels_of_session = Prepared("kernels of a session")


def get_session(actor, actor_keypair, name_or_id: str, owner_access_key: str | None = None) -> Session:
    """A session by id (dashed or hex) or by name among the keypair's sessions:
    a live one first, else the most recent."""
    validation.check_session_ref(name_or_id)
    keypair = owner_scope(actor, actor_keypair, owner_access_key)
    # the keypair's policy too: the idle checks of GET /session/<s> read it
    query = visible_sessions(actor).select_related("access_key__resource_policy", "scaling_group", "project", "user")
    found = _session_by_id.first(query.filter(pk=name_or_id)) if _UUID_RE.fullmatch(name_or_id) else None
    if found is None:
        named = query.filter(access_key=keypair, name=name_or_id)
        found = (named.exclude(status__in=DEAD_SESSION).order_by("-created_at").first()
                 or named.order_by("-created_at").first())
    if found is None:
        raise errors.object_not_found("session", f"No session {name_or_id!r}")
    requestctx.bind(session_id=found.pk)  # the request's later log lines name the session
    return found


def match_sessions(actor, actor_keypair, prefix: str, limit: int = 10) -> list[Session]:
    validation.check_session_ref(prefix, "id")
    query = visible_sessions(actor).filter(access_key=actor_keypair or actor.main_keypair)
    by_name = list(query.filter(name__startswith=prefix).order_by("-created_at")[:limit])
    by_id = []
    hex_prefix = prefix.replace("-", "").lower()
    if _re.fullmatch(r"[0-9a-f]{4,32}", hex_prefix):
        by_id = [s for s in query.order_by("-created_at")[:500] if s.pk.hex.startswith(hex_prefix)]
    seen, result = set(), []
    for s in by_id + by_name:
        if s.pk not in seen:
            seen.add(s.pk)
            result.append(s)
    return result[:limit]


@audited("session", "destroy", "session")
def destroy(actor, session: Session, forced: bool = False, recursive: bool = False) -> list[Session]:
    """User-facing destroy: PENDING is cancelled, live sessions terminate through
    their agent, ``forced`` ends them at once, and so does any destroy of a session
    in ERROR (as in Backend.AI).  A session whose agent is LOST goes TERMINATING
    and is ended by the reconciler once ``AGENT_LOST_GRACE`` has passed (or at once
    when forced).  ``recursive`` also destroys sessions that depend on this one."""
    targets = [session]
    if recursive:
        frontier = [session.pk]
        seen = {session.pk}
        while frontier:
            dependents = list(Session.objects.filter(dependency_links__depends_on__in=frontier).exclude(pk__in=seen))
            frontier = [d.pk for d in dependents]
            seen.update(frontier)
            targets.extend(dependents)
    for target in targets:
        if target.status in DEAD_SESSION:
            continue
        if target.status == SessionStatus.TERMINATING and not forced:
            continue
        reason = "force-terminated" if forced else "user-requested"
        request_termination(target, reason, forced=forced)
    for target in targets:
        target.refresh_from_db()
    return targets


@audited("session", "restart", "session")
@transaction.atomic
def restart(session: Session) -> None:
    session, kernels = lock_session(session.pk)
    if session.status not in RUNNING_SESSION:
        raise errors.GenericForbidden(f"Only running sessions can be restarted (this one is {session.status})")
    now = timezone.now()
    changed = []
    for kernel in kernels:
        if move_kernel(kernel, KernelStatus.RESTARTING, reason="restarting", now=now):
            kernel.status_data = {**(kernel.status_data or {}), "restart_id": now.isoformat()}
            changed.append(kernel)
    if changed:
        Kernel.objects.bulk_update(changed, [*KERNEL_REPORT_FIELDS, "status_data"])
    if refresh_session_status(session, kernels, now):
        save_session(session)

    for agent_id in {k.agent_id for k in kernels if k.agent_id}:
        transaction.on_commit(lambda a=agent_id: agent_services.poke_agent(a))


@audited("session", "rename", "session")
def rename(session: Session, new_name: str) -> Session:
    validation.check_new_name(new_name)
    if session.status in DEAD_SESSION:
        raise errors.GenericForbidden("A finished session cannot be renamed")
    clash = Session.objects.filter(access_key_id=session.access_key_id, name=new_name).exclude(status__in=DEAD_SESSION)
    if clash.exclude(pk=session.pk).exists():
        raise errors.SessionAlreadyExists(f"You already have a session named {new_name!r}")
    Session.objects.filter(pk=session.pk).update(name=new_name)
    session.name = new_name
    return session


def request_logs(session: Session) -> None:
    """Ask the agent for fresh logs of the session's main kernel (answered on its next sync)."""
    with transaction.atomic():  # the kernel's row lock: a sync's write of status_data can't be lost, nor lose this
        kernel = session.kernels.select_for_update().filter(cluster_role="main").first()
        if kernel is None or not kernel.agent_id or kernel.status in TERMINAL_KERNEL:
            return
        data = dict(kernel.status_data or {})
        data["logs_requested_at"] = timezone.now().isoformat()
        Kernel.objects.filter(pk=kernel.pk).update(status_data=data)
    agent_services.poke_agent(kernel.agent_id)


def logs_of(session: Session, wait_seconds: float = 5.0) -> str:
    """The container log of the main kernel: fresh from the agent when it is alive."""
    kernel = session.kernels.filter(cluster_role="main").first()
    if kernel is None:
        return ""
    if kernel.status in TERMINAL_KERNEL or not kernel.agent_id:
        return kernel.container_log or ""
    request_logs(session)
    asked = timezone.now()
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        kernel.refresh_from_db(fields=["container_log", "status_data", "status"])
        received = (kernel.status_data or {}).get("logs_received_at")
        if received and received >= asked.isoformat():
            break
        release_connections()  # no pooled connection held while the agent uploads the log
        with admission.waiting():
            time.sleep(0.2)
    return kernel.container_log or ""


def apps_of(session: Session, kernel: Kernel | None = None) -> list[dict]:
    """Service ports of the main kernel (``kernel`` when the caller has it) in the shape the client's
    ``apps`` reads."""
    if kernel is None:
        kernel = session.kernels.filter(cluster_role="main").first()
    apps = []
    for port in (kernel.service_ports if kernel else []) or []:
        entry = {"name": port["name"], "protocol": port["protocol"], "ports": port["container_ports"]}
        if port.get("url_template"):
            entry["url_template"] = port["url_template"]
        for key in ("allowed_arguments", "allowed_envs"):
            if key in port:
                entry[key] = port[key]
        apps.append(entry)
    return apps


def info(session: Session) -> dict:
    """``GET /session/{s}``: the camelCase dict of Backend.AI's get_info.  The kernels with their agents
    are read once (one statement, however many kernels) and serve the idle checks, the service ports
    and the agents' state."""
    kernels = _kernels_of_session.prefetch(session, "kernels",
                                           Kernel.objects.select_related("agent").filter(session_id=session.pk))
    kernel = next((k for k in kernels if k.cluster_role == "main"), None)
    now = timezone.now()
    end = session.terminated_at or now
    return {
        "sessionId": str(session.pk),
        "sessionName": session.name,
        "domainName": session.domain_id,
        "groupId": str(session.project_id),
        "userId": str(session.user_id),
        "ownerAccessKey": session.access_key_id,
        "type": session.session_type.upper(),
        "image": session.image,
        "architecture": session.architecture,
        "registry": kernel.registry if kernel else "",
        "tag": session.tag,
        "containerId": kernel.container_id if kernel else "",
        "agentIds": session.agent_ids,
        "scalingGroup": session.scaling_group_id,
        "occupiedSlots": session.occupying_slots,
        "occupyingSlots": session.occupying_slots,
        "requestedSlots": session.requested_slots,
        "environ": session.environ,
        "resourceOpts": session.resource_opts,
        "status": session.status,
        "statusInfo": session.status_info,
        "statusData": session.status_data,
        "statusHistory": session.status_history,
        "result": session.result.upper(),
        "age": int((end - session.created_at).total_seconds() * 1000),
        "creationTime": session.created_at.isoformat(),
        "terminationTime": session.terminated_at.isoformat() if session.terminated_at else None,
        "numQueriesExecuted": session.num_queries,
        "lastStat": (kernel.last_stat if kernel else None) or session.last_stat,
        "idleChecks": idle_checks(session, now),
        "servicePorts": apps_of(session, kernel) if kernel else [],
        "agents": _agents_state({k.agent for k in kernels if k.agent_id}),
    }


def agents_of(session: Session) -> list[dict]:
    """The agents the session's kernels are on, with their state: a LOST one means its
    kernels can't be reached, and the session is ended ``AGENT_LOST_GRACE`` seconds
    after ``lostAt`` unless the agent comes back."""
    ids = {a for a in session.kernels.exclude(agent_id=None).values_list("agent_id", flat=True)}
    return _agents_state(Agent.objects.filter(pk__in=ids))


def _agents_state(agents: Iterable[Agent]) -> list[dict]:
    return [{"id": a.pk, "status": a.status, "lostAt": a.lost_at.isoformat() if a.lost_at else None}
            for a in sorted(agents, key=lambda a: a.pk)]


def idle_checks(session: Session, now=None) -> dict:
    """Remaining seconds per idle checker (negative: expired); see sessions.idle."""
    return idle.report(session, now or timezone.now())


# --- usage and presets ------------------------------------------------------------------------------



def concurrency_by_keypair(access_keys) -> dict[str, int]:
    """``{access_key: n}``: each keypair's sessions holding one of its concurrency slots
    (``CONCURRENCY_SESSION``, what the scheduler counts against max_concurrent_sessions); one query."""
    counts = dict(Session.objects.filter(access_key_id__in=list(access_keys), status__in=CONCURRENCY_SESSION)
                  .order_by().values("access_key_id").annotate(n=Count("id")).values_list("access_key_id", "n"))
    return {key: counts.get(key, 0) for key in access_keys}


def usage(**filters):
    """Slots occupied by live sessions matching ``filters`` (recomputed, never counted down)."""
    total = ResourceSlot()
    for slots in Session.objects.filter(status__in=OCCUPYING_SESSION, **filters).values_list(
            "requested_slots", flat=True):
        total = total + ResourceSlot.from_json(slots)
    return total


def check_presets(user, keypair, project, scaling_group_name: str | None = None) -> dict:
    """What ``POST /resource/check-presets`` answers: limits, usage, remaining, and
    which presets fit right now."""
    slot_types = manager_services.known_slot_types()
    policy = keypair.resource_policy
    kp_limits = ResourceSlot.from_policy(policy.total_resource_slots, policy.default_for_unspecified, slot_types)
    kp_using = usage(access_key=keypair)
    group_limits = ResourceSlot.from_policy(project.total_resource_slots, "UNLIMITED", slot_types)
    group_using = usage(project=project)
    group_remaining = group_limits - group_using
    kp_remaining = ResourceSlot.minimum(kp_limits - kp_using, group_remaining)
    groups = list(agent_services.allowed_scaling_groups(user, project))
    if scaling_group_name:
        groups = [g for g in groups if g.pk == scaling_group_name]
        if not groups:
            raise errors.InvalidAPIParameters(f"Scaling group {scaling_group_name!r} is not allowed for you")
    rows = agent_services.group_capacity(groups)

    agent_free = [ResourceSlot.from_json(a) - ResourceSlot.from_json(o) for a, o in Agent.objects.filter(
        scaling_group__in=groups, status=AgentStatus.ALIVE, schedulable=True).values_list(
        "available_slots", "occupied_slots")]
    sg_remaining = ResourceSlot()
    for row in rows:
        sg_remaining = sg_remaining + row["free"]
    presets = []
    query = ResourcePreset.objects.filter(models_q_preset(groups))
    for preset in query:
        request = ResourceSlot.from_json(preset.resource_slots, slot_types)
        allocatable = request <= kp_remaining and any(request <= free for free in agent_free)
        presets.append({"name": preset.name, "resource_slots": request.to_json(),
                        "shared_memory": str(preset.shared_memory) if preset.shared_memory is not None else None,
                        "allocatable": allocatable})
    return {
        "keypair_limits": kp_limits.to_json(),
        "keypair_using": kp_using.to_json(),
        "keypair_remaining": kp_remaining.to_json(),
        "group_limits": group_limits.to_json(),
        "group_using": group_using.to_json(),
        "group_remaining": group_remaining.to_json(),
        "scaling_group_remaining": sg_remaining.to_json(),
        "scaling_groups": {row["group"].pk: {"using": row["occupied"].to_json(), "remaining": row["free"].to_json()}
                           for row in rows},
        "presets": presets,
    }


def models_q_preset(groups):
    return Q(scaling_group__isnull=True) | Q(scaling_group__in=groups)


# --- webhooks ---------------------------------------------------------------------------------------

CALLBACK_EVENTS = {
    SessionStatus.PENDING: "enqueued", SessionStatus.SCHEDULED: "scheduled", SessionStatus.PREPARING: "preparing",
    SessionStatus.RUNNING: "started", SessionStatus.TERMINATING: "terminating",
    SessionStatus.TERMINATED: "terminated", SessionStatus.CANCELLED: "cancelled", SessionStatus.ERROR: "failure",
}


#: Delivery attempts of one session's callbacks before giving up, and the backoff between them.
CALLBACK_CONNECT_TIMEOUT = 3.0
CALLBACK_TIMEOUT = 5.0


class CallbackRefused(Exception):
    """A callback URL that must not be (or can no longer be) delivered to."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def callback_backoff(attempts: int) -> float:
    """Seconds to wait after ``attempts`` failures in a row: 10 s, 20 s, 40 s ... at most an hour."""
    return min(settings.CALLBACK_BACKOFF_BASE * 2 ** max(attempts - 1, 0), settings.CALLBACK_BACKOFF_CAP)


def resolve_callback_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def checked_callback_address(host: str, addresses: list[str]) -> str:
    """The address to connect to for ``host``, when every address it resolved to is one
    callbacks may reach; a single forbidden one refuses the host (DNS rebinding)."""
    refused = [a for a in addresses if not validation.address_allowed(a.split("%")[0])]
    if refused:
        raise CallbackRefused(f"{host} resolves to {', '.join(refused)}, which callbacks may not reach "
                              "(CALLBACK_ALLOWED_NETWORKS)")
    return addresses[0]


def callback_target(url_text: str):
    """``(url to connect to, headers, extensions)`` for a callback URL: the host is resolved
    once, every address it has is checked against ``CALLBACK_ALLOWED_NETWORKS``, and the
    connection goes to that checked address (so a second DNS answer can't swap it), with
    the original ``Host`` header (and TLS server name, for https)."""
    try:
        url = validation.parse_callback_url(url_text)
    except ValidationError as exc:
        raise CallbackRefused(f"invalid callback URL: {exc.messages[0]}", permanent=True) from None
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    literal = validation.ip_literal(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = resolve_callback_host(url.raw_host.decode("ascii"), port)
        except (OSError, UnicodeError, socket.gaierror) as exc:
            raise CallbackRefused(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise CallbackRefused(f"{host} has no address")
    address = checked_callback_address(host, addresses)
    host_header = url.netloc.decode("ascii")
    pinned = url.copy_with(host=address)
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" and literal is None else {}
    return pinned, {"Host": host_header}, extensions


def _post_callback(client, session: Session, body: dict) -> None:
    target, headers, extensions = callback_target(session.callback_url)
    try:
        response = client.post(target, json=body, headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        raise CallbackRefused(f"{type(exc).__name__}: {exc}") from None
    if not 200 <= response.status_code < 300:
        where = f" to {response.headers.get('location', '')[:200]}" if response.is_redirect else ""
        raise CallbackRefused(f"HTTP {response.status_code}{where} (redirects are not followed)"
                              if response.is_redirect else f"HTTP {response.status_code}")


def _pending_callbacks(now, limit: int):
    class JSONArrayLength(Func):
        output_field = IntegerField()

        def as_sql(self, compiler, connection, **extra):
            function = "jsonb_array_length" if connection.vendor == "postgresql" else "json_array_length"
            return super().as_sql(compiler, connection, function=function, **extra)

    return list(
        Session.objects.exclude(callback_url="").filter(callback_gave_up_at__isnull=True)
        .filter(Q(callback_next_attempt_at__isnull=True) | Q(callback_next_attempt_at__lte=now))
        .annotate(history_length=JSONArrayLength("status_history"))
        .filter(history_length__gt=F("callbacks_delivered"))
        .only("id", "callback_url", "status_history", "callbacks_delivered", "callback_attempts")
        .order_by("status_changed")[:limit])


def deliver_callbacks(limit: int = 200, timeout: float | None = None, now=None) -> int:
    """POST ``{type: "session_lifecycle", event, session_id, when}`` to each session's
    callback URL for every history entry not yet delivered (at least once, in order).

    Each session is delivered on its own: a failure (refused address, connection
    error, non-2xx, a redirect, which is never followed) is recorded on that
    session (``callback_attempts``, ``callback_last_error``) and retried after an
    exponential backoff (``callback_next_attempt_at``); after
    ``CALLBACK_MAX_ATTEMPTS`` failures in a row, or at once for a URL that can't be
    parsed, deliveries to it stop (``callback_gave_up_at``).  Nothing raises out of
    the batch, so one bad URL never holds up the others."""
    now = now or timezone.now()
    delivered = 0
    client_timeout = httpx.Timeout(timeout or CALLBACK_TIMEOUT, connect=CALLBACK_CONNECT_TIMEOUT)
    with httpx.Client(timeout=client_timeout, follow_redirects=False, trust_env=False) as client:
        for session in _pending_callbacks(now, limit):
            try:
                delivered += _deliver_one(client, session, now)
            except Exception:  # noqa: BLE001 - one session's failure must not stop the batch
                log.exception("callback delivery for session %s failed unexpectedly", session.pk)
                _record_callback_failure(session, session.callbacks_delivered, "internal error", now)
    return delivered


def _deliver_one(client, session: Session, now) -> int:
    delivered, sent, error = 0, session.callbacks_delivered, None
    if session.callback_attempts:  # an earlier delivery failed: this is a retry
        telemetry.observe_retry("webhook", "session_lifecycle")
    for entry in session.status_history[session.callbacks_delivered:]:
        event = CALLBACK_EVENTS.get(entry.get("status")) if isinstance(entry, dict) else None
        if event is not None:
            try:
                with telemetry.layer_operation("webhook", "session_lifecycle"):
                    _post_callback(client, session, {"type": "session_lifecycle", "event": event,
                                                     "session_id": str(session.pk), "when": entry.get("timestamp")})
            except CallbackRefused as exc:
                error = exc
                break
            delivered += 1
        sent += 1
    if error is not None:
        log.info("callback for session %s to %s failed: %s", session.pk, session.callback_url[:200], error)
        _record_callback_failure(session, sent, str(error), now, permanent=error.permanent)
    else:
        Session.objects.filter(pk=session.pk, callbacks_delivered=session.callbacks_delivered).update(
            callbacks_delivered=sent, callback_attempts=0, callback_next_attempt_at=None, callback_last_error="")
    return delivered


def _record_callback_failure(session: Session, sent: int, message: str, now, permanent: bool = False) -> None:
    attempts = session.callback_attempts + 1
    give_up = permanent or attempts >= settings.CALLBACK_MAX_ATTEMPTS
    Session.objects.filter(pk=session.pk, callbacks_delivered=session.callbacks_delivered).update(
        callbacks_delivered=sent, callback_attempts=attempts, callback_last_error=message[:512],
        callback_next_attempt_at=None if give_up else now + timedelta(seconds=callback_backoff(attempts)),
        callback_gave_up_at=now if give_up else None)
    if give_up:
        log.warning("gave up delivering callbacks of session %s after %d attempt(s): %s", session.pk, attempts, message)


@audited("session", "terminate-idle", when=bool)
def terminate_idle(now=None) -> int:
    expired = idle.find_idle(now)
    for session, reason in expired:
        log.info("session %s idle (%s): terminating", session.pk, reason)
        request_termination(session, reason)
        telemetry.observe_sweep("session", 1, reason="idle")
    return len(expired)


def groups_with_pending() -> list[str]:
    return list(Session.objects.filter(status=SessionStatus.PENDING, scaling_group__isnull=False)
                .values_list("scaling_group_id", flat=True).distinct().order_by())


def touch_session(session_id, when) -> None:
    """Record user activity (terminals, apps) for the network idle check; never moves it back."""
    Session.objects.filter(pk=session_id).filter(Q(last_access__isnull=True) | Q(last_access__lt=when)).update(
        last_access=when)
