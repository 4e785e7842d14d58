"""``POST /admin/gql``: the GraphQL documents the official client sends
(client-wire.md §8) — keypair, compute_session_list, compute_session,
agent_list, images, vfolder_list — answered by strawberry over our services.

Field names are snake_case as in Backend.AI; JSON-valued fields are
JSON-encoded strings (the client's formatters ``json.loads`` them); enums are
upper case; pagination is consistent (``total_count`` counts what the same
filter returns)."""
from __future__ import annotations

import json
import re
import uuid
from typing import Optional

import strawberry
from rest_framework.response import Response
from rest_framework.views import APIView
from strawberry.schema.config import StrawberryConfig
from strawberry.types import Info

from backendai.api import errors

MAX_LIMIT = 100


def _json(value) -> Optional[str]:
    return None if value is None else json.dumps(value)


def _iso(value) -> Optional[str]:
    return value.isoformat() if value else None


FILTER_RE = re.compile(r'^\s*(\w+)\s*(==|!=|ilike|like)\s*"([^"]*)"\s*$')


def apply_filter(query, expression: Optional[str], fields: dict[str, str]):
    """A small subset of Backend.AI's filter language: ``field op "value"`` joined by ``&``."""
    if not expression:
        return query
    for part in expression.split("&"):
        match = FILTER_RE.match(part)
        if not match or match.group(1) not in fields:
            raise errors.InvalidAPIParameters(f"Unsupported filter expression: {part.strip()!r}")
        column, op, value = fields[match.group(1)], match.group(2), match.group(3)
        if op in ("ilike", "like"):
            lookup = "icontains" if op == "ilike" else "contains"
            query = query.filter(**{f"{column}__{lookup}": value.strip("%")})
        elif op == "==":
            query = query.filter(**{column: value})
        else:
            query = query.exclude(**{column: value})
    return query


def apply_order(query, order: Optional[str], fields: dict[str, str], default: str):
    if not order:
        return query.order_by(default)
    name = order.lstrip("+-")
    if name not in fields:
        raise errors.InvalidAPIParameters(f"Unsupported order field: {name!r}")
    return query.order_by(("-" if order.startswith("-") else "") + fields[name])


def page(limit: int, offset: int) -> tuple[int, int]:
    if limit < 0 or offset < 0:
        raise errors.InvalidAPIParameters("limit and offset must be >= 0")
    return min(limit, MAX_LIMIT), offset


@strawberry.type
class UserInfo:
    email: Optional[str]
    full_name: Optional[str]


@strawberry.type
class KeyPair:
    user_id: str
    access_key: str
    secret_key: str
    is_active: bool
    is_admin: bool
    resource_policy: str
    rate_limit: int
    num_queries: int
    created_at: Optional[str]
    last_used: Optional[str]
    user_info: UserInfo
    projects: list[str]


def keypair_of(kp) -> KeyPair:
    return KeyPair(user_id=kp.user.email, access_key=kp.access_key, secret_key=kp.secret_key, is_active=kp.is_active,
                   is_admin=kp.is_admin, resource_policy=kp.resource_policy_id, rate_limit=kp.rate_limit,
                   num_queries=kp.num_queries, created_at=_iso(kp.created_at), last_used=_iso(kp.last_used),
                   user_info=UserInfo(email=kp.user.email, full_name=kp.user.full_name),
                   projects=[p.name for p in kp.user.projects.all()])


@strawberry.type
class ComputeContainer:
    id: str
    cluster_role: str
    cluster_idx: int
    local_rank: int
    cluster_hostname: str
    session_id: str
    image: str
    architecture: str
    registry: str
    status: str
    status_info: str
    status_data: Optional[str]
    status_changed: Optional[str]
    agent: Optional[str]
    agent_addr: Optional[str]
    container_id: Optional[str]
    resource_opts: Optional[str]
    occupied_slots: Optional[str]
    requested_slots: Optional[str]
    preopen_ports: list[int]
    service_ports: Optional[str]
    live_stat: Optional[str]
    last_stat: Optional[str]
    created_at: Optional[str]
    terminated_at: Optional[str]


def container_of(k) -> ComputeContainer:
    data = {key: v for key, v in (k.status_data or {}).items() if key != "util_series"}
    return ComputeContainer(
        id=str(k.pk), cluster_role=k.cluster_role, cluster_idx=k.cluster_idx, local_rank=k.local_rank,
        cluster_hostname=k.cluster_hostname, session_id=str(k.session_id), image=k.image, architecture=k.architecture,
        registry=k.registry, status=k.status, status_info=k.status_info, status_data=_json(data),
        status_changed=_iso(k.status_changed), agent=k.agent_id, agent_addr=k.agent_addr,
        container_id=k.container_id or None, resource_opts=_json(k.resource_opts),
        occupied_slots=_json(k.requested_slots if k.status not in ("PENDING", "TERMINATED", "CANCELLED") else {}),
        requested_slots=_json(k.requested_slots), preopen_ports=list(k.preopen_ports or []),
        service_ports=_json(k.service_ports), live_stat=_json(k.last_stat if k.status == "RUNNING" else None),
        last_stat=_json(k.last_stat), created_at=_iso(k.created_at), terminated_at=_iso(k.terminated_at))


@strawberry.type
class SessionDependencyRef:
    name: str
    id: str


@strawberry.type
class ComputeSession:
    id: str
    name: str
    session_name: str
    type: str
    session_type: str
    priority: int
    tag: Optional[str]
    image: str
    architecture: str
    domain_name: str
    group_name: str
    group_id: str
    user_id: str
    user_email: str
    access_key: Optional[str]
    scaling_group: Optional[str]
    main_kernel_id: Optional[str]
    cluster_mode: str
    cluster_size: int
    status: str
    status_info: Optional[str]
    status_data: Optional[str]
    status_changed: Optional[str]
    status_history: Optional[str]
    result: str
    created_at: Optional[str]
    terminated_at: Optional[str]
    starts_at: Optional[str]
    startup_command: Optional[str]
    occupying_slots: Optional[str]
    occupied_slots: Optional[str]
    requested_slots: Optional[str]
    idle_checks: Optional[str]
    abusing_reports: Optional[str]
    agent_ids: list[str]
    service_ports: Optional[str]
    containers: list[ComputeContainer]
    dependencies: list[SessionDependencyRef]


def session_of(s) -> ComputeSession:
    from sessions import services as session_services

    kernels = list(s.kernels.all())
    main = next((k for k in kernels if k.cluster_role == "main"), None)
    live = s.status not in ("PENDING", "TERMINATED", "CANCELLED")
    return ComputeSession(
        id=str(s.pk), name=s.name, session_name=s.name, type=s.session_type.upper(),
        session_type=s.session_type.upper(), priority=s.priority, tag=s.tag or None, image=s.image,
        architecture=s.architecture, domain_name=s.domain_id, group_name=s.project.name, group_id=str(s.project_id),
        user_id=str(s.user_id), user_email=s.user.email, access_key=s.access_key_id, scaling_group=s.scaling_group_id,
        main_kernel_id=str(main.pk) if main else None, cluster_mode=s.cluster_mode, cluster_size=s.cluster_size,
        status=s.status, status_info=s.status_info or None, status_data=_json(s.status_data),
        status_changed=_iso(s.status_changed), status_history=_json(s.status_history), result=s.result.upper(),
        created_at=_iso(s.created_at), terminated_at=_iso(s.terminated_at), starts_at=_iso(s.starts_at),
        startup_command=s.startup_command or None,
        occupying_slots=_json(s.requested_slots if live else {}), occupied_slots=_json(s.requested_slots if live else {}),
        requested_slots=_json(s.requested_slots), idle_checks=_json(session_services.idle_checks(s)),
        abusing_reports=_json([]), agent_ids=list(s.agent_ids or []),
        service_ports=_json(main.service_ports if main else []),
        containers=[container_of(k) for k in kernels],
        dependencies=[SessionDependencyRef(name=d.depends_on.name, id=str(d.depends_on_id))
                      for d in s.dependency_links.all()],
    )


@strawberry.type
class ComputeSessionList:
    items: list[ComputeSession]
    total_count: int


@strawberry.type
class Agent:
    id: str
    status: str
    status_changed: Optional[str]
    region: str
    architecture: str
    scaling_group: str
    schedulable: bool
    addr: str
    public_host: str
    version: str
    first_contact: Optional[str]
    lost_at: Optional[str]
    last_heartbeat: Optional[str]
    cpu_cur_pct: Optional[float]
    mem_cur_bytes: Optional[float]
    available_slots: Optional[str]
    occupied_slots: Optional[str]
    compute_plugins: Optional[str]
    live_stat: Optional[str]


def agent_of(a) -> Agent:
    stat = {k: v for k, v in (a.live_stat or {}).items() if not k.startswith("_")}

    def num(key):
        try:
            return float(stat[key]) if stat.get(key) is not None else None
        except (TypeError, ValueError):
            return None

    return Agent(id=a.pk, status=a.status, status_changed=_iso(a.status_changed), region=a.region,
                 architecture=a.architecture, scaling_group=a.scaling_group_id, schedulable=a.schedulable, addr=a.addr,
                 public_host=a.public_host, version=a.version, first_contact=_iso(a.first_contact),
                 lost_at=_iso(a.lost_at), last_heartbeat=_iso(a.last_heartbeat), cpu_cur_pct=num("cpu_util"),
                 mem_cur_bytes=num("mem_used"), available_slots=_json(a.available_slots),
                 occupied_slots=_json(a.occupied_slots), compute_plugins=_json(a.compute_plugins),
                 live_stat=_json(stat))


@strawberry.type
class AgentList:
    items: list[Agent]
    total_count: int


@strawberry.type
class KVPair:
    key: str
    value: str


@strawberry.type
class ResourceLimit:
    key: str
    min: Optional[str]
    max: Optional[str]


@strawberry.type
class Image:
    id: str
    name: str
    humanized_name: str
    registry: str
    architecture: str
    tag: str
    digest: Optional[str]
    size_bytes: float
    aliases: list[str]
    labels: list[KVPair]
    resource_limits: list[ResourceLimit]
    installed: bool
    is_local: bool


@strawberry.type
class VirtualFolder:
    id: Optional[str]
    host: Optional[str]
    name: Optional[str]
    created_at: Optional[str]
    creator: Optional[str]
    group: Optional[str]
    group_name: Optional[str]
    user: Optional[str]
    user_email: Optional[str]
    permission: Optional[str]
    ownership_type: Optional[str]
    status: Optional[str]
    usage_mode: Optional[str]
    cloneable: Optional[bool]


@strawberry.type
class VirtualFolderList:
    items: list[VirtualFolder]
    total_count: int


SESSION_FIELDS = {"name": "name", "status": "status", "type": "session_type", "image": "image", "tag": "tag",
                  "created_at": "created_at", "terminated_at": "terminated_at", "access_key": "access_key_id",
                  "scaling_group": "scaling_group_id", "priority": "priority", "id": "id"}
AGENT_FIELDS = {"id": "id", "status": "status", "region": "region", "scaling_group": "scaling_group_id",
                "architecture": "architecture", "first_contact": "first_contact", "schedulable": "schedulable"}


def _actor(info: Info):
    return info.context["request"].user, info.context["request"].auth


def _sessions_query(info: Info, access_key, status, group_id=None):
    from sessions import services as session_services

    user, keypair = _actor(info)
    query = session_services.visible_sessions(user)
    if access_key:
        if not (user.is_superadmin or user.is_domain_admin) and access_key != keypair.access_key:
            raise errors.InsufficientPrivilege("You may list only your own sessions")
        query = query.filter(access_key_id=access_key)
    elif not (user.is_superadmin or user.is_domain_admin):
        query = query.filter(access_key=keypair)
    if status:
        query = query.filter(status__in=[s.strip().upper() for s in status.split(",") if s.strip()])
    if group_id:
        query = query.filter(project_id=group_id)
    return query.select_related("project", "user").prefetch_related("kernels", "dependency_links__depends_on")


@strawberry.type
class Query:
    @strawberry.field
    def keypair(self, info: Info, domain_name: Optional[str] = None, access_key: Optional[str] = None) -> Optional[KeyPair]:
        from accounts import services as account_services

        user, own = _actor(info)
        if access_key and access_key != own.access_key:
            found = account_services.visible_keypairs(user).filter(access_key=access_key).first()
            return keypair_of(found) if found else None
        return keypair_of(own)

    @strawberry.field
    def compute_session_list(self, info: Info, limit: int, offset: int, status: Optional[str] = None,
                             access_key: Optional[str] = None, filter: Optional[str] = None,
                             order: Optional[str] = None, group_id: Optional[uuid.UUID] = None,
                             domain_name: Optional[str] = None) -> ComputeSessionList:
        limit, offset = page(limit, offset)
        query = _sessions_query(info, access_key, status, group_id)
        if domain_name:
            query = query.filter(domain_id=domain_name)
        query = apply_filter(query, filter, SESSION_FIELDS)
        total = query.count()
        items = [session_of(s) for s in apply_order(query, order, SESSION_FIELDS, "-created_at")[offset:offset + limit]]
        return ComputeSessionList(items=items, total_count=total)

    @strawberry.field
    def compute_session(self, info: Info, id: uuid.UUID) -> Optional[ComputeSession]:
        from sessions import services as session_services

        user, keypair = _actor(info)
        query = session_services.visible_sessions(user).select_related("project", "user").prefetch_related(
            "kernels", "dependency_links__depends_on")
        if not (user.is_superadmin or user.is_domain_admin):
            query = query.filter(access_key=keypair)
        found = query.filter(pk=id).first()
        return session_of(found) if found else None

    @strawberry.field
    def agent_list(self, info: Info, limit: int, offset: int, status: Optional[str] = None,
                   scaling_group: Optional[str] = None, filter: Optional[str] = None,
                   order: Optional[str] = None) -> AgentList:
        from agents.models import Agent as AgentModel

        user, _ = _actor(info)
        if not user.is_superadmin:
            raise errors.InsufficientPrivilege("Only superadmins list agents")
        limit, offset = page(limit, offset)
        query = AgentModel.objects.all()
        if status:
            query = query.filter(status__in=[s.strip().upper() for s in status.split(",") if s.strip()])
        if scaling_group:
            query = query.filter(scaling_group_id=scaling_group)
        query = apply_filter(query, filter, AGENT_FIELDS)
        total = query.count()
        items = [agent_of(a) for a in apply_order(query, order, AGENT_FIELDS, "id")[offset:offset + limit]]
        return AgentList(items=items, total_count=total)

    @strawberry.field
    def images(self, info: Info, is_installed: Optional[bool] = None, is_operation: Optional[bool] = None,
               architecture: Optional[str] = None) -> list[Image]:
        from agents.models import Image as ImageModel

        query = ImageModel.objects.prefetch_related("aliases", "agents").order_by("name", "architecture")
        if architecture:
            query = query.filter(architecture=architecture)
        result = []
        for image in query:
            installed = bool(list(image.agents.all())) or image.is_local
            if is_installed is not None and installed != is_installed:
                continue
            result.append(Image(
                id=str(image.pk), name=image.repository, humanized_name=image.name,
                registry=image.registry_name or "local", architecture=image.architecture, tag=image.tag,
                digest=image.config_digest or None, size_bytes=float(image.size_bytes),
                aliases=[a.alias for a in image.aliases.all()],
                labels=[KVPair(key=k, value=str(v)) for k, v in sorted((image.labels or {}).items())],
                resource_limits=[ResourceLimit(key=k, min=v.get("min"), max=v.get("max"))
                                 for k, v in sorted((image.resources or {}).items())],
                installed=installed, is_local=image.is_local))
        return result

    @strawberry.field
    def vfolder_list(self, info: Info, limit: int, offset: int, group_id: Optional[uuid.UUID] = None,
                     filter: Optional[str] = None, order: Optional[str] = None) -> VirtualFolderList:
        from vfolders import gql as vfolder_gql

        user, _ = _actor(info)
        limit, offset = page(limit, offset)
        items, total = vfolder_gql.vfolder_list(user, limit, offset, group_id=str(group_id) if group_id else None,
                                                filter=filter, order=order)
        fields = VirtualFolder.__annotations__
        return VirtualFolderList(items=[VirtualFolder(**{k: item.get(k) for k in fields}) for item in items],
                                 total_count=total)


schema = strawberry.Schema(query=Query, config=StrawberryConfig(auto_camel_case=False))


class GraphQLView(APIView):
    """Signed GraphQL endpoint; answers ``{"data": ..., "errors"?: [...]}`` (legacy
    ``/admin/graphql`` answers the data without the envelope)."""

    legacy = False

    def post(self, request):
        body = request.data if isinstance(request.data, dict) else {}
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise errors.InvalidAPIParameters("query is required")
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            raise errors.InvalidAPIParameters("variables must be an object")
        result = schema.execute_sync(query, variable_values=variables, context_value={"request": request},
                                     operation_name=body.get("operationName"))
        if result.errors:
            first = result.errors[0]
            original = getattr(first, "original_error", None)
            if isinstance(original, errors.BackendAIError):
                raise original
            return errors.problem_response(400, "graphql-error", "GraphQL-generated error.",
                                           "; ".join(e.message for e in result.errors),
                                           [e.formatted for e in result.errors])
        if self.legacy:
            return Response(result.data)
        return Response({"data": result.data})


class LegacyGraphQLView(GraphQLView):
    legacy = True


__all__ = ["schema", "GraphQLView", "LegacyGraphQLView"]
