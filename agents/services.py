"""Business rules for agents: tokens, the agent row of a sync (docs/agent-protocol.md),
liveness, images and registries.  Views, admin actions and tasks call these.

The kernel half of the sync (reports, desired state, occupancy) belongs to the
sessions app: ``sessions.agent_sync``."""
from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from accounts.models import Domain
from agents.models import (
    AGENT_MOVES,
    Agent,
    AgentStatus,
    AgentToken,
    ContainerRegistry,
    Image,
    ImageAlias,
    ScalingGroup,
)
from agents.registry import RegistryClient, RegistryError, parse_resource_limits, parse_service_ports
from backendai import daemons, hints
from backendai import services as manager_services
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "bat_"


# --- scaling groups ---------------------------------------------------------------------------

# --- tokens -----------------------------------------------------------------------------------

hash_token = daemons.hash_token


def issue_token(name: str, *, agent_id: str = "", scaling_group: ScalingGroup | None = None) -> tuple[AgentToken, str]:
    """A new agent token; the raw value is returned once and only its hash is kept."""
    if bool(agent_id) == bool(scaling_group):
        raise errors.InvalidAPIParameters("Bind the token to exactly one agent id or one scaling group")
    token, raw = daemons.issue_token(AgentToken, TOKEN_PREFIX, name, agent_id=agent_id, scaling_group=scaling_group)
    log.info("issued agent token %s (%s)", token.pk, token)
    return token, raw


def revoke_tokens(tokens) -> int:
    return daemons.revoke_tokens(AgentToken, tokens)


def token_for(raw: str) -> AgentToken | None:
    return daemons.token_for(AgentToken, raw, "scaling_group")


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


def record_heartbeat(token: AgentToken, payload: dict, peer_address: str) -> Agent:
    """The agent's half of a sync: check the token, record the agent row (capacity,
    devices, images, live stats, heartbeat; a new agent registers, a LOST one
    revives) and return it locked.  Runs inside the caller's transaction; the
    kernel half is ``sessions.agent_sync.sync``."""
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
            agent.move_to(AgentStatus.ALIVE, now)
        agent.save()
    daemons.touch_token(token, now, always=token.agent_id == "")
    manager_services.register_slot_types(payload.get("slot_types", {}))
    record_local_images(agent, payload.get("images", []))
    return agent


def locked_agent(token: AgentToken, agent_id: str) -> Agent:
    """The agent row an event batch is about, locked, once the token may speak for it
    (inside the caller's transaction)."""
    check_token_allows(token, agent_id, None)
    agent = Agent.objects.select_for_update().filter(pk=agent_id).first()
    if agent is None:
        raise errors.object_not_found("agent", f"Agent {agent_id} has not synced yet")
    if token.scaling_group_id and agent.scaling_group_id != token.scaling_group_id:
        raise errors.GenericForbidden("This token does not allow this agent's scaling group")
    return agent


def shutdown(token: AgentToken, agent_id: str) -> None:
    check_token_allows(token, agent_id, None)
    now = timezone.now()
    query = Agent.objects.filter(pk=agent_id)
    if token.scaling_group_id:
        query = query.filter(scaling_group_id=token.scaling_group_id)
    if AGENT_MOVES.update(query, AgentStatus.TERMINATED, now):
        log.info("agent %s shut down cleanly", agent_id)


# --- liveness ---------------------------------------------------------------------------------

def mark_lost_agents(timeout_seconds: float | None = None, now=None) -> int:
    """ALIVE agents silent for longer than the heartbeat timeout become LOST.

    An agent whose sync is in flight (its row locked) is skipped, not marked: it is
    alive, only slow.  Its sessions stay as they are, shown with the agent's state,
    until ``AGENT_LOST_GRACE`` has passed (the session reconciler then ends them)."""
    timeout = timedelta(seconds=timeout_seconds if timeout_seconds is not None else settings.AGENT_HEARTBEAT_TIMEOUT)
    now = now or timezone.now()
    ids = daemons.mark_silent_lost(Agent, AGENT_MOVES, timeout, now)
    for agent_id in ids:
        log.warning("agent %s is LOST (no sync for %s s); its sessions end in %s s unless it comes back",
                    agent_id, timeout.total_seconds(), settings.AGENT_LOST_GRACE)
    return len(ids)


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
    group, created = ScalingGroup.objects.get_or_create(
        name="default", defaults={"description": "The default resource group",
                                  "scheduler_opts": {"allowed_session_types": ["interactive", "batch", "inference"]}})
    if created:
        for domain in Domain.objects.filter(name="default"):
            group.domains.add(domain)
    return group




def resolve_image(reference: str, architecture: str | None = None) -> Image:
    """An image by canonical name or alias (and architecture when several exist)."""
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
