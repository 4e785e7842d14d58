"""``POST /admin/gql``: the GraphQL documents the official client sends
(client-wire.md §8) — keypair, compute_session_list, compute_session,
agent_list, images, vfolder_list — answered by strawberry over our services.

Field names are snake_case as in Backend.AI; JSON-valued fields are
JSON-encoded strings (the client's formatters ``json.loads`` them); enums are
upper case; pagination is consistent (``total_count`` counts what the same
filter returns).

Cost limits (``CostLimits``, checked before any resolver runs): query text of at
most ``MAX_QUERY_CHARS`` characters and ``MAX_TOKENS`` tokens, at most
``MAX_NODES`` fields and fragment spreads once every fragment is expanded, no
fragment cycles, depth ``settings.GRAPHQL_MAX_DEPTH`` (strawberry's
``QueryDepthLimiter``), ``settings.GRAPHQL_MAX_ALIASES`` aliases across the
document including fragments (strawberry's alias rule), and ``limit``/``first``
arguments of at most ``settings.GRAPHQL_MAX_LIST_SIZE``.

Secrets: ``secret_key`` stays in the schema (the client asks for it) but always
answers ``accounts.services.MASKED_SECRET``; agent addresses and ids are shown
to superadmins only."""
from __future__ import annotations

import json
import re
import uuid
from typing import Optional

import strawberry
from django.conf import settings
from graphql import GraphQLError
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)
from rest_framework.response import Response
from rest_framework.views import APIView
from strawberry.extensions import SchemaExtension
from strawberry.extensions.max_aliases import create_validator as alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.schema.config import StrawberryConfig
from strawberry.types import Info

from backendai.api import errors

MAX_LIMIT = 100  # one page; larger limits (up to GRAPHQL_MAX_LIST_SIZE) are served 100 at a time
MAX_QUERY_CHARS = 16 * 1024
MAX_TOKENS = 2000
MAX_NODES = 500  # fields + fragment spreads after expanding fragments (the full introspection query is ~230)
LIST_ARGUMENTS = ("limit", "first", "last")


# --- cost limits ------------------------------------------------------------------------------

def _expanded_size(document: DocumentNode) -> list[str]:
    """Problems with the shape of ``document``: unknown or cyclic fragments, or more
    than ``MAX_NODES`` nodes once fragments are expanded.  Each fragment is sized
    once (memoised), so a fragment that spreads another twice, many levels deep,
    costs linear time here however large its expansion would be."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    sizes: dict[str, int] = {}
    visiting: set[str] = set()
    problems: list[str] = []

    def fragment_size(name: str) -> int:
        if name in sizes:
            return sizes[name]
        if name not in fragments:
            raise ValueError(f"Unknown fragment {name!r}.")
        if name in visiting:
            raise ValueError(f"Fragment {name!r} spreads itself (a fragment cycle).")
        visiting.add(name)
        sizes[name] = selection_size(fragments[name].selection_set)
        visiting.discard(name)
        return sizes[name]

    def selection_size(selection_set: SelectionSetNode | None) -> int:
        total = 0
        for selection in (selection_set.selections if selection_set else ()):
            if isinstance(selection, FieldNode):
                total += 1 + selection_size(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                total += selection_size(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += 1 + fragment_size(selection.name.value)
        return total

    try:
        for name in fragments:
            fragment_size(name)
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                size = selection_size(definition.selection_set)
                if size > MAX_NODES:
                    problems.append(f"The query selects {size} fields once fragments are expanded. "
                                    f"Allowed: {MAX_NODES}.")
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def _list_size_problems(document: DocumentNode, variables: dict) -> list[str]:
    """``limit``/``first``/``last`` arguments above ``GRAPHQL_MAX_LIST_SIZE``, literal or variable."""
    limit, problems = settings.GRAPHQL_MAX_LIST_SIZE, []

    def visit(selection_set: SelectionSetNode | None):
        for selection in (selection_set.selections if selection_set else ()):
            if isinstance(selection, FieldNode):
                for argument in selection.arguments or ():
                    if argument.name.value not in LIST_ARGUMENTS:
                        continue
                    value = argument.value
                    if isinstance(value, IntValueNode):
                        number = int(value.value)
                    elif isinstance(value, VariableNode):
                        number = variables.get(value.name.value)
                    else:
                        continue
                    if isinstance(number, int) and not isinstance(number, bool) and number > limit:
                        problems.append(f"{selection.name.value}: {argument.name.value} {number} is over the "
                                        f"maximum list size {limit}.")
                visit(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                visit(selection.selection_set)

    for definition in document.definitions:
        if isinstance(definition, (OperationDefinitionNode, FragmentDefinitionNode)):
            visit(definition.selection_set)
    return problems


class CostLimits(SchemaExtension):
    """Refuse an over-cost document before validation's heavier rules and before any
    resolver: the checks above first (cheap, and they make the rest bounded), then
    strawberry's depth limiter and alias counter as validation rules."""

    def on_operation(self):
        context = self.execution_context
        context.parse_options["max_tokens"] = MAX_TOKENS
        context.validation_rules = context.validation_rules + (
            depth_rule(settings.GRAPHQL_MAX_DEPTH, None), alias_rule(settings.GRAPHQL_MAX_ALIASES))
        yield

    def on_parse(self):
        query = self.execution_context.query or ""
        if len(query) > MAX_QUERY_CHARS:
            raise GraphQLError(f"The query is {len(query)} characters long. Allowed: {MAX_QUERY_CHARS}.")
        yield

    def on_validate(self):
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            problems = _expanded_size(document) or _list_size_problems(document, context.variables or {})
            if problems:
                # strawberry skips its own validation when errors are already set
                context.pre_execution_errors = [GraphQLError(p) for p in problems]
        yield


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
    if limit > settings.GRAPHQL_MAX_LIST_SIZE:
        raise errors.InvalidAPIParameters(f"limit: at most {settings.GRAPHQL_MAX_LIST_SIZE}")
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
    """A keypair as GraphQL shows it, to anyone, its owner included: the secret key is
    shown only once, in the answer that created or regenerated it, never here."""
    from accounts.services import MASKED_SECRET

    return KeyPair(user_id=kp.user.email, access_key=kp.access_key, secret_key=MASKED_SECRET, is_active=kp.is_active,
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


def container_of(k, show_agents: bool = False) -> ComputeContainer:
    data = {key: v for key, v in (k.status_data or {}).items() if key != "util_series"}
    return ComputeContainer(
        id=str(k.pk), cluster_role=k.cluster_role, cluster_idx=k.cluster_idx, local_rank=k.local_rank,
        cluster_hostname=k.cluster_hostname, session_id=str(k.session_id), image=k.image, architecture=k.architecture,
        registry=k.registry, status=k.status, status_info=k.status_info, status_data=_json(data),
        status_changed=_iso(k.status_changed), agent=k.agent_id if show_agents else None,
        agent_addr=k.agent_addr if show_agents else None,
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


def session_of(s, show_agents: bool = False) -> ComputeSession:
    """``show_agents``: agent ids and addresses are for superadmins (as in Backend.AI)."""
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
        abusing_reports=_json([]), agent_ids=list(s.agent_ids or []) if show_agents else [],
        service_ports=_json(main.service_ports if main else []),
        containers=[container_of(k, show_agents) for k in kernels],
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
        show = _actor(info)[0].is_superadmin
        items = [session_of(s, show) for s in
                 apply_order(query, order, SESSION_FIELDS, "-created_at")[offset:offset + limit]]
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
        return session_of(found, user.is_superadmin) if found else None

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
        cap = settings.GRAPHQL_MAX_LIST_SIZE  # an unbounded list: at most this many
        if architecture:
            query = query.filter(architecture=architecture)
        result = []
        for image in query[:cap] if is_installed is None else query.iterator(chunk_size=cap):
            if len(result) >= cap:
                break
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


schema = strawberry.Schema(query=Query, config=StrawberryConfig(auto_camel_case=False), extensions=[CostLimits])


def _public_error(error: GraphQLError) -> dict:
    """An error as the caller sees it: a resolver's unexpected exception (a database
    error, a bug) is not echoed back, only that it happened (the log has it)."""
    original = getattr(error, "original_error", None)
    if original is None or isinstance(original, (GraphQLError, errors.BackendAIError)):
        return error.formatted
    return {"message": "Internal error while resolving this field.", "path": error.path,
            "locations": error.formatted.get("locations")}


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
            shown = [_public_error(e) for e in result.errors]
            return errors.problem_response(400, "graphql-error", "GraphQL-generated error.",
                                           "; ".join(e["message"] for e in shown), shown)
        if self.legacy:
            return Response(result.data)
        return Response({"data": result.data})


class LegacyGraphQLView(GraphQLView):
    legacy = True


__all__ = ["schema", "GraphQLView", "LegacyGraphQLView"]
