"""The agents part of ``/admin/gql`` (client-wire.md §8): ``agent_list``
(superadmins only) and ``images``, with their types.  ``backendai/api/graphql.py``
merges this ``Query`` into the schema."""
from __future__ import annotations

from typing import Optional

import strawberry
from django.conf import settings
from strawberry.types import Info

from agents.models import Agent as AgentModel
from agents.models import Image as ImageModel
from backendai.api import errors
from backendai.api.gqlkit import actor, apply_filter, apply_order, iso_or_none, json_or_none, page

AGENT_FIELDS = {"id": "id", "status": "status", "region": "region", "scaling_group": "scaling_group_id",
                "architecture": "architecture", "first_contact": "first_contact", "schedulable": "schedulable"}


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

    return Agent(id=a.pk, status=a.status, status_changed=iso_or_none(a.status_changed), region=a.region,
                 architecture=a.architecture, scaling_group=a.scaling_group_id, schedulable=a.schedulable, addr=a.addr,
                 public_host=a.public_host, version=a.version, first_contact=iso_or_none(a.first_contact),
                 lost_at=iso_or_none(a.lost_at), last_heartbeat=iso_or_none(a.last_heartbeat),
                 cpu_cur_pct=num("cpu_util"), mem_cur_bytes=num("mem_used"),
                 available_slots=json_or_none(a.available_slots), occupied_slots=json_or_none(a.occupied_slots),
                 compute_plugins=json_or_none(a.compute_plugins), live_stat=json_or_none(stat))


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


def image_of(image, installed: bool) -> Image:
    return Image(
        id=str(image.pk), name=image.repository, humanized_name=image.name,
        registry=image.registry_name or "local", architecture=image.architecture, tag=image.tag,
        digest=image.config_digest or None, size_bytes=float(image.size_bytes),
        aliases=[a.alias for a in image.aliases.all()],
        labels=[KVPair(key=k, value=str(v)) for k, v in sorted((image.labels or {}).items())],
        resource_limits=[ResourceLimit(key=k, min=v.get("min"), max=v.get("max"))
                         for k, v in sorted((image.resources or {}).items())],
        installed=installed, is_local=image.is_local)


@strawberry.type
class Query:
    @strawberry.field
    def agent_list(self, info: Info, limit: int, offset: int, status: Optional[str] = None,
                   scaling_group: Optional[str] = None, filter: Optional[str] = None,
                   order: Optional[str] = None) -> AgentList:
        user, _ = actor(info)
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
            result.append(image_of(image, installed))
        return result
