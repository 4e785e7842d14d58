"""Business rules for agents: tokens, the sync protocol (docs/agent-protocol.md),
liveness, images and registries.  Views, admin actions and tasks call these."""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.models import (
    Agent,
    AgentStatus,
    AgentToken,
    ContainerRegistry,
    Image,
    ScalingGroup,
)
from backendai import hints
from backendai import services as manager_services
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError
from sessions import idle
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

TOKEN_PREFIX = "bat_"
MAX_LOG_BYTES = 64 * 1024
# What an agent may report, and the manager-side kernel status it becomes.
REPORTED_STATUS = {
    "PULLING": KernelStatus.PULLING,
    "PREPARING": KernelStatus.PREPARING,
    "RUNNING": KernelStatus.RUNNING,
    "TERMINATED": KernelStatus.TERMINATED,
    "ERROR": KernelStatus.ERROR,
}


# --- scaling groups ---------------------------------------------------------------------------

SCHEDULER_OPT_KEYS = {"allowed_session_types", "pending_timeout", "config", "agent_selection_strategy",
                      "agent_selector_config"}


def validate_scheduler_opts(opts) -> dict:
    """Normalise a scaling group's scheduler options or raise ValueError naming the bad key."""
    from agents.models import SESSION_TYPES, AgentSelectionStrategy

    if not isinstance(opts, dict):
        raise ValueError("scheduler options must be a JSON object")
    unknown = set(opts) - SCHEDULER_OPT_KEYS
    if unknown:
        raise ValueError(f"unknown scheduler option(s): {', '.join(sorted(unknown))}")
    clean = dict(opts)
    types = clean.setdefault("allowed_session_types", ["interactive", "batch"])
    if not isinstance(types, list) or not types or any(t not in SESSION_TYPES for t in types):
        raise ValueError(f"allowed_session_types must be a non-empty list of {', '.join(SESSION_TYPES)}")
    timeout = clean.setdefault("pending_timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ValueError("pending_timeout must be a number of seconds >= 0 (0 disables it)")
    config = clean.setdefault("config", {})
    if not isinstance(config, dict):
        raise ValueError("config must be a JSON object")
    retries = config.get("num_retries_to_skip", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError("config.num_retries_to_skip must be an integer >= 0")
    strategy = clean.setdefault("agent_selection_strategy", AgentSelectionStrategy.DISPERSED.value)
    if strategy not in AgentSelectionStrategy.values:
        raise ValueError(f"agent_selection_strategy must be one of {', '.join(AgentSelectionStrategy.values)}")
    clean.setdefault("agent_selector_config", {})
    return clean


# --- tokens -----------------------------------------------------------------------------------

def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def issue_token(name: str, *, agent_id: str = "", scaling_group: ScalingGroup | None = None) -> tuple[AgentToken, str]:
    """A new agent token; the raw value is returned once and only its hash is kept."""
    if bool(agent_id) == bool(scaling_group):
        raise errors.InvalidAPIParameters("Bind the token to exactly one agent id or one scaling group")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = AgentToken.objects.create(
        name=name, token_hash=hash_token(raw), token_prefix=raw[:12], agent_id=agent_id, scaling_group=scaling_group
    )
    log.info("issued agent token %s (%s)", token.pk, token)
    return token, raw


def revoke_tokens(tokens) -> int:
    return AgentToken.objects.filter(pk__in=[t.pk for t in tokens], revoked_at__isnull=True).update(revoked_at=timezone.now())


def token_for(raw: str) -> AgentToken | None:
    token = AgentToken.objects.filter(token_hash=hash_token(raw)).select_related("scaling_group").first()
    if token is None or token.revoked_at is not None:
        return None
    return token


def check_token_allows(token: AgentToken, agent_id: str, scaling_group: str | None) -> None:
    if token.agent_id:
        if token.agent_id != agent_id:
            raise errors.GenericForbidden(f"This token is bound to agent {token.agent_id}")
    elif scaling_group is not None and token.scaling_group_id != scaling_group:
        raise errors.GenericForbidden(f"This token does not allow scaling group {scaling_group}")


# --- sync -------------------------------------------------------------------------------------

def _slots_json(value: dict, slot_types: dict) -> dict:
    try:
        return ResourceSlot.from_json(value or {}, slot_types).to_json()
    except SlotError as exc:
        raise errors.InvalidAPIParameters(f"capacity: {exc}") from None


@transaction.atomic
def sync(token: AgentToken, payload: dict, peer_address: str) -> dict:
    """Record what an agent has and answer what the manager wants (idempotent)."""
    agent_id = payload["agent_id"]
    group_name = payload["scaling_group"]
    check_token_allows(token, agent_id, group_name)
    group = ScalingGroup.objects.filter(pk=group_name).first()
    if group is None:
        raise errors.object_not_found("scaling group", f"Scaling group {group_name!r} does not exist")
    slot_types = {**manager_services.known_slot_types(), **payload.get("slot_types", {})}
    capacity = _slots_json(payload["capacity"], slot_types)
    now = timezone.now()
    agent = Agent.objects.select_for_update().filter(pk=agent_id).first()
    fields = dict(
        region=payload.get("region", ""), scaling_group=group, available_slots=capacity,
        slot_types=payload.get("slot_types", {}), addr=payload.get("address") or peer_address,
        public_host=payload.get("public_host") or payload.get("address") or peer_address,
        version=payload.get("version", ""), architecture=payload.get("architecture", "x86_64"),
        backend=payload.get("backend", "docker"), compute_plugins=payload.get("compute_plugins", {}),
        devices=payload.get("devices", []), live_stat=payload.get("stats", {}), last_heartbeat=now,
    )
    if agent is None:
        agent = Agent.objects.create(id=agent_id, status=AgentStatus.ALIVE, status_changed=now, **fields)
        log.info("agent %s registered in scaling group %s from %s", agent_id, group_name, peer_address)
    else:
        for name, value in fields.items():
            setattr(agent, name, value)
        if agent.status != AgentStatus.ALIVE:
            log.info("agent %s revived (was %s)", agent_id, agent.status)
            agent.status, agent.status_changed, agent.lost_at = AgentStatus.ALIVE, now, None
        agent.save()
    if token.agent_id == "" or token.last_used is None or now - token.last_used > timedelta(minutes=1):
        AgentToken.objects.filter(pk=token.pk).update(last_used=now)
    manager_services.register_slot_types(payload.get("slot_types", {}))
    record_local_images(agent, payload.get("images", []))
    unknown = apply_kernel_reports(agent, payload.get("kernels", []), now)
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
            if reported not in ("TERMINATED", "ERROR"):
                stop.append({"kernel_id": kernel_id, "reason": "terminated-unknown-container"})
            continue
        if kernel.status in TERMINAL_KERNEL:
            if reported not in ("TERMINATED", "ERROR"):
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
        from sessions import events

        for group in freed_groups:
            transaction.on_commit(lambda g=group: events.session_changed(None, g, terminated=True))
    return stop


def desired_state(agent: Agent, extra_stop: list[dict] | None = None) -> dict:
    kernels = list(
        Kernel.objects.select_related("session").filter(agent=agent)
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
    session = kernel.session
    return {
        "kernel_id": str(kernel.pk),
        "session_id": str(session.pk),
        "session_name": session.name,
        "session_type": session.session_type,
        "cluster_role": kernel.cluster_role,
        "cluster_idx": kernel.cluster_idx,
        "cluster_hostname": kernel.cluster_hostname,
        "image": kernel.image,
        "architecture": kernel.architecture,
        "registry": (
            {"url": registry.url, "username": registry.username, "password": registry.password} if registry else None
        ),
        "slots": kernel.requested_slots,
        "resource_opts": kernel.resource_opts,
        "environ": kernel.environ,
        "mounts": kernel.mounts,
        "service_ports": [
            {"name": p["name"], "protocol": p["protocol"], "container_ports": p["container_ports"]}
            for p in kernel.service_ports
        ],
        "startup_command": kernel.startup_command or None,
        "bootstrap_script": kernel.bootstrap_script or None,
        "batch_timeout": session.batch_timeout,
    }


def record_events(token: AgentToken, agent_id: str, events: list[dict]) -> int:
    check_token_allows(token, agent_id, None)
    with transaction.atomic():
        agent = Agent.objects.select_for_update().filter(pk=agent_id).first()
        if agent is None:
            raise errors.object_not_found("agent", f"Agent {agent_id} has not synced yet")
        if token.scaling_group_id and agent.scaling_group_id != token.scaling_group_id:
            raise errors.GenericForbidden("This token does not allow this agent's scaling group")
        apply_kernel_reports(agent, events)
        recompute_occupancy([agent.pk])
    return len(events)


def shutdown(token: AgentToken, agent_id: str) -> None:
    check_token_allows(token, agent_id, None)
    now = timezone.now()
    query = Agent.objects.filter(pk=agent_id)
    if token.scaling_group_id:
        query = query.filter(scaling_group_id=token.scaling_group_id)
    if query.update(status=AgentStatus.TERMINATED, status_changed=now):
        log.info("agent %s shut down cleanly", agent_id)


def recompute_occupancy(agent_ids: list[str]) -> None:
    """Occupied slots are the sum of the live kernels placed on each agent (one statement)."""
    from sessions.scheduler import recompute_agent_occupancy

    recompute_agent_occupancy(agent_ids)


# --- liveness ---------------------------------------------------------------------------------

def mark_lost_agents(timeout_seconds: float | None = None, now=None) -> int:
    """ALIVE agents silent for longer than the heartbeat timeout become LOST.

    An agent whose sync is in flight (its row locked) is skipped, not marked: it is
    alive, only slow.  Its sessions stay as they are, shown with the agent's state,
    until ``AGENT_LOST_GRACE`` has passed (the session reconciler then ends them)."""
    timeout = timedelta(seconds=timeout_seconds if timeout_seconds is not None else settings.AGENT_HEARTBEAT_TIMEOUT)
    now = now or timezone.now()
    with transaction.atomic():
        ids = list(Agent.objects.select_for_update(skip_locked=True)
                   .filter(status=AgentStatus.ALIVE, last_heartbeat__lt=now - timeout)
                   .order_by("pk").values_list("pk", flat=True))
        count = Agent.objects.filter(pk__in=ids).update(status=AgentStatus.LOST, status_changed=now, lost_at=now)
    for agent_id in ids:
        log.warning("agent %s is LOST (no sync for %s s); its sessions end in %s s unless it comes back",
                    agent_id, timeout.total_seconds(), settings.AGENT_LOST_GRACE)
    return count


def set_schedulable(agents, schedulable: bool) -> int:
    return Agent.objects.filter(pk__in=[a.pk for a in agents]).update(schedulable=schedulable)


def poke_agent(agent_id: str) -> None:
    """Hint an agent to sync now, from any process (best effort: syncs converge anyway)."""
    hints.hint_agents([agent_id])


def poke_agents(agent_ids) -> None:
    """Poke several agents in one go (after a scheduler pass); ``backendai.hints`` says how it travels."""
    hints.hint_agents(agent_ids)


agent_group = hints.agent_group


# --- images -----------------------------------------------------------------------------------

def split_image_name(name: str) -> tuple[str, str, str]:
    """``registry/repo:tag`` -> (registry, repository, tag); registry is '' for local names."""
    ref, _, digest = name.partition("@")
    head, _, last = ref.rpartition("/")
    if ":" in last:
        last, _, tag = last.rpartition(":")
    else:
        tag = "latest"
    path = f"{head}/{last}" if head else last
    first, _, rest = path.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return "", path, tag


def image_fields_from_labels(labels: dict) -> dict:
    from agents.registry import parse_resource_limits, parse_service_ports

    try:
        ports = parse_service_ports(labels.get("ai.backend.service-ports", ""))
    except ValueError as exc:
        log.warning("bad service-ports label %r: %s", labels.get("ai.backend.service-ports"), exc)
        ports = []
    try:
        resources = parse_resource_limits(labels)
    except ValueError as exc:
        log.warning("bad resource labels: %s", exc)
        resources = {}
    role = (labels.get("ai.backend.role") or "COMPUTE").lower()
    return {
        "labels": labels,
        "service_ports": ports,
        "resources": resources,
        "type": role if role in ("compute", "system", "service") else "compute",
        "accelerators": labels.get("ai.backend.accelerators", ""),
    }


def record_local_images(agent: Agent, images: list[dict]) -> None:
    """Upsert the images an agent holds and remember which agents hold them."""
    fingerprint = hashlib.sha256(json.dumps(images, sort_keys=True).encode()).hexdigest()
    if agent.live_stat.get("_images_fingerprint") == fingerprint:
        return
    names = [(i["name"], i.get("architecture") or agent.architecture) for i in images if i.get("name")]
    existing = {(im.name, im.architecture): im for im in Image.objects.filter(name__in=[n for n, _ in names])}
    held = []
    for info in images:
        if not info.get("name"):
            continue
        arch = info.get("architecture") or agent.architecture
        registry_name, repository, tag = split_image_name(info["name"])
        fields = image_fields_from_labels(info.get("labels") or {})
        fields.update(config_digest=info.get("digest", "")[:100], size_bytes=int(info.get("size") or 0),
                      registry_name=registry_name, repository=repository, tag=tag)
        image = existing.get((info["name"], arch))
        if image is None:
            image = Image.objects.create(name=info["name"], architecture=arch, is_local=not registry_name, **fields)
        else:
            for name, value in fields.items():
                setattr(image, name, value)
            image.save()
        held.append(image)
    agent.images.set(held)
    agent.live_stat = {**agent.live_stat, "_images_fingerprint": fingerprint}
    Agent.objects.filter(pk=agent.pk).update(live_stat=agent.live_stat)


def rescan_registry(registry: ContainerRegistry) -> dict:
    """Read every image of a registry over the Docker Registry HTTP API v2."""
    from agents.registry import RegistryClient, RegistryError

    client = RegistryClient(registry.url, username=registry.username or None, password=registry.password or None,
                            verify_tls=registry.ssl_verify, registry_name=registry.registry_name)
    repositories = None
    try:
        if registry.project:
            repositories = [r for r in client.catalog() if r.startswith(registry.project.rstrip("/") + "/")]
        result = client.scan(repositories)
    except RegistryError as exc:
        ContainerRegistry.objects.filter(pk=registry.pk).update(last_scanned_at=timezone.now(),
                                                                last_scan_result=f"error: {exc}")
        raise errors.InvalidAPIParameters(f"Cannot scan {registry.registry_name}: {exc}") from None
    count = 0
    for info in result.images:
        fields = image_fields_from_labels(info.labels or {})
        fields.update(registry=registry, registry_name=info.registry or registry.registry_name,
                      repository=info.repository, tag=info.tag, config_digest=(info.digest or "")[:100],
                      size_bytes=info.size or 0, is_local=False)
        Image.objects.update_or_create(name=info.canonical, architecture=info.architecture or "x86_64",
                                       defaults=fields)
        count += 1
    summary = f"{count} image(s), {len(result.errors)} error(s)"
    ContainerRegistry.objects.filter(pk=registry.pk).update(last_scanned_at=timezone.now(), last_scan_result=summary)
    log.info("rescanned registry %s: %s", registry.registry_name, summary)
    return {"images": count, "errors": [f"{where}: {message}" for where, message in result.errors]}


# --- what users see ---------------------------------------------------------------------------

def allowed_scaling_groups(user, project=None):
    """The union of the groups allowed for the user's domain, project(s) and keypairs."""
    from django.db.models import Q

    projects = [project] if project is not None else list(user.projects.all())
    query = ScalingGroup.objects.filter(is_active=True).filter(
        Q(domains=user.domain_id) | Q(projects__in=projects) | Q(keypairs__user=user)
    ).distinct()
    if not (user.is_superadmin or user.is_domain_admin):
        query = query.filter(is_public=True)
    return query


def group_capacity(groups) -> list[dict]:
    """Free capacity per scaling group from its ALIVE, schedulable agents (one query)."""
    totals = {g.pk: {"group": g, "agents": 0, "local_agents": 0, "capacity": ResourceSlot(), "occupied": ResourceSlot()}
              for g in groups}
    for group_id, available, occupied, backend in Agent.objects.filter(
            scaling_group_id__in=list(totals), status=AgentStatus.ALIVE, schedulable=True).values_list(
            "scaling_group_id", "available_slots", "occupied_slots", "backend"):
        row = totals[group_id]
        row["agents"] += 1
        row["local_agents"] += backend == LOCAL_PROCESS_BACKEND
        row["capacity"] = row["capacity"] + ResourceSlot.from_json(available)
        row["occupied"] = row["occupied"] + ResourceSlot.from_json(occupied)
    rows = []
    for row in totals.values():
        free = row["capacity"] - row["occupied"]
        rows.append({**row, "free": free})
    return rows


LOCAL_PROCESS_BACKEND = "local"  # the agent daemon's --backend local: processes, no container isolation


def local_process_agents(agent_ids) -> list[str]:
    """Which of these agents run kernels as plain processes of the agent's user (no isolation)."""
    return list(Agent.objects.filter(pk__in=list(agent_ids or []), backend=LOCAL_PROCESS_BACKEND)
                .order_by("pk").values_list("pk", flat=True))


def ensure_default_scaling_group() -> ScalingGroup:
    from accounts.models import Domain

    group, created = ScalingGroup.objects.get_or_create(
        name="default", defaults={"description": "The default resource group",
                                  "scheduler_opts": {"allowed_session_types": ["interactive", "batch", "inference"]}})
    if created:
        for domain in Domain.objects.filter(name="default"):
            group.domains.add(domain)
    return group




def resolve_image(reference: str, architecture: str | None = None) -> Image:
    """An image by canonical name or alias (and architecture when several exist)."""
    from agents.models import ImageAlias

    candidates = list(Image.objects.filter(name=reference))
    if not candidates:
        alias = ImageAlias.objects.select_related("image").filter(alias=reference).first()
        if alias is not None:
            candidates = list(Image.objects.filter(name=alias.image.name))
    if not candidates:
        raise errors.object_not_found("environment image", f"Unknown image {reference!r}")
    if architecture:
        matching = [c for c in candidates if c.architecture == architecture]
        if not matching:
            archs = ", ".join(sorted({c.architecture for c in candidates}))
            raise errors.object_not_found("environment image",
                                          f"Image {reference!r} is not available for {architecture} (only {archs})")
        return matching[0]
    return candidates[0]
