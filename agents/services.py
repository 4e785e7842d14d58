"""Business rules for agents: tokens, the agent row of a sync (docs/agent-protocol.md),
liveness, scaling groups and who sees them, images (the domains' allowed registries,
aliases, rescans as background tasks) and registries.  Views, GraphQL resolvers,
admin actions and tasks call these.

The kernel half of the sync (reports, desired state, occupancy) belongs to the
sessions app: ``sessions.agent_sync``."""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Domain, Keypair, Project
from agents.models import (
    AGENT_MOVES,
    Agent,
    AgentStatus,
    AgentToken,
    ContainerRegistry,
    Image,
    ImageAlias,
    RegistryType,
    ScalingGroup,
    ScalingGroupForDomain,
    ScalingGroupForProject,
)
from agents.registry import RegistryClient, RegistryError, parse_resource_limits, parse_service_ports
from backendai import bgtasks, daemons, hints, requestctx
from backendai import services as manager_services
from backendai.actions import audited
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "bat_"


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
    requestctx.bind(agent_id=agent_id)  # the sync's log lines name the agent
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
        metrics_address=daemons.metrics_target(payload.get("metrics_address") or "",
                                               payload.get("address") or peer_address),
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
    requestctx.bind(agent_id=agent_id)
    agent = Agent.objects.select_for_update().filter(pk=agent_id).first()
    if agent is None:
        raise errors.object_not_found("agent", f"Agent {agent_id} has not synced yet")
    if token.scaling_group_id and agent.scaling_group_id != token.scaling_group_id:
        raise errors.GenericForbidden("This token does not allow this agent's scaling group")
    return agent


@audited("agent", "shutdown", "agent_id")
def shutdown(token: AgentToken, agent_id: str) -> None:
    check_token_allows(token, agent_id, None)
    now = timezone.now()
    query = Agent.objects.filter(pk=agent_id)
    if token.scaling_group_id:
        query = query.filter(scaling_group_id=token.scaling_group_id)
    if AGENT_MOVES.update(query, AgentStatus.TERMINATED, now):
        log.info("agent %s shut down cleanly", agent_id)


# --- liveness ---------------------------------------------------------------------------------

@audited("agent", "mark-lost", when=bool)
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


@audited("agent", "set-schedulable", "agents")
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


def _local_image_fields(info: dict) -> dict:
    """The catalogue fields of an image an agent reports (``{name, digest, size, labels}``)."""
    registry_name, repository, tag = split_image_name(info["name"])
    fields = image_fields_from_labels(info.get("labels") or {})
    fields.update(config_digest=info.get("digest", "")[:100], size_bytes=int(info.get("size") or 0),
                  registry_name=registry_name, repository=repository, tag=tag)
    return fields


def record_committed_image(agent: Agent, info: dict) -> Image:
    """An image a kernel was just committed to on ``agent`` (``sessions.commit``), recorded with the
    fields the agent's next sync reports for it (so that sync changes nothing) and held by ``agent``."""
    arch = info.get("architecture") or agent.architecture
    fields = _local_image_fields(info)
    with transaction.atomic():
        image, created = Image.objects.update_or_create(
            name=info["name"], architecture=arch, defaults=fields,
            create_defaults={**fields, "is_local": not fields["registry_name"]})
        image.agents.add(agent)
    log.info("image %s (%s) %s from a commit on agent %s", image.name, arch, "recorded" if created else "updated",
             agent.pk)
    return image


def check_customized_image_owner(image: Image, user) -> None:
    """A committed image (label ``ai.backend.customized-image.owner``) holds its owner's files: only
    its owner, or a superadmin, starts sessions from it; anyone else is answered as for an unknown image."""
    owner = (image.labels or {}).get(CUSTOMIZED_OWNER_LABEL)
    if owner and owner != f"user:{user.pk}" and not user.is_superadmin:
        raise errors.object_not_found("environment image", f"Unknown image {image.name!r}")


def committed_image_agents(image: Image, group: ScalingGroup) -> list[str]:
    """Where a session from a committed image (agent-local, label ``ai.backend.customized-image.owner``)
    must run: the agents of ``group`` that hold it, which the scheduler then picks among (a session's
    designated agents); ``[]`` for any other image (the scheduler chooses freely).  Refused when no
    agent of the group holds it: no other agent could pull it."""
    if image.registry_name or CUSTOMIZED_OWNER_LABEL not in (image.labels or {}):
        return []
    holders = sorted(image.agents.filter(scaling_group=group).values_list("pk", flat=True))
    if not holders:
        raise errors.InvalidAPIParameters(
            f"The image {image.name} is a committed image held only by agents outside the scaling group "
            f"{group.pk!r}: choose the scaling group of the agent that committed it")
    return holders


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
        fields = _local_image_fields(info)
        registry_name = fields["registry_name"]
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


@audited("registry", "rescan", "registry")
def rescan_registry(registry: ContainerRegistry, on_repository=None, project: str | None = None) -> dict:
    """Read every image of a registry over the Docker Registry HTTP API v2, one
    repository at a time; ``on_repository(done, total, repository)`` hears each
    (the rescan background task reports progress through it).  ``project`` overrides
    the registry's own repository prefix."""
    client = RegistryClient(registry.url, username=registry.username or None, password=registry.password or None,
                            verify_tls=registry.ssl_verify, registry_name=registry.registry_name)
    prefix = (project if project is not None else registry.project).strip("/")
    try:
        repositories = [r for r in client.catalog() if not prefix or r.startswith(prefix + "/")]
    except RegistryError as exc:
        ContainerRegistry.objects.filter(pk=registry.pk).update(last_scanned_at=timezone.now(),
                                                                last_scan_result=f"error: {exc}")
        raise errors.InvalidAPIParameters(f"Cannot scan {registry.registry_name}: {exc}") from None
    count, problems = 0, []
    for done, repository in enumerate(repositories, 1):
        result = client.scan([repository])
        for info in result.images:
            fields = image_fields_from_labels(info.labels or {})
            fields.update(registry=registry, registry_name=info.registry or registry.registry_name,
                          repository=info.repository, tag=info.tag, config_digest=(info.digest or "")[:100],
                          size_bytes=info.size or 0, is_local=False)
            Image.objects.update_or_create(name=info.canonical, architecture=info.architecture or "x86_64",
                                           defaults=fields)
            count += 1
        problems.extend(f"{where}: {message}" for where, message in result.errors)
        if on_repository is not None:
            on_repository(done, len(repositories), repository)
    summary = f"{count} image(s), {len(problems)} error(s)"
    ContainerRegistry.objects.filter(pk=registry.pk).update(last_scanned_at=timezone.now(), last_scan_result=summary)
    log.info("rescanned registry %s: %s", registry.registry_name, summary)
    return {"images": count, "errors": problems, "repositories": len(repositories)}


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


def resolve_image(reference: str, architecture: str | None = None, domain: Domain | str | None = None) -> Image:
    """An image by canonical name or alias (and architecture when several exist);
    with ``domain``, one that domain allows (``check_image_allowed``) or a refusal."""
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
        image = matching[0]
    else:
        image = candidates[0]
    if domain is not None:
        check_image_allowed(image, domain)
    return image


# --- scaling groups: who sees them, what superadmins change ------------------------------------
# The same rules serve GraphQL (``agents/gql.py``) and the Django admin (superadmins only).

SCALING_GROUP_PROPS = ("description", "is_active", "is_public", "driver", "driver_opts", "scheduler",
                       "scheduler_opts", "use_host_network", "wsproxy_addr", "wsproxy_api_token")


def _require_superadmin(actor, doing: str) -> None:
    if not actor.is_superadmin:
        raise errors.InsufficientPrivilege(f"Only superadmins {doing}")


def visible_scaling_groups(actor):
    """Superadmins: every group; domain admins: the groups allowed to their domain, its
    projects or its users' keypairs (active or not, public or not); users: the groups
    they may use (``allowed_scaling_groups``)."""
    if actor.is_superadmin:
        return ScalingGroup.objects.all()
    if actor.is_domain_admin:
        domain = actor.domain_id
        return ScalingGroup.objects.filter(
            Q(domains=domain) | Q(projects__domain_id=domain) | Q(keypairs__user__domain_id=domain)).distinct()
    return allowed_scaling_groups(actor)


def _check_domain_scope(actor, domain_name: str) -> Domain:
    if not actor.is_superadmin and domain_name != actor.domain_id:
        raise errors.InsufficientPrivilege("Only superadmins look into another domain")
    domain = Domain.objects.filter(pk=domain_name).first()
    if domain is None:
        raise errors.object_not_found("domain", f"No domain {domain_name!r}")
    return domain


def _visible_project(actor, project_id) -> Project:
    try:
        key = uuid.UUID(str(project_id))
    except ValueError:
        raise errors.InvalidAPIParameters("user_group must be a project (group) id") from None
    project = Project.objects.filter(pk=key).first()
    member = project is not None and project.memberships.filter(user=actor).exists()
    if project is None or not (actor.is_superadmin or (actor.is_domain_admin and project.domain_id == actor.domain_id)
                               or member):
        raise errors.object_not_found("group (project)", f"No project {key}")
    return project


def _visible_keypair(actor, access_key: str) -> Keypair:
    query = Keypair.objects.filter(pk=access_key)
    if actor.is_domain_admin:
        query = query.filter(user__domain_id=actor.domain_id)
    elif not actor.is_superadmin:
        query = query.filter(user=actor)
    keypair = query.first()
    if keypair is None:
        raise errors.object_not_found("keypair", f"No keypair {access_key}")
    return keypair


def scaling_groups_for(actor, *, domain: str | None = None, project=None, access_key: str | None = None):
    """The groups associated with one domain, project or keypair, as far as ``actor`` sees them."""
    query = visible_scaling_groups(actor)
    if domain is not None:
        query = query.filter(domains=_check_domain_scope(actor, domain))
    if project is not None:
        query = query.filter(projects=_visible_project(actor, project))
    if access_key is not None:
        query = query.filter(keypairs=_visible_keypair(actor, access_key))
    return query.distinct()


def _json_object(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.InvalidAPIParameters(f"{what} must be a JSON object")
    return value


def _apply_scaling_group_props(group: ScalingGroup, props: dict) -> None:
    unknown = set(props) - set(SCALING_GROUP_PROPS)
    if unknown:
        raise errors.InvalidAPIParameters(f"Unknown scaling group field(s): {', '.join(sorted(unknown))}")
    for name, value in props.items():
        if name in ("driver_opts", "scheduler_opts"):
            value = _json_object(value, name)
        elif name in ("description", "wsproxy_addr", "wsproxy_api_token") and value is None:
            value = ""
        elif value is None:
            raise errors.InvalidAPIParameters(f"{name} cannot be null")
        setattr(group, name, value)
    try:
        group.full_clean()
    except ValidationError as exc:
        raise errors.InvalidAPIParameters(_validation_text(exc)) from None


def _validation_text(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)


def _insert(row, taken: str) -> None:
    """Save a new row; a key taken meanwhile (the unique constraint) is a 400 saying ``taken``."""
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:
        raise errors.InvalidAPIParameters(taken) from None


def _existing(model, what: str, message: str, **lookup):
    """The one row of ``model`` matching ``lookup``, or a 404 naming ``what``."""
    row = model.objects.filter(**lookup).first()
    if row is None:
        raise errors.object_not_found(what, message)
    return row


@audited("scaling-group", "create", "name")
def create_scaling_group(actor, name: str, props: dict) -> ScalingGroup:
    _require_superadmin(actor, "create scaling groups")
    group = ScalingGroup(name=name)
    _apply_scaling_group_props(group, props)  # full_clean also refuses a name taken already
    _insert(group, f"Scaling group {name!r} already exists")
    log.info("%s created scaling group %s", actor, name)
    return group


def _scaling_group(name: str) -> ScalingGroup:
    return _existing(ScalingGroup, "scaling group", f"No scaling group {name!r}", pk=name)


@audited("scaling-group", "modify", "name")
def modify_scaling_group(actor, name: str, props: dict) -> ScalingGroup:
    _require_superadmin(actor, "modify scaling groups")
    group = _scaling_group(name)
    _apply_scaling_group_props(group, props)
    group.save()
    log.info("%s modified scaling group %s (%s)", actor, name, ", ".join(sorted(props)) or "nothing")
    return group


@audited("scaling-group", "delete", "name")
def delete_scaling_group(actor, name: str) -> None:
    _require_superadmin(actor, "delete scaling groups")
    group = _scaling_group(name)
    agents = group.agents.count()
    if agents:
        raise errors.InvalidAPIParameters(f"Scaling group {name!r} still has {agents} agent(s); move them first")
    group.delete()
    log.info("%s deleted scaling group %s", actor, name)


def _association_target(*, domain=None, project=None, access_key=None) -> tuple[str, object]:
    if domain is not None:
        found = Domain.objects.filter(pk=domain).first()
        return "domains", found or _missing("domain", domain)
    if project is not None:
        try:
            key = uuid.UUID(str(project))
        except ValueError:
            raise errors.InvalidAPIParameters("user_group must be a project (group) id") from None
        return "projects", Project.objects.filter(pk=key).first() or _missing("group (project)", key)
    return "keypairs", Keypair.objects.filter(pk=access_key).first() or _missing("keypair", access_key)


def _missing(kind: str, key) -> None:
    raise errors.object_not_found(kind, f"No {kind} {key}")


@audited("scaling-group", "associate", "name")
def associate_scaling_group(actor, name: str, **target) -> bool:
    """Allow a domain, project (``project=id``) or keypair (``access_key=``) to use a group;
    False when it already was."""
    _require_superadmin(actor, "associate scaling groups")
    group = _scaling_group(name)
    relation, obj = _association_target(**target)
    manager = getattr(group, relation)
    if manager.filter(pk=obj.pk).exists():
        return False
    manager.add(obj)
    log.info("%s associated scaling group %s with %s %s", actor, name, relation, obj.pk)
    return True


@audited("scaling-group", "disassociate", "name")
def disassociate_scaling_group(actor, name: str, **target) -> bool:
    _require_superadmin(actor, "dissociate scaling groups")
    group = _scaling_group(name)
    relation, obj = _association_target(**target)
    manager = getattr(group, relation)
    if not manager.filter(pk=obj.pk).exists():
        return False
    manager.remove(obj)
    log.info("%s dissociated scaling group %s from %s %s", actor, name, relation, obj.pk)
    return True


@audited("scaling-group", "disassociate-all")
def disassociate_all_scaling_groups(actor, *, domain=None, project=None) -> int:
    """Take every scaling group away from a domain or a project; how many it had."""
    _require_superadmin(actor, "dissociate scaling groups")
    relation, obj = _association_target(domain=domain, project=project)
    through = {"domains": ScalingGroupForDomain, "projects": ScalingGroupForProject}[relation]
    removed = through.objects.filter(**{"domain" if relation == "domains" else "project": obj}).delete()[0]
    log.info("%s dissociated %s scaling group(s) from %s %s", actor, removed, relation, obj.pk)
    return removed


# --- agents: superadmins only (Backend.AI's hide-agents) ----------------------------------------

def visible_agents(actor, doing: str = "list agents"):
    _require_superadmin(actor, doing)
    return Agent.objects.all()


def agent_detail(actor, agent_id: str) -> Agent | None:
    return visible_agents(actor, "see agents").filter(pk=agent_id).first()


# --- images: the domain's allowed registries and images ----------------------------------------
# ``Domain.allowed_docker_registries`` lists the registries (host[:port], as in image names) a
# domain's sessions may use.  An empty list allows every image (the default: nothing is
# restricted until a superadmin lists registries).  Agent-local images (no registry) count as
# the registry ``local``, the name the image listings show for them.  ``Domain.allowed_images``
# narrows that further to the listed canonical names (a trailing ``*`` takes every name it starts
# with); empty, it adds nothing.  Superadmins' listings show every image; a session is checked
# against its own domain whoever creates it.

LOCAL_REGISTRY = "local"


def _domain(domain) -> Domain:
    if isinstance(domain, Domain):
        return domain
    return _existing(Domain, "domain", f"No domain {domain!r}", pk=domain)


def _image_condition(domain: Domain, prefix: str = "") -> Q | None:
    """What the domain allows, as a condition on images (None: everything)."""
    condition = None
    registries = [str(r) for r in (domain.allowed_docker_registries or [])]
    if registries:
        condition = Q(**{f"{prefix}registry_name__in": [r for r in registries if r != LOCAL_REGISTRY]})
        if LOCAL_REGISTRY in registries:
            condition |= Q(**{f"{prefix}registry_name": ""})
    patterns = [str(p) for p in (domain.allowed_images or [])]
    if patterns:
        named = Q(pk__in=[])
        for pattern in patterns:
            named |= (Q(**{f"{prefix}name__startswith": pattern[:-1]}) if pattern.endswith("*")
                      else Q(**{f"{prefix}name": pattern}))
        condition = named if condition is None else condition & named
    return condition


def allowed_images(query, domain, prefix: str = ""):
    """``query`` (of images, or of rows reaching an image through ``prefix``, e.g.
    ``image__`` for aliases) narrowed to what ``domain`` allows."""
    condition = _image_condition(_domain(domain), prefix)
    return query if condition is None else query.filter(condition)


def _name_allowed(name: str, patterns: list) -> bool:
    return not patterns or any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in map(str, patterns))


def image_allowed(image: Image, domain) -> bool:
    domain = _domain(domain)
    registries = domain.allowed_docker_registries or []
    return ((not registries or (image.registry_name or LOCAL_REGISTRY) in registries)
            and _name_allowed(image.name, domain.allowed_images or []))


def check_image_allowed(image: Image, domain) -> None:
    domain = _domain(domain)
    registries = domain.allowed_docker_registries or []
    if registries and (image.registry_name or LOCAL_REGISTRY) not in registries:
        raise errors.GenericForbidden(
            f"Domain {domain.pk!r} does not allow images from registry {image.registry_name or LOCAL_REGISTRY!r} "
            f"({image.name}); allowed: {', '.join(registries)}")
    if not _name_allowed(image.name, domain.allowed_images or []):
        raise errors.GenericForbidden(f"Domain {domain.pk!r} does not allow the image {image.name}; allowed: "
                                      f"{', '.join(domain.allowed_images[:10])}")


def visible_images(actor):
    """Superadmins: every image; everyone else: the images their domain allows."""
    query = Image.objects.all()
    return query if actor.is_superadmin else allowed_images(query, actor.domain_id)


def customized_images(actor):
    """Images committed from sessions (label ``ai.backend.customized-image.owner``): a user's own;
    every one for superadmins."""
    query = visible_images(actor).filter(labels__has_key=CUSTOMIZED_OWNER_LABEL)
    if actor.is_superadmin:
        return query
    return query.filter(**{f"labels__{CUSTOMIZED_OWNER_LABEL}": f"user:{actor.pk}"})


CUSTOMIZED_OWNER_LABEL = "ai.backend.customized-image.owner"


# --- images: aliases, forgetting, rescans -------------------------------------------------------

def _visible_image(actor, reference: str, architecture: str | None) -> Image:
    image = resolve_image(reference, architecture)
    if not actor.is_superadmin and not image_allowed(image, actor.domain_id):
        raise errors.object_not_found("environment image", f"Unknown image {reference!r}")
    return image


def find_image(actor, *, reference: str | None = None, architecture: str | None = None,
               image_id: str | None = None) -> Image | None:
    """One image ``actor`` may see, by reference (name or alias) and architecture, or by id; None if not."""
    if image_id is not None:
        try:
            key = uuid.UUID(str(image_id))
        except ValueError:
            return None
        return visible_images(actor).filter(pk=key).first()
    try:
        return _visible_image(actor, reference or "", architecture)
    except errors.BackendAIError:
        return None


@audited("image", "alias", "alias")
def alias_image(actor, alias: str, target: str, architecture: str | None = None) -> ImageAlias:
    _require_superadmin(actor, "alias images")
    alias = (alias or "").strip()
    if not alias or len(alias) > 256 or any(c.isspace() for c in alias):
        raise errors.InvalidAPIParameters("alias: 1-256 characters without spaces")
    image = resolve_image(target, architecture)
    if ImageAlias.objects.filter(alias=alias).exists() or Image.objects.filter(name=alias).exists():
        raise errors.InvalidAPIParameters(f"{alias!r} already names an image or an alias; dealias it first")
    try:
        with transaction.atomic():
            created = ImageAlias.objects.create(alias=alias, image=image)
    except IntegrityError:
        raise errors.InvalidAPIParameters(f"{alias!r} is already an alias") from None
    log.info("%s aliased %s -> %s", actor, alias, image)
    return created


@audited("image", "dealias", "alias")
def dealias_image(actor, alias: str) -> None:
    _require_superadmin(actor, "remove image aliases")
    if not ImageAlias.objects.filter(alias=alias).delete()[0]:
        raise errors.object_not_found("image alias", f"No alias {alias!r}")
    log.info("%s removed alias %s", actor, alias)


@audited("image", "forget", "reference")
def forget_image(actor, *, reference: str | None = None, architecture: str | None = None,
                 image_id: str | None = None) -> Image:
    """Drop an image's record (and its aliases); agents that still hold it report it again."""
    _require_superadmin(actor, "forget images")
    image = find_image(actor, reference=reference, architecture=architecture, image_id=image_id)
    if image is None:
        raise errors.object_not_found("environment image", f"Unknown image {reference or image_id!r}")
    image.forgotten_aliases = [a.alias for a in image.aliases.all()]
    pk = image.pk
    image.delete()
    image.pk = pk  # the caller may still show what was forgotten
    log.info("%s forgot image %s", actor, image)
    return image


NOTHING_TO_SCAN = "No container registry is configured: nothing to scan"


@audited("image", "rescan", "registry")
def start_rescan(actor, registry: str | None = None, project: str | None = None) -> str:
    """Queue a rescan of one registry (by name) or of all; the background task's id.  An unknown
    registry is refused; with no registry configured at all the task still runs (as the real
    manager's) and finishes done with ``NOTHING_TO_SCAN``."""
    _require_superadmin(actor, "rescan registries")
    registries = ContainerRegistry.objects.exclude(type=RegistryType.LOCAL)
    if registry:
        registries = registries.filter(registry_name=registry)
    names = list(registries.order_by("registry_name").values_list("registry_name", flat=True))
    if registry and not names:
        raise errors.object_not_found("container registry", f"No registry {registry!r}")
    return bgtasks.start("rescan_images", "agents.services.rescan_images_task", names, project, owner=actor.pk)


@bgtasks.background
def rescan_images_task(progress: bgtasks.Progress, registry_names: list[str], project: str | None = None):
    """The rescan background task: each registry in turn, one progress step per repository.
    It fails only when no registry could be read; unreadable images are listed in the outcome.
    Given no registry (none was configured), it is done at once with nothing scanned."""
    if not registry_names:
        return NOTHING_TO_SCAN
    images, problems, failed, base = 0, [], [], 0
    registries = list(ContainerRegistry.objects.filter(registry_name__in=registry_names).order_by("registry_name"))
    for registry in registries:
        def report(done, total, repository, base=base, name=registry.registry_name):
            progress.update(base + done, total=base + total, message=f"{name}/{repository}")

        try:
            result = rescan_registry(registry, on_repository=report, project=project)
        except errors.BackendAIError as exc:
            failed.append(str(exc.msg))
            continue
        images += result["images"]
        problems.extend(result["errors"])
        base += result["repositories"]
    if not registries or len(failed) == len(registries):
        raise bgtasks.TaskFailed("; ".join(failed) or "No such registry any more")
    return bgtasks.Outcome(f"{images} image(s) from {len(registries) - len(failed)} registr(ies)",
                           errors=failed + problems)


# --- container registries (superadmins) ---------------------------------------------------------

REGISTRY_PROPS = ("url", "type", "project", "username", "password", "ssl_verify", "is_global")


def visible_registries(actor):
    _require_superadmin(actor, "see container registries")
    return ContainerRegistry.objects.all()


def known_registries(actor) -> dict[str, str]:
    """``{hostname: url}`` of every configured registry, what ``GET /config/docker-registries``
    (23.09 clients) and ``GET /resource/container-registries`` (24.09 and later) answer; no
    credential ever leaves (superadmins only)."""
    return dict(visible_registries(actor).order_by("registry_name").values_list("registry_name", "url"))


def _apply_registry_props(registry: ContainerRegistry, props: dict) -> None:
    unknown = set(props) - set(REGISTRY_PROPS)
    if unknown:
        raise errors.InvalidAPIParameters(f"Unknown container registry field(s): {', '.join(sorted(unknown))}")
    for name, value in props.items():
        if name == "project" and isinstance(value, (list, tuple)):
            if len(value) > 1:
                raise errors.InvalidAPIParameters("project: one repository prefix per registry here")
            value = value[0] if value else ""
        if value is None:
            value = "" if name in ("project", "username", "password") else value
        if value is None:
            raise errors.InvalidAPIParameters(f"{name} cannot be null")
        setattr(registry, name, value)
    try:
        registry.full_clean()
    except ValidationError as exc:
        raise errors.InvalidAPIParameters(_validation_text(exc)) from None


@audited("registry", "create", "hostname")
def create_registry(actor, hostname: str, props: dict) -> ContainerRegistry:
    _require_superadmin(actor, "add container registries")
    registry = ContainerRegistry(registry_name=hostname)
    _apply_registry_props(registry, props)
    _insert(registry, f"Registry {hostname!r} already exists")
    log.info("%s added container registry %s", actor, hostname)
    return registry


def _registry(hostname: str) -> ContainerRegistry:
    return _existing(ContainerRegistry, "container registry", f"No registry {hostname!r}", registry_name=hostname)


@audited("registry", "modify", "hostname")
def modify_registry(actor, hostname: str, props: dict) -> ContainerRegistry:
    _require_superadmin(actor, "modify container registries")
    registry = _registry(hostname)
    if props.get("password") in ("", None):
        props = {k: v for k, v in props.items() if k != "password"}  # as in the admin: empty keeps it
    _apply_registry_props(registry, props)
    registry.save()
    log.info("%s modified container registry %s", actor, hostname)
    return registry


@audited("registry", "delete", "hostname")
def delete_registry(actor, hostname: str) -> ContainerRegistry:
    _require_superadmin(actor, "delete container registries")
    registry = _registry(hostname)
    registry.delete()  # its images stay, without a registry row (as after a rename)
    log.info("%s deleted container registry %s", actor, hostname)
    return registry
