"""The agents part of ``/admin/gql`` (client-wire.md §8), with Backend.AI's names,
arguments and shapes as the official clients (23.09, 24.09, 26.09) send them:

* agents: ``agent``, ``agents``, ``agent_list``, ``agent_summary``,
  ``agent_summary_list``: superadmins only (Backend.AI's hide-agents: agent ids
  and addresses are not shown to anyone else);
* scaling groups: ``scaling_group``, ``scaling_groups``, ``scaling_groups_for_domain``,
  ``scaling_groups_for_user_group``, ``scaling_groups_for_keypair`` (superadmins
  see every group, domain admins those of their domain, users those they may use);
  the mutations ``create_scaling_group``, ``modify_scaling_group``,
  ``delete_scaling_group`` and the domain / user group / keypair associations
  (superadmins only);
* images: ``image`` (by reference and architecture, or id), ``images``,
  ``customized_images`` (everyone sees what their domain's allowed registries
  allow; superadmins everything); ``rescan_images`` (a background task: the
  answer's ``task_id`` is followed on ``/events/background-task``; with no registry
  configured it finishes done with nothing to scan),
  ``alias_image``, ``dealias_image``, ``forget_image``, ``forget_image_by_id``
  (superadmins only);
* container registries: ``container_registry``, ``container_registries`` and
  ``create_/modify_/delete_container_registry`` (superadmins only; the password is
  never answered).

Every resolver calls ``agents.services`` (the rules the Django admin uses).  A
mutation refused to the caller raises (a GraphQL error naming the reason, the
HTTP status of the refusal) and changes nothing; a mutation that fails on its
input answers ``ok: false`` with ``msg``, as Backend.AI does.
``backendai/api/graphql.py`` merges this ``Query`` and ``Mutation`` into the schema."""
from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Callable, Optional

import strawberry
from django.conf import settings
from strawberry.types import Info

from agents import services
from backendai.api import errors
from backendai.api.gqlkit import (
    JSONString,
    actor,
    apply_filter,
    apply_order,
    iso_or_none,
    json_or_none,
    page,
    typed_mutation,
)

AGENT_FIELDS = {"id": "id", "status": "status", "region": "region", "scaling_group": "scaling_group_id",
                "architecture": "architecture", "first_contact": "first_contact", "schedulable": "schedulable"}
MASKED = "********"
REFUSALS = (errors.InsufficientPrivilege, errors.GenericForbidden)


# --- agents -----------------------------------------------------------------------------------

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
    hardware_metadata: Optional[str]
    local_config: Optional[str]


def _number(value) -> Optional[Decimal]:
    try:
        return Decimal(str(value)) if value is not None else None
    except (InvalidOperation, ValueError):
        return None


def _live_stat(agent, stat: dict) -> Optional[dict]:
    """The agent's last reported figures in Backend.AI's shape (``node`` and ``devices`` maps of
    ``{current, capacity, pct, unit_hint}``), which the clients' agent formatter reads."""
    cpu, mem = _number(stat.get("cpu_util")), _number(stat.get("mem_used"))
    if cpu is None and mem is None:
        return None
    cores = _number((agent.available_slots or {}).get("cpu")) or Decimal(1)
    mem_total = _number((agent.available_slots or {}).get("mem")) or Decimal(0)
    node = {}
    if cpu is not None:
        node["cpu_util"] = {"current": str(cpu), "capacity": str(cores * 100),
                            "pct": str(round(cpu / cores, 2)), "unit_hint": "percent"}
    if mem is not None:
        pct = round(mem * 100 / mem_total, 2) if mem_total else Decimal(0)
        node["mem"] = {"current": str(int(mem)), "capacity": str(int(mem_total)), "pct": str(pct),
                       "unit_hint": "bytes"}
    return {"node": node, "devices": {"cpu_util": {}, "mem": {}}}


def _hardware_metadata(agent) -> dict:
    """Per compute plugin: its status and what it reported (the devices it offers)."""
    plugins: dict[str, dict] = {name: {"status": "healthy", "status_info": None, "metadata": dict(info or {})}
                                for name, info in sorted((agent.compute_plugins or {}).items())}
    for device in agent.devices or []:
        kind = str((device or {}).get("slot") or "device").split(".")[0]
        entry = plugins.setdefault(kind, {"status": "healthy", "status_info": None, "metadata": {}})
        entry["metadata"].setdefault("devices", []).append(device)
    return plugins


def agent_of(a) -> Agent:
    stat = {k: v for k, v in (a.live_stat or {}).items() if not k.startswith("_")}

    def num(key):
        try:
            return float(stat[key]) if stat.get(key) is not None else None
        except (TypeError, ValueError):
            return None

    local_config = {"agent": {"id": a.pk, "region": a.region, "scaling_group": a.scaling_group_id,
                              "backend": a.backend, "architecture": a.architecture, "version": a.version,
                              "public_host": a.public_host}}
    return Agent(id=a.pk, status=a.status, status_changed=iso_or_none(a.status_changed), region=a.region,
                 architecture=a.architecture, scaling_group=a.scaling_group_id, schedulable=a.schedulable, addr=a.addr,
                 public_host=a.public_host, version=a.version, first_contact=iso_or_none(a.first_contact),
                 lost_at=iso_or_none(a.lost_at), last_heartbeat=iso_or_none(a.last_heartbeat),
                 cpu_cur_pct=num("cpu_util"), mem_cur_bytes=num("mem_used"),
                 available_slots=json_or_none(a.available_slots), occupied_slots=json_or_none(a.occupied_slots),
                 compute_plugins=json_or_none(a.compute_plugins), live_stat=json_or_none(_live_stat(a, stat)),
                 hardware_metadata=json_or_none(_hardware_metadata(a)), local_config=json_or_none(local_config))


@strawberry.type
class AgentList:
    items: list[Agent]
    total_count: int


@strawberry.type
class AgentSummary:
    id: str
    status: str
    scaling_group: str
    schedulable: bool
    architecture: str
    available_slots: Optional[str]
    occupied_slots: Optional[str]


def summary_of(a) -> AgentSummary:
    return AgentSummary(id=a.pk, status=a.status, scaling_group=a.scaling_group_id, schedulable=a.schedulable,
                        architecture=a.architecture, available_slots=json_or_none(a.available_slots),
                        occupied_slots=json_or_none(a.occupied_slots))


@strawberry.type
class AgentSummaryList:
    items: list[AgentSummary]
    total_count: int


def _agent_page(info: Info, limit, offset, status, scaling_group, filter, order, doing: str):
    user, _ = actor(info)
    query = services.visible_agents(user, doing)
    limit, offset = page(limit, offset)
    if status:
        query = query.filter(status__in=[s.strip().upper() for s in status.split(",") if s.strip()])
    if scaling_group:
        query = query.filter(scaling_group_id=scaling_group)
    query = apply_filter(query, filter, AGENT_FIELDS)
    return query.count(), list(apply_order(query, order, AGENT_FIELDS, "id")[offset:offset + limit])


# --- images -----------------------------------------------------------------------------------

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
    supported_accelerators: list[str]
    installed: bool
    is_local: bool
    last_used_at: Optional[str]


def image_of(image, installed: bool, aliases: Optional[list[str]] = None) -> Image:
    return Image(
        id=str(image.pk), name=image.repository, humanized_name=image.name,
        registry=image.registry_name or services.LOCAL_REGISTRY, architecture=image.architecture, tag=image.tag,
        digest=image.config_digest or None, size_bytes=float(image.size_bytes),
        aliases=aliases if aliases is not None else [a.alias for a in image.aliases.all()],
        labels=[KVPair(key=k, value=str(v)) for k, v in sorted((image.labels or {}).items())],
        resource_limits=[ResourceLimit(key=k, min=v.get("min"), max=v.get("max"))
                         for k, v in sorted((image.resources or {}).items())],
        supported_accelerators=[a.strip() for a in (image.accelerators or "").split(",") if a.strip()],
        installed=installed, is_local=image.is_local, last_used_at=None)


def _one_image(image) -> Image:
    return image_of(image, image.is_local or image.agents.exists())


# --- scaling groups ---------------------------------------------------------------------------

@strawberry.type
class ScalingGroup:
    name: str
    description: str
    is_active: bool
    is_public: bool
    created_at: Optional[str]
    driver: str
    driver_opts: Optional[JSONString]
    scheduler: str
    scheduler_opts: Optional[JSONString]
    use_host_network: bool
    wsproxy_addr: Optional[str]
    wsproxy_api_token: Optional[str]


def scaling_group_of(group) -> ScalingGroup:
    return ScalingGroup(
        name=group.name, description=group.description, is_active=group.is_active, is_public=group.is_public,
        created_at=iso_or_none(group.created_at), driver=group.driver, driver_opts=group.driver_opts or {},
        scheduler=group.scheduler, scheduler_opts=group.scheduler_opts or {}, use_host_network=group.use_host_network,
        wsproxy_addr=group.wsproxy_addr or None,
        # a system secret: write-only here as in the admin, whoever asks
        wsproxy_api_token=MASKED if group.wsproxy_api_token else None)


def _group_list(query, is_active: Optional[bool]) -> list[ScalingGroup]:
    if is_active is not None:
        query = query.filter(is_active=is_active)
    return [scaling_group_of(g) for g in query.order_by("name")[:settings.GRAPHQL_MAX_LIST_SIZE]]


@strawberry.input
class CreateScalingGroupInput:
    description: Optional[str] = ""
    is_active: Optional[bool] = True
    is_public: Optional[bool] = True
    wsproxy_addr: Optional[str] = None
    wsproxy_api_token: Optional[str] = None
    driver: str
    driver_opts: Optional[JSONString] = strawberry.UNSET
    scheduler: str
    scheduler_opts: Optional[JSONString] = strawberry.UNSET
    use_host_network: Optional[bool] = False


@strawberry.input
class ModifyScalingGroupInput:
    description: Optional[str] = strawberry.UNSET
    is_active: Optional[bool] = strawberry.UNSET
    is_public: Optional[bool] = strawberry.UNSET
    wsproxy_addr: Optional[str] = strawberry.UNSET
    wsproxy_api_token: Optional[str] = strawberry.UNSET
    driver: Optional[str] = strawberry.UNSET
    driver_opts: Optional[JSONString] = strawberry.UNSET
    scheduler: Optional[str] = strawberry.UNSET
    scheduler_opts: Optional[JSONString] = strawberry.UNSET
    use_host_network: Optional[bool] = strawberry.UNSET


def _props(props, names) -> dict:
    return {name: getattr(props, name) for name in names if getattr(props, name) is not strawberry.UNSET}


# --- container registries ---------------------------------------------------------------------

@strawberry.type
class ContainerRegistryConfig:
    url: str
    type: str
    project: Optional[list[str]]
    username: Optional[str]
    password: Optional[str]
    ssl_verify: Optional[bool]


@strawberry.type
class ContainerRegistry:
    id: strawberry.ID
    hostname: str
    config: ContainerRegistryConfig


def registry_of(registry) -> ContainerRegistry:
    return ContainerRegistry(id=strawberry.ID(str(registry.pk)), hostname=registry.registry_name,
                             config=ContainerRegistryConfig(
                                 url=registry.url, type=registry.type,
                                 project=[registry.project] if registry.project else [],
                                 username=registry.username or None,
                                 # a system secret: never answered, only whether one is set
                                 password=MASKED if registry.password else None, ssl_verify=registry.ssl_verify))


@strawberry.input
class CreateContainerRegistryInput:
    url: str
    type: str
    project: Optional[list[str]] = strawberry.UNSET
    username: Optional[str] = strawberry.UNSET
    password: Optional[str] = strawberry.UNSET
    ssl_verify: Optional[bool] = strawberry.UNSET
    is_global: Optional[bool] = strawberry.UNSET


@strawberry.input
class ModifyContainerRegistryInput:
    url: Optional[str] = strawberry.UNSET
    type: Optional[str] = strawberry.UNSET
    project: Optional[list[str]] = strawberry.UNSET
    username: Optional[str] = strawberry.UNSET
    password: Optional[str] = strawberry.UNSET
    ssl_verify: Optional[bool] = strawberry.UNSET
    is_global: Optional[bool] = strawberry.UNSET


# --- mutation answers (one type per mutation, as Backend.AI names them) -----------------------

@strawberry.type
class AgentsMutationResult:
    ok: bool
    msg: str


def _result_types(*names: str) -> dict[str, type]:
    return {name: strawberry.type(type(name, (AgentsMutationResult,), {"__module__": __name__}))
            for name in names}


_SIMPLE = _result_types(
    "ModifyScalingGroup", "DeleteScalingGroup", "AssociateScalingGroupWithDomain",
    "DisassociateScalingGroupWithDomain", "DisassociateAllScalingGroupsWithDomain",
    "AssociateScalingGroupWithUserGroup", "DisassociateScalingGroupWithUserGroup",
    "DisassociateAllScalingGroupsWithGroup", "AssociateScalingGroupWithKeyPair",
    "DisassociateScalingGroupWithKeyPair", "AliasImage", "DealiasImage", "ForgetImage")
ModifyScalingGroup = _SIMPLE["ModifyScalingGroup"]
DeleteScalingGroup = _SIMPLE["DeleteScalingGroup"]
AssociateScalingGroupWithDomain = _SIMPLE["AssociateScalingGroupWithDomain"]
DisassociateScalingGroupWithDomain = _SIMPLE["DisassociateScalingGroupWithDomain"]
DisassociateAllScalingGroupsWithDomain = _SIMPLE["DisassociateAllScalingGroupsWithDomain"]
AssociateScalingGroupWithUserGroup = _SIMPLE["AssociateScalingGroupWithUserGroup"]
DisassociateScalingGroupWithUserGroup = _SIMPLE["DisassociateScalingGroupWithUserGroup"]
DisassociateAllScalingGroupsWithGroup = _SIMPLE["DisassociateAllScalingGroupsWithGroup"]
AssociateScalingGroupWithKeyPair = _SIMPLE["AssociateScalingGroupWithKeyPair"]
DisassociateScalingGroupWithKeyPair = _SIMPLE["DisassociateScalingGroupWithKeyPair"]
AliasImage = _SIMPLE["AliasImage"]
DealiasImage = _SIMPLE["DealiasImage"]
ForgetImage = _SIMPLE["ForgetImage"]


@strawberry.type
class CreateScalingGroup(AgentsMutationResult):
    scaling_group: Optional[ScalingGroup]


@strawberry.type
class RescanImages(AgentsMutationResult):
    task_id: Optional[str]


@strawberry.type
class ForgetImageById(AgentsMutationResult):
    image: Optional[Image]


@strawberry.type
class CreateContainerRegistry:
    container_registry: Optional[ContainerRegistry]


@strawberry.type
class ModifyContainerRegistry:
    container_registry: Optional[ContainerRegistry]


@strawberry.type
class DeleteContainerRegistry:
    container_registry: Optional[ContainerRegistry]


def _attempt(call: Callable, ok_msg: str = "success"):
    """``(ok, msg, value)`` of a service call: a refusal propagates (a GraphQL error,
    nothing changed); any other API error is ``ok: false`` with its message."""
    try:
        return True, ok_msg, call()
    except REFUSALS:
        raise
    except errors.BackendAIError as exc:
        return False, str(exc.msg or exc.error_title), None


def _simple(result_type, call: Callable, ok_msg: str = "success"):
    ok, msg, _ = _attempt(call, ok_msg)
    return result_type(ok=ok, msg=msg)


def _association(result_type, call: Callable):
    ok, msg, changed = _attempt(call)
    if ok and changed is False:
        msg = "nothing to change"
    return result_type(ok=ok, msg=msg)


def _association_mutation(result_type, change: Callable, argument: str, argument_type, keyword: str):
    """The mutation ``(scaling_group: String!, <argument>: <argument_type>!) -> result_type``
    that runs ``change(user, scaling_group, <keyword>=<argument>)``."""
    def body(info: Info, scaling_group: str, **target):
        user, _ = actor(info)
        return _association(result_type, lambda: change(user, scaling_group, **{keyword: target[argument]}))

    return typed_mutation(body, {"scaling_group": str, argument: argument_type}, result_type)


# --- root fields ------------------------------------------------------------------------------

@strawberry.type
class Query:
    @strawberry.field
    def agent(self, info: Info, agent_id: str) -> Optional[Agent]:
        user, _ = actor(info)
        found = services.agent_detail(user, agent_id)
        return agent_of(found) if found is not None else None

    @strawberry.field
    def agents(self, info: Info, scaling_group: Optional[str] = None, status: Optional[str] = None) -> list[Agent]:
        _, items = _agent_page(info, settings.GRAPHQL_MAX_LIST_SIZE, 0, status, scaling_group, None, None,
                               "list agents")
        return [agent_of(a) for a in items]

    @strawberry.field
    def agent_list(self, info: Info, limit: int, offset: int, status: Optional[str] = None,
                   scaling_group: Optional[str] = None, filter: Optional[str] = None,
                   order: Optional[str] = None) -> AgentList:
        total, items = _agent_page(info, limit, offset, status, scaling_group, filter, order, "list agents")
        return AgentList(items=[agent_of(a) for a in items], total_count=total)

    @strawberry.field
    def agent_summary(self, info: Info, agent_id: str) -> Optional[AgentSummary]:
        user, _ = actor(info)
        found = services.agent_detail(user, agent_id)
        return summary_of(found) if found is not None else None

    @strawberry.field
    def agent_summary_list(self, info: Info, limit: int, offset: int, status: Optional[str] = None,
                           scaling_group: Optional[str] = None, filter: Optional[str] = None,
                           order: Optional[str] = None) -> AgentSummaryList:
        total, items = _agent_page(info, limit, offset, status, scaling_group, filter, order, "list agents")
        return AgentSummaryList(items=[summary_of(a) for a in items], total_count=total)

    @strawberry.field
    def scaling_group(self, info: Info, name: Optional[str] = None) -> Optional[ScalingGroup]:
        user, _ = actor(info)
        found = services.visible_scaling_groups(user).filter(pk=name or "").first()
        return scaling_group_of(found) if found is not None else None

    @strawberry.field
    def scaling_groups(self, info: Info, name: Optional[str] = None,
                       is_active: Optional[bool] = None) -> list[ScalingGroup]:
        user, _ = actor(info)
        query = services.visible_scaling_groups(user)
        return _group_list(query.filter(pk=name) if name else query, is_active)

    @strawberry.field
    def scaling_groups_for_domain(self, info: Info, domain: str,
                                  is_active: Optional[bool] = None) -> list[ScalingGroup]:
        user, _ = actor(info)
        return _group_list(services.scaling_groups_for(user, domain=domain), is_active)

    @strawberry.field
    def scaling_groups_for_user_group(self, info: Info, user_group: str,
                                      is_active: Optional[bool] = None) -> list[ScalingGroup]:
        user, _ = actor(info)
        return _group_list(services.scaling_groups_for(user, project=user_group), is_active)

    @strawberry.field
    def scaling_groups_for_keypair(self, info: Info, access_key: str,
                                   is_active: Optional[bool] = None) -> list[ScalingGroup]:
        user, _ = actor(info)
        return _group_list(services.scaling_groups_for(user, access_key=access_key), is_active)

    @strawberry.field
    def image(self, info: Info, reference: Optional[str] = None, architecture: Optional[str] = None,
              id: Optional[str] = None) -> Optional[Image]:
        user, _ = actor(info)
        if id is None and not reference:
            raise errors.InvalidAPIParameters("image: give reference (and architecture) or id")
        found = services.find_image(user, reference=reference, architecture=architecture, image_id=id)
        return _one_image(found) if found is not None else None

    @strawberry.field
    def images(self, info: Info, is_installed: Optional[bool] = None, is_operation: Optional[bool] = None,
               architecture: Optional[str] = None) -> list[Image]:
        user, _ = actor(info)
        query = services.visible_images(user).prefetch_related("aliases", "agents").order_by("name", "architecture")
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
            result.append(image_of(image, installed))
        return result

    @strawberry.field
    def customized_images(self, info: Info) -> list[Image]:
        user, _ = actor(info)
        query = services.customized_images(user).prefetch_related("aliases", "agents").order_by("name")
        return [image_of(i, i.is_local or bool(list(i.agents.all())))
                for i in query[:settings.GRAPHQL_MAX_LIST_SIZE]]

    @strawberry.field
    def container_registry(self, info: Info, hostname: str) -> Optional[ContainerRegistry]:
        user, _ = actor(info)
        found = services.visible_registries(user).filter(registry_name=hostname).first()
        return registry_of(found) if found is not None else None

    @strawberry.field
    def container_registries(self, info: Info) -> list[ContainerRegistry]:
        user, _ = actor(info)
        return [registry_of(r) for r in services.visible_registries(user)[:settings.GRAPHQL_MAX_LIST_SIZE]]


@strawberry.type
class Mutation:
    @strawberry.mutation
    def create_scaling_group(self, info: Info, name: str, props: CreateScalingGroupInput) -> CreateScalingGroup:
        user, _ = actor(info)
        ok, msg, group = _attempt(lambda: services.create_scaling_group(
            user, name, _props(props, services.SCALING_GROUP_PROPS)))
        return CreateScalingGroup(ok=ok, msg=msg, scaling_group=scaling_group_of(group) if group else None)

    @strawberry.mutation
    def modify_scaling_group(self, info: Info, name: str, props: ModifyScalingGroupInput) -> ModifyScalingGroup:
        user, _ = actor(info)
        return _simple(ModifyScalingGroup, lambda: services.modify_scaling_group(
            user, name, _props(props, services.SCALING_GROUP_PROPS)))

    @strawberry.mutation
    def delete_scaling_group(self, info: Info, name: str) -> DeleteScalingGroup:
        user, _ = actor(info)
        return _simple(DeleteScalingGroup, lambda: services.delete_scaling_group(user, name))

    @strawberry.mutation
    def disassociate_all_scaling_groups_with_domain(self, info: Info,
                                                    domain: str) -> DisassociateAllScalingGroupsWithDomain:
        user, _ = actor(info)
        return _simple(DisassociateAllScalingGroupsWithDomain,
                       lambda: services.disassociate_all_scaling_groups(user, domain=domain))

    @strawberry.mutation
    def disassociate_all_scaling_groups_with_group(self, info: Info,
                                                   user_group: uuid.UUID) -> DisassociateAllScalingGroupsWithGroup:
        user, _ = actor(info)
        return _simple(DisassociateAllScalingGroupsWithGroup,
                       lambda: services.disassociate_all_scaling_groups(user, project=user_group))

    # (dis)associating a scaling group with one domain, project or keypair: the same call each
    # time (see ``_association_mutation``); the clients declare ``$user_group: String!`` for the
    # disassociation (``UUID!`` for the association): a String takes both, checked by the service
    associate_scaling_group_with_domain = _association_mutation(
        AssociateScalingGroupWithDomain, services.associate_scaling_group, "domain", str, "domain")
    disassociate_scaling_group_with_domain = _association_mutation(
        DisassociateScalingGroupWithDomain, services.disassociate_scaling_group, "domain", str, "domain")
    associate_scaling_group_with_user_group = _association_mutation(
        AssociateScalingGroupWithUserGroup, services.associate_scaling_group, "user_group", uuid.UUID, "project")
    disassociate_scaling_group_with_user_group = _association_mutation(
        DisassociateScalingGroupWithUserGroup, services.disassociate_scaling_group, "user_group", str, "project")
    associate_scaling_group_with_keypair = _association_mutation(
        AssociateScalingGroupWithKeyPair, services.associate_scaling_group, "access_key", str, "access_key")
    disassociate_scaling_group_with_keypair = _association_mutation(
        DisassociateScalingGroupWithKeyPair, services.disassociate_scaling_group, "access_key", str, "access_key")

    @strawberry.mutation
    def rescan_images(self, info: Info, registry: Optional[str] = None,
                      project: Optional[str] = None) -> RescanImages:
        user, _ = actor(info)
        ok, msg, task_id = _attempt(lambda: services.start_rescan(user, registry, project),
                                    "Started a background task to rescan the registries.")
        return RescanImages(ok=ok, msg=msg, task_id=task_id)

    @strawberry.mutation
    def alias_image(self, info: Info, alias: str, target: str, architecture: Optional[str] = None) -> AliasImage:
        user, _ = actor(info)
        return _simple(AliasImage, lambda: services.alias_image(user, alias, target, architecture))

    @strawberry.mutation
    def dealias_image(self, info: Info, alias: str) -> DealiasImage:
        user, _ = actor(info)
        return _simple(DealiasImage, lambda: services.dealias_image(user, alias))

    @strawberry.mutation
    def forget_image(self, info: Info, reference: str, architecture: Optional[str] = None) -> ForgetImage:
        user, _ = actor(info)
        return _simple(ForgetImage, lambda: services.forget_image(user, reference=reference,
                                                                  architecture=architecture))

    @strawberry.mutation
    def forget_image_by_id(self, info: Info, image_id: str) -> ForgetImageById:
        user, _ = actor(info)
        ok, msg, image = _attempt(lambda: services.forget_image(user, image_id=image_id))
        return ForgetImageById(ok=ok, msg=msg, image=image_of(image, False, image.forgotten_aliases) if image else None)

    @strawberry.mutation
    def create_container_registry(self, info: Info, hostname: str,
                                  props: CreateContainerRegistryInput) -> CreateContainerRegistry:
        user, _ = actor(info)
        registry = services.create_registry(user, hostname, _props(props, services.REGISTRY_PROPS))
        return CreateContainerRegistry(container_registry=registry_of(registry))

    @strawberry.mutation
    def modify_container_registry(self, info: Info, hostname: str,
                                  props: ModifyContainerRegistryInput) -> ModifyContainerRegistry:
        user, _ = actor(info)
        registry = services.modify_registry(user, hostname, _props(props, services.REGISTRY_PROPS))
        return ModifyContainerRegistry(container_registry=registry_of(registry))

    @strawberry.mutation
    def delete_container_registry(self, info: Info, hostname: str) -> DeleteContainerRegistry:
        user, _ = actor(info)
        return DeleteContainerRegistry(container_registry=registry_of(services.delete_registry(user, hostname)))
