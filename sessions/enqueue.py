"""Session creation (``POST /session``): every rule between a create request
and PENDING kernels in the database.  Part of the sessions service layer."""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import Keypair, Project, User
from agents import services as agent_services
from agents.models import ScalingGroup
from backendai import requestctx
from backendai import services as manager_services
from backendai.actions import audited
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError, format_binary_size, humanize_binary_size, parse_binary_size
from sessions import signals, ssh, validation
from sessions.lifecycle import DEAD_SESSION, KernelStatus, SessionStatus
from sessions.models import ClusterMode, Kernel, Session, SessionDependency, SessionType
from vfolders import services as vfolder_services

log = logging.getLogger(__name__)

DEFAULT_SHMEM = Decimal(64 * 2**20)
DEFAULT_WORKING_MEM = Decimal(256 * 2**20)


@dataclass
class EnqueueRequest:
    image: str
    name: str | None = None
    session_type: str = SessionType.INTERACTIVE
    architecture: str | None = None
    group: str = "default"
    domain: str = "default"
    cluster_size: int = 1
    cluster_mode: str = ClusterMode.SINGLE_NODE
    priority: int = 10
    tag: str = ""
    enqueue_only: bool = False
    max_wait_seconds: int = 0
    starts_at: str | None = None
    reuse_if_exists: bool = True
    startup_command: str | None = None
    bootstrap_script: str | None = None
    dependencies: list = field(default_factory=list)
    callback_url: str | None = None
    owner_access_key: str | None = None
    batch_timeout: int | None = None
    mounts: list = field(default_factory=list)
    mount_map: dict = field(default_factory=dict)
    mount_options: dict = field(default_factory=dict)
    environ: dict = field(default_factory=dict)
    scaling_group: str | None = None
    resources: dict = field(default_factory=dict)
    resource_opts: dict = field(default_factory=dict)
    preopen_ports: list = field(default_factory=list)
    agent_list: list | None = None
    #: model serving: the container port the model serves on, published first as the
    #: ``inference`` service port (so the local backend's ``$PORT`` is it)
    inference_port: int | None = None


@dataclass
class EnqueueResult:
    session: Session
    created: bool


def _enqueued(args, kwargs, result):
    """The audit target of ``enqueue``: the session, or the requested name when refused."""
    if result is not None:
        return result.session
    req = kwargs.get("req", args[2] if len(args) > 2 else None)
    return getattr(req, "name", None)


def validate_name(name: str, field: str = "name") -> str:
    """The session-name rule (``sessions.validation``), as an API error naming ``field``."""
    return validation.check_new_name(name, field)


def parse_starts_at(value: str, now: datetime) -> datetime:
    try:
        return validation.parse_duration_or_time(value, now)
    except ValidationError as exc:
        raise validation.invalid("starts_at", exc.messages[0]) from None


def owner_keypair(actor: User, actor_keypair: Keypair | None, owner_access_key: str | None) -> Keypair:
    if not owner_access_key or (actor_keypair and owner_access_key == actor_keypair.access_key):
        if actor_keypair is None:
            if actor.main_keypair_id is None:
                raise errors.InvalidAPIParameters("You have no keypair")
            return actor.main_keypair
        return actor_keypair
    if not (actor.is_superadmin or actor.is_domain_admin):
        raise errors.InsufficientPrivilege("Only admins may act for another keypair (owner_access_key)")
    keypair = Keypair.objects.select_related("user", "resource_policy").filter(access_key=owner_access_key).first()
    if keypair is None or (actor.is_domain_admin and keypair.user.domain_id != actor.domain_id):
        raise errors.object_not_found("keypair", f"Unknown owner_access_key {owner_access_key}")
    return keypair


def choose_project(user: User, name_or_id: str, domain: str) -> Project:
    if domain != user.domain_id:
        raise errors.InvalidAPIParameters(f"You do not belong to domain {domain!r}")
    query = Project.objects.filter(domain_id=domain, is_active=True)
    project = query.filter(name=name_or_id).first()
    if project is None and validation.as_uuid(name_or_id) is not None:
        project = query.filter(pk=validation.as_uuid(name_or_id)).first()
    if project is None:
        raise errors.object_not_found("group (project)", f"Unknown project {name_or_id!r} in domain {domain!r}")
    if not (user.is_superadmin or user.is_domain_admin) and not project.memberships.filter(user=user).exists():
        raise errors.object_not_found("group (project)", f"You are not a member of project {project.name!r}")
    return project


def choose_scaling_group(user: User, project: Project, requested: str | None, session_type: str) -> ScalingGroup:
    allowed = list(agent_services.allowed_scaling_groups(user, project).order_by("name"))
    usable = [g for g in allowed if session_type in g.opts["allowed_session_types"]]
    if requested:
        group = next((g for g in allowed if g.pk == requested), None)
        if group is None:
            raise errors.InvalidAPIParameters(f"Scaling group {requested!r} is not allowed for you in project {project.name!r}")
        if group not in usable:
            raise errors.InvalidAPIParameters(f"Scaling group {requested!r} does not accept {session_type} sessions")
        return group
    if not usable:
        raise errors.InvalidAPIParameters(f"No scaling group accepts {session_type} sessions for you in project {project.name!r}")
    return next((g for g in usable if g.pk == "default"), usable[0])


def compute_request(image, resources: dict, resource_opts: dict, slot_types: dict) -> tuple[ResourceSlot, dict]:
    """Per-kernel slots: user input filled from image minimums, checked against
    image min/max; shmem from resource_opts, the image label or 64m, below mem."""
    try:
        requested = ResourceSlot.from_user_input(resources or {}, slot_types)
    except (SlotError, ArithmeticError) as exc:
        raise errors.InvalidAPIParameters(f"config.resources: {exc}") from None
    limits = image.resources or {}
    opts = dict(resource_opts or {})
    shmem_raw = opts.get("shmem") or image.labels.get("ai.backend.resource.preferred.shmem")
    try:
        shmem = parse_binary_size(shmem_raw) if shmem_raw else DEFAULT_SHMEM
    except (SlotError, ArithmeticError) as exc:
        raise errors.InvalidAPIParameters(f"config.resource_opts.shmem: {exc}") from None
    minimum = {k: Decimal(v["min"]) for k, v in limits.items() if v.get("min") not in (None, "")}
    labelled_mem = "mem" in minimum
    minimum["mem"] = minimum.get("mem", Decimal(0)) + shmem
    values = dict(requested)
    if not values.get("cpu"):
        values["cpu"] = minimum.get("cpu", Decimal(1))
    if not values.get("mem"):
        # the image's minimum (which includes shared memory), or 256m of working memory above shmem
        values["mem"] = minimum["mem"] if labelled_mem else shmem + DEFAULT_WORKING_MEM
    for slot, low in minimum.items():
        if slot in values and values[slot] < low:
            shown = humanize_binary_size(low) if slot == "mem" else str(low)
            raise errors.InvalidAPIParameters(f"Image {image.name} needs at least {shown} of {slot}"
                                              + (" (including shared memory)" if slot == "mem" else ""))
    for slot, spec in limits.items():
        high = spec.get("max")
        if high not in (None, "") and values.get(slot, Decimal(0)) > Decimal(high):
            raise errors.InvalidAPIParameters(f"Image {image.name} allows at most {high} of {slot}")
    if shmem >= values["mem"]:
        raise errors.InvalidAPIParameters(
            f"Shared memory ({format_binary_size(shmem)}) must be less than memory ({format_binary_size(values['mem'])})")
    opts["shmem"] = str(int(shmem))
    return ResourceSlot(values), opts


def check_absolute_limits(keypair: Keypair, project: Project, total: ResourceSlot, slot_types: dict) -> None:
    """Refuse requests that could never run under the owner's policies."""
    policy = keypair.resource_policy
    checks = [
        ("keypair resource policy " + policy.name,
         ResourceSlot.from_policy(policy.total_resource_slots, policy.default_for_unspecified, slot_types)),
        (f"project {project.name}", ResourceSlot.from_policy(project.total_resource_slots, "UNLIMITED", slot_types)),
        (f"domain {project.domain_id}",
         ResourceSlot.from_policy(project.domain.total_resource_slots, "UNLIMITED", slot_types)),
    ]
    for what, limit in checks:
        over = [k for k, v in total.items() if v > limit.get(k, Decimal(0))]
        if over:
            raise errors.QuotaExceeded(
                f"The request exceeds the {what} for {', '.join(over)} "
                f"(asked {', '.join(f'{k}={total[k]}' for k in over)}, limit {', '.join(f'{k}={limit.get(k)}' for k in over)})")


def check_pending_limits(keypair: Keypair, total: ResourceSlot, slot_types: dict) -> None:
    policy = keypair.resource_policy
    pending = Session.objects.filter(access_key=keypair, status=SessionStatus.PENDING)
    if policy.max_pending_session_count is not None and pending.count() >= policy.max_pending_session_count:
        raise errors.QuotaExceeded(f"You already have {policy.max_pending_session_count} pending session(s), the most allowed")
    if policy.max_pending_session_resource_slots:
        used = ResourceSlot()
        for slots in pending.values_list("requested_slots", flat=True):
            used = used + ResourceSlot.from_json(slots)
        limit = ResourceSlot.from_policy(policy.max_pending_session_resource_slots, "UNLIMITED", slot_types)
        if not (used + total) <= limit:
            raise errors.QuotaExceeded("Pending sessions would exceed the pending resource limit of your policy")


def resolve_dependencies(keypair: Keypair, refs: list) -> list[Session]:
    sessions = []
    for ref in refs or []:
        text = str(ref)
        query = Session.objects.filter(access_key=keypair)
        found = None
        if validation.as_uuid(text) is not None:
            found = query.filter(pk=validation.as_uuid(text)).first()
        if found is None:
            found = query.filter(name=text).exclude(status__in=DEAD_SESSION).order_by("-created_at").first() or \
                query.filter(name=text).order_by("-created_at").first()
        if found is None:
            raise errors.object_not_found("session", f"Unknown dependency {text!r}")
        sessions.append(found)
    return sessions


def service_ports_for(image, preopen_ports: list, inference_port: int | None = None) -> list[dict]:
    ports = [dict(p) for p in image.service_ports or []]
    if inference_port is not None:  # first in the list; an image port on the same container port gives way
        ports = [p for p in ports if inference_port not in p.get("container_ports", [])]
        ports.insert(0, {"name": "inference", "protocol": "inference", "container_ports": [inference_port]})
    used = {p for entry in ports for p in entry["container_ports"]}
    for port in preopen_ports or []:
        if not isinstance(port, int) or not 1024 <= port <= 65535:
            raise errors.InvalidAPIParameters(f"preopen_ports must be integers between 1024 and 65535, got {port!r}")
        if port in used:
            raise errors.InvalidAPIParameters(f"Port {port} is already a service port of the image")
        ports.append({"name": f"port{port}", "protocol": "preopen", "container_ports": [port]})
    sshd = ssh.sshd_service_port(image, ports)  # an image with an SSH server: sshd on 2200 (sessions/ssh.py)
    if sshd is not None:
        ports.append(sshd)
    return ports


def find_existing(keypair: Keypair, name: str) -> Session | None:
    return (Session.objects.filter(access_key=keypair, name=name).exclude(status__in=DEAD_SESSION)
            .exclude(status=SessionStatus.ERROR).first())


def mounts_for(user: User, project: Project, req: EnqueueRequest) -> list[dict]:
    """Folder mounts (vfolders decides permissions and paths; dot-folders auto-mount)."""
    return vfolder_services.resolve_mounts(user, project, list(req.mounts or []), dict(req.mount_map or {}),
                                           dict(req.mount_options or {}))


@audited("session", "create", _enqueued)
@transaction.atomic
def enqueue(actor: User, actor_keypair: Keypair | None, req: EnqueueRequest) -> EnqueueResult:
    req = validation.clean_request(req)  # types, ranges and lengths first, whoever built the request
    keypair = owner_keypair(actor, actor_keypair, req.owner_access_key)
    owner = keypair.user
    now = timezone.now()
    if req.session_type not in (SessionType.INTERACTIVE, SessionType.BATCH, SessionType.INFERENCE):
        raise errors.InvalidAPIParameters(f"Unknown session type {req.session_type!r}")
    name = validate_name(req.name) if req.name else f"sess-{secrets.token_hex(4)}"
    existing = find_existing(keypair, name)
    if existing is not None:
        if req.reuse_if_exists and existing.image == req.image:
            return EnqueueResult(existing, created=False)
        raise errors.SessionAlreadyExists(f"A session named {name!r} already exists",
                                          data={"existingSessionId": str(existing.pk)})
    if req.session_type == SessionType.BATCH and not (req.startup_command or "").strip():
        raise errors.InvalidAPIParameters("Batch sessions need a startup command (startupCommand)")
    starts_at = None
    if req.starts_at:
        if req.session_type != SessionType.BATCH:
            raise errors.InvalidAPIParameters("starts_at: is allowed only for batch sessions")
        starts_at = parse_starts_at(req.starts_at, now)
    if req.batch_timeout is not None and (req.batch_timeout < 1 or req.session_type != SessionType.BATCH):
        raise errors.InvalidAPIParameters("batch_timeout: must be a positive number of seconds, for batch sessions")

    project = choose_project(owner, req.group, req.domain)
    group = choose_scaling_group(owner, project, req.scaling_group, req.session_type)
    image = agent_services.resolve_image(req.image, req.architecture, domain=project.domain)  # its allowed registries
    agent_services.check_customized_image_owner(image, owner)  # a committed image: its owner's only
    slot_types = manager_services.known_slot_types()
    per_kernel, resource_opts = compute_request(image, req.resources, req.resource_opts, slot_types)
    total = per_kernel.scale(req.cluster_size)
    check_absolute_limits(keypair, project, total, slot_types)
    check_pending_limits(keypair, total, slot_types)
    dependencies = resolve_dependencies(keypair, req.dependencies)
    agent_ids = []
    if req.agent_list:
        if not actor.is_superadmin:
            raise errors.InsufficientPrivilege("Only superadmins choose agents (agent_list)")
        expected = 1 if req.cluster_mode == ClusterMode.SINGLE_NODE else req.cluster_size
        if len(req.agent_list) != expected:
            raise errors.InvalidAPIParameters(f"agent_list needs exactly {expected} agent id(s)")
        agent_ids = [str(a) for a in req.agent_list]
    else:
        agent_ids = agent_services.committed_image_agents(image, group)  # a committed image: where it is
    mounts = mounts_for(owner, project, req)
    if req.inference_port is not None and req.session_type != SessionType.INFERENCE:
        raise errors.InvalidAPIParameters("inference_port: is allowed only for inference sessions")
    ports = service_ports_for(image, req.preopen_ports, req.inference_port)
    ssh.ensure_owner_key(keypair)  # the session's SSH keypair (written into the kernel as id_container)

    session = Session.objects.create(
        name=name, creation_id=secrets.token_hex(16), session_type=req.session_type, priority=req.priority,
        cluster_mode=req.cluster_mode, cluster_size=req.cluster_size, agent_ids=agent_ids, scaling_group=group,
        domain_id=project.domain_id, project=project, user=owner, access_key=keypair, image=image.name,
        architecture=image.architecture, tag=req.tag or "", requested_slots=total.to_json(), occupying_slots={},
        vfolder_mounts=mounts, environ=req.environ, resource_opts=resource_opts,
        bootstrap_script=req.bootstrap_script or "", startup_command=req.startup_command or "",
        batch_timeout=req.batch_timeout, callback_url=req.callback_url or "", starts_at=starts_at,
        status=SessionStatus.PENDING, status_changed=now,
        status_history=[{"status": SessionStatus.PENDING, "timestamp": now.isoformat()}],
    )
    kernels = []
    for idx in range(req.cluster_size):
        role = "main" if idx == 0 else "sub"
        kernels.append(Kernel(
            session=session, cluster_role=role, cluster_idx=idx + 1 if role == "main" else idx,
            local_rank=idx, cluster_hostname=f"{role}{1 if role == 'main' else idx}", image=image.name,
            architecture=image.architecture, registry=image.registry_name, requested_slots=per_kernel.to_json(),
            resource_opts=resource_opts, environ=req.environ,
            mounts=[{k: m[k] for k in ("host_path", "container_path", "mode")} for m in mounts],
            service_ports=ports if role == "main" else [], preopen_ports=list(req.preopen_ports or []),
            startup_command=req.startup_command or "", bootstrap_script=req.bootstrap_script or "",
            status=KernelStatus.PENDING, status_changed=now,
            status_history=[{"status": KernelStatus.PENDING, "timestamp": now.isoformat()}],
        ))
    Kernel.objects.bulk_create(kernels)
    requestctx.bind(session_id=session.pk, kernel_id=kernels[0].pk if kernels else None)
    SessionDependency.objects.bulk_create([SessionDependency(session=session, depends_on=d) for d in dependencies])
    log.info("enqueued session %s (%s) for user %s keypair %s in group %s: %s x%d",
             session.pk, name, owner.pk, keypair.access_key, group.pk, image.name, req.cluster_size)

    transaction.on_commit(lambda: signals.queued(session.pk, group.pk))
    return EnqueueResult(session, created=True)


__all__ = ["EnqueueRequest", "EnqueueResult", "enqueue"]
