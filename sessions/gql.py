"""The sessions part of ``/admin/gql`` (client-wire.md §8): ``compute_session_list``
and ``compute_session``, with the session, container and dependency types; resource
presets (``resource_preset``, ``resource_presets``, and the superadmin-only
``create_resource_preset``, ``modify_resource_preset``, ``delete_resource_preset``
with Backend.AI's arguments and payloads, over ``sessions.presets``).
``backendai/api/graphql.py`` merges this ``Query`` and ``Mutation`` into the schema.

Agent ids and addresses of kernels and sessions are shown to superadmins only
(as in Backend.AI)."""
from __future__ import annotations

import uuid
from typing import Optional

import strawberry
from strawberry.types import Info

from backendai.api import errors
from backendai.api.gqlkit import (
    BigInt,
    JSONString,
    actor,
    apply_filter,
    apply_order,
    iso_or_none,
    json_or_none,
    page,
)
from backendai.prepared import Prepared, attach
from sessions import presets as preset_services
from sessions import services as session_services
from sessions.lifecycle import DEAD_SESSION, KernelStatus, SessionStatus
from sessions.models import Kernel, SessionDependency

# A container shows its requested slots as occupied unless it is not placed yet or has ended cleanly.
_NOT_HOLDING_KERNEL = frozenset({KernelStatus.PENDING, KernelStatus.TERMINATED, KernelStatus.CANCELLED})

SESSION_FIELDS = {"name": "name", "status": "status", "type": "session_type", "image": "image", "tag": "tag",
                  "created_at": "created_at", "terminated_at": "terminated_at", "access_key": "access_key_id",
                  "scaling_group": "scaling_group_id", "priority": "priority", "id": "id"}


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
        registry=k.registry, status=k.status, status_info=k.status_info, status_data=json_or_none(data),
        status_changed=iso_or_none(k.status_changed), agent=k.agent_id if show_agents else None,
        agent_addr=k.agent_addr if show_agents else None,
        container_id=k.container_id or None, resource_opts=json_or_none(k.resource_opts),
        occupied_slots=json_or_none(
            k.requested_slots if k.status not in _NOT_HOLDING_KERNEL else {}),
        requested_slots=json_or_none(k.requested_slots), preopen_ports=list(k.preopen_ports or []),
        service_ports=json_or_none(k.service_ports),
        live_stat=json_or_none(k.last_stat if k.status == KernelStatus.RUNNING else None),
        last_stat=json_or_none(k.last_stat), created_at=iso_or_none(k.created_at),
        terminated_at=iso_or_none(k.terminated_at))


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
    kernels = list(s.kernels.all())
    main = next((k for k in kernels if k.cluster_role == "main"), None)
    live = s.status != SessionStatus.PENDING and s.status not in DEAD_SESSION
    return ComputeSession(
        id=str(s.pk), name=s.name, session_name=s.name, type=s.session_type.upper(),
        session_type=s.session_type.upper(), priority=s.priority, tag=s.tag or None, image=s.image,
        architecture=s.architecture, domain_name=s.domain_id, group_name=s.project.name, group_id=str(s.project_id),
        user_id=str(s.user_id), user_email=s.user.email, access_key=s.access_key_id, scaling_group=s.scaling_group_id,
        main_kernel_id=str(main.pk) if main else None, cluster_mode=s.cluster_mode, cluster_size=s.cluster_size,
        status=s.status, status_info=s.status_info or None, status_data=json_or_none(s.status_data),
        status_changed=iso_or_none(s.status_changed), status_history=json_or_none(s.status_history),
        result=s.result.upper(), created_at=iso_or_none(s.created_at), terminated_at=iso_or_none(s.terminated_at),
        starts_at=iso_or_none(s.starts_at), startup_command=s.startup_command or None,
        occupying_slots=json_or_none(s.requested_slots if live else {}),
        occupied_slots=json_or_none(s.requested_slots if live else {}),
        requested_slots=json_or_none(s.requested_slots), idle_checks=json_or_none(session_services.idle_checks(s)),
        abusing_reports=json_or_none([]), agent_ids=list(s.agent_ids or []) if show_agents else [],
        service_ports=json_or_none(main.service_ports if main else []),
        containers=[container_of(k, show_agents) for k in kernels],
        dependencies=[SessionDependencyRef(name=d.depends_on.name, id=str(d.depends_on_id))
                      for d in s.dependency_links.all()],
    )


@strawberry.type
class ComputeSessionList:
    items: list[ComputeSession]
    total_count: int


def _sessions_query(info: Info, access_key, status, group_id=None):
    user, keypair = actor(info)
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
    # the idle checks of every item read its keypair's policy: joined here, not one query per item
    return query.select_related("project", "user", "access_key__resource_policy")


_session_page = Prepared("compute_session_list page")
_kernels_of_sessions = Prepared("kernels of sessions")
_dependencies_of_sessions = Prepared("dependencies of sessions")


def _with_relations(sessions: list) -> list:
    """The kernels and the dependencies of a page of sessions: one query each (``prefetch_related``'s)."""
    ids = [s.pk for s in sessions]
    if ids:
        attach(sessions, "kernels", _kernels_of_sessions.fetch(Kernel.objects.filter(session_id__in=ids)))
        attach(sessions, "dependency_links", _dependencies_of_sessions.fetch(
            SessionDependency.objects.filter(session_id__in=ids).select_related("depends_on")))
    return sessions


# --- resource presets (sessions.presets: superadmins change them, everyone reads those offered to them) ---

PRESET_FIELDS = {"name": "name", "scaling_group_name": "scaling_group_id", "shared_memory": "shared_memory"}


@strawberry.type(name="ResourcePreset")
class ResourcePresetType:
    name: str
    resource_slots: JSONString
    shared_memory: Optional[BigInt]
    scaling_group_name: Optional[str]


def preset_of(p) -> ResourcePresetType:
    return ResourcePresetType(name=p.name, resource_slots=p.resource_slots, shared_memory=p.shared_memory,
                              scaling_group_name=p.scaling_group_id)


@strawberry.input
class CreateResourcePresetInput:
    resource_slots: JSONString
    shared_memory: Optional[str] = None
    scaling_group_name: Optional[str] = None


@strawberry.input
class ModifyResourcePresetInput:
    name: Optional[str] = strawberry.UNSET  # a new name
    resource_slots: Optional[JSONString] = strawberry.UNSET
    shared_memory: Optional[str] = strawberry.UNSET  # null: none
    scaling_group_name: Optional[str] = strawberry.UNSET  # null: offered everywhere


@strawberry.type
class CreateResourcePreset:
    ok: bool
    msg: Optional[str]
    resource_preset: Optional[ResourcePresetType]


@strawberry.type
class ModifyResourcePreset:
    ok: bool
    msg: Optional[str]


@strawberry.type
class DeleteResourcePreset:
    ok: bool
    msg: Optional[str]


def _given(value):
    return preset_services.UNCHANGED if value is strawberry.UNSET else value


def _preset_name(name: Optional[str]) -> str:
    if not name:
        raise errors.InvalidAPIParameters("name: the resource preset's name is required")
    return name


@strawberry.type
class Query:
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
        show = actor(info)[0].is_superadmin
        page_query = apply_order(query, order, SESSION_FIELDS, "-created_at")[offset:offset + limit]
        items = [session_of(s, show) for s in _with_relations(_session_page.fetch(page_query))]
        return ComputeSessionList(items=items, total_count=total)

    @strawberry.field
    def compute_session(self, info: Info, id: uuid.UUID) -> Optional[ComputeSession]:
        user, keypair = actor(info)
        query = session_services.visible_sessions(user).select_related(
            "project", "user", "access_key__resource_policy")
        if not (user.is_superadmin or user.is_domain_admin):
            query = query.filter(access_key=keypair)
        found = _with_relations(_session_page.fetch(query.filter(pk=id)[:1]))
        return session_of(found[0], user.is_superadmin) if found else None

    @strawberry.field
    def resource_preset(self, info: Info, name: Optional[str] = None) -> Optional[ResourcePresetType]:
        found = preset_services.get_preset(actor(info)[0], _preset_name(name))
        return preset_of(found) if found else None

    @strawberry.field
    def resource_presets(self, info: Info, filter: Optional[str] = None,
                         order: Optional[str] = None) -> list[ResourcePresetType]:
        query = apply_filter(preset_services.visible_presets(actor(info)[0]), filter, PRESET_FIELDS)
        return [preset_of(p) for p in apply_order(query, order, PRESET_FIELDS, "name")]


@strawberry.type
class Mutation:
    @strawberry.mutation
    def create_resource_preset(self, info: Info, name: str, props: CreateResourcePresetInput) -> CreateResourcePreset:
        preset = preset_services.create_preset(actor(info)[0], name, props.resource_slots, props.shared_memory,
                                               props.scaling_group_name)
        return CreateResourcePreset(ok=True, msg="success", resource_preset=preset_of(preset))

    @strawberry.mutation
    def modify_resource_preset(self, info: Info, props: ModifyResourcePresetInput,
                               name: Optional[str] = None) -> ModifyResourcePreset:
        preset_services.modify_preset(
            actor(info)[0], _preset_name(name), new_name=_given(props.name),
            resource_slots=_given(props.resource_slots), shared_memory=_given(props.shared_memory),
            scaling_group=_given(props.scaling_group_name))
        return ModifyResourcePreset(ok=True, msg="success")

    @strawberry.mutation
    def delete_resource_preset(self, info: Info, name: Optional[str] = None) -> DeleteResourcePreset:
        preset_services.delete_preset(actor(info)[0], _preset_name(name))
        return DeleteResourcePreset(ok=True, msg="success")
