"""The model-serving part of ``/admin/gql`` (Backend.AI 24.09's names): ``endpoint``,
``endpoint_list`` (what ``backend.ai service list`` / ``service info`` send), ``routing``,
``routing_list``, ``endpoint_token_list`` and the mutation ``modify_endpoint``.
``backendai/api/graphql.py`` merges this ``Query`` and ``Mutation`` into the schema.

Who sees what is ``serving.services.endpoints.visible_endpoints`` (owners their own,
domain admins their domain's, superadmins all); an endpoint the caller may not see
is ``object-not-found``.  Token values are never shown here (only their last
characters): a token is shown once, when ``POST /services/<id>/token`` issues it.
Statuses are upper case as in Backend.AI (``HEALTHY``, ``FAILED_TO_START``,
``CREATED``)."""
from __future__ import annotations

import uuid
from typing import Optional

import strawberry
from django.db import transaction
from strawberry.types import Info

from backendai.api import errors
from backendai.api.gqlkit import JSONString, actor, apply_filter, apply_order, iso_or_none, page
from serving.models import MAX_REPLICAS, EndpointToken, LifecycleStage, RouteStatus, Routing
from serving.services import definitions, endpoints

ENDPOINT_FIELDS = {"name": "name", "endpoint_id": "id", "image": "image", "url": "url", "domain": "domain_id",
                   "project": "project_id", "resource_group": "resource_group_id",
                   "lifecycle_stage": "lifecycle_stage", "runtime_variant": "runtime_variant",
                   "open_to_public": "open_to_public", "created_at": "created_at", "replicas": "replicas",
                   "desired_session_count": "replicas", "session_owner_email": "session_owner__email",
                   "created_user_email": "created_user__email", "tag": "tag"}
ROUTING_FIELDS = {"routing_id": "id", "status": "status", "traffic_ratio": "traffic_ratio",
                  "created_at": "created_at", "session": "session_id"}
RUNTIME_NAMES = {r["name"]: r["human_readable_name"] for r in definitions.runtimes()}


@strawberry.type
class RuntimeVariantInfo:
    name: str
    human_readable_name: str


@strawberry.type(name="Routing")
class Routing_:
    routing_id: uuid.UUID
    endpoint: Optional[str]  # Backend.AI answers the endpoint's URL here
    endpoint_id: uuid.UUID
    session: Optional[uuid.UUID]
    status: str
    traffic_ratio: float
    created_at: Optional[str]
    status_changed: Optional[str]
    error_data: Optional[JSONString]



@strawberry.type
class InferenceSessionErrorInfo:
    src: str
    name: str
    repr: str


@strawberry.type
class InferenceSessionError:
    session_id: Optional[uuid.UUID]
    errors: list[InferenceSessionErrorInfo]


@strawberry.type
class Endpoint:
    endpoint_id: uuid.UUID
    name: str
    image: str
    architecture: str
    domain: str
    project: str
    resource_group: Optional[str]
    resource_slots: JSONString
    url: Optional[str]
    model: Optional[uuid.UUID]
    model_definition_path: Optional[str]
    model_mount_destination: str
    model_mount_destiation: str  # Backend.AI's misspelt field, still in the 23.09 client's field set
    extra_mounts: JSONString
    created_user: uuid.UUID
    created_user_email: str
    created_user_id: uuid.UUID
    session_owner: uuid.UUID
    session_owner_email: str
    session_owner_id: uuid.UUID
    tag: Optional[str]
    startup_command: Optional[str]
    bootstrap_script: Optional[str]
    callback_url: Optional[str]
    environ: JSONString
    resource_opts: JSONString
    replicas: int
    desired_session_count: int
    cluster_mode: str
    cluster_size: int
    open_to_public: bool
    runtime_variant: RuntimeVariantInfo
    lifecycle_stage: str
    status: str
    created_at: Optional[str]
    destroyed_at: Optional[str]
    retries: int
    active_route_count: int
    routings: list[Routing_]
    errors: list[InferenceSessionError]


def endpoint_status(endpoint, routes) -> str:
    """Backend.AI's derived endpoint status: DESTROYED / DESTROYING by lifecycle; READY with no
    routes; HEALTHY when every started route is healthy; DEGRADED when some are; UNHEALTHY when
    started routes exist and none is; PROVISIONING while only provisioning routes exist."""
    if endpoint.lifecycle_stage == LifecycleStage.DESTROYED:
        return "DESTROYED"
    if endpoint.lifecycle_stage == LifecycleStage.DESTROYING:
        return "DESTROYING"
    live = [r for r in routes if r.status in (RouteStatus.PROVISIONING, RouteStatus.HEALTHY, RouteStatus.UNHEALTHY)]
    if not live:
        return "READY"
    started = [r for r in live if r.status != RouteStatus.PROVISIONING]
    healthy = [r for r in started if r.status == RouteStatus.HEALTHY]
    if not started:
        return "PROVISIONING"
    if len(healthy) == len(started):
        return "HEALTHY"
    return "DEGRADED" if healthy else "UNHEALTHY"


def routing_of(route, url: Optional[str] = None) -> Routing_:
    return Routing_(routing_id=route.pk, endpoint=url if url is not None else (route.endpoint.url or None),
                    endpoint_id=route.endpoint_id, session=route.session_id, status=route.status.upper(),
                    traffic_ratio=route.traffic_ratio, created_at=iso_or_none(route.created_at),
                    status_changed=iso_or_none(route.status_changed), error_data=route.error_data or {})


def _errors_of(routes) -> list[InferenceSessionError]:
    found = []
    for route in routes:
        if route.status != RouteStatus.FAILED_TO_START:
            continue
        data = route.error_data or {}
        raw = data.get("errors")
        items = raw if isinstance(raw, list) else ([data] if data else [])
        # Backend.AI's {"errors": [{src, name, repr}]}, or the reconciler's {type, message, session_status, ...}
        infos = [InferenceSessionErrorInfo(src=str(item.get("src", item.get("session_status", ""))),
                                           name=str(item.get("name", item.get("type", ""))),
                                           repr=str(item.get("repr", item.get("message", ""))))
                 for item in items if isinstance(item, dict)]
        found.append(InferenceSessionError(session_id=route.session_id, errors=infos))
    return found


def endpoint_of(e) -> Endpoint:
    routes = list(e.routings.all())
    url = e.url or None
    runtime = RuntimeVariantInfo(name=e.runtime_variant, human_readable_name=RUNTIME_NAMES.get(e.runtime_variant,
                                                                                              e.runtime_variant))
    return Endpoint(
        endpoint_id=e.pk, name=e.name, image=e.image, architecture=e.architecture, domain=e.domain_id,
        project=str(e.project_id), resource_group=e.resource_group_id, resource_slots=e.resource_slots or {},
        url=url, model=e.model_id, model_definition_path=e.model_definition_path or None,
        model_mount_destination=e.model_mount_destination, model_mount_destiation=e.model_mount_destination,
        extra_mounts=e.extra_mounts or [], created_user=e.created_user_id, created_user_email=e.created_user.email,
        created_user_id=e.created_user_id, session_owner=e.session_owner_id,
        session_owner_email=e.session_owner.email, session_owner_id=e.session_owner_id, tag=e.tag or None,
        startup_command=e.startup_command or None, bootstrap_script=e.bootstrap_script or None,
        callback_url=e.callback_url or None, environ=e.environ or {}, resource_opts=e.resource_opts or {},
        replicas=e.replicas, desired_session_count=e.replicas, cluster_mode=e.cluster_mode,
        cluster_size=e.cluster_size, open_to_public=e.open_to_public, runtime_variant=runtime,
        lifecycle_stage=e.lifecycle_stage.upper(), status=endpoint_status(e, routes),
        created_at=iso_or_none(e.created_at), destroyed_at=iso_or_none(e.destroyed_at), retries=e.retries,
        active_route_count=sum(1 for r in routes if r.status == RouteStatus.HEALTHY),
        routings=[routing_of(r, url) for r in routes if r.status != RouteStatus.FAILED_TO_START],
        errors=_errors_of(routes),
    )


@strawberry.type
class EndpointList:
    items: list[Endpoint]
    total_count: int


@strawberry.type
class RoutingList:
    items: list[Routing_]
    total_count: int


@strawberry.type(name="EndpointToken")
class EndpointTokenInfo:
    """An issued token without its value: its id, when it was made and until when it is valid, and
    its last characters to tell it apart."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    hint: str
    created_at: Optional[str]
    valid_until: Optional[str]
    created_by_email: str



@strawberry.type
class EndpointTokenList:
    items: list[EndpointTokenInfo]
    total_count: int


def _endpoint(info: Info, endpoint_id) -> object:
    user = actor(info)[0]
    return endpoints.get_endpoint(user, str(endpoint_id), include_destroyed=True)


def _visible(info: Info, *, include_destroyed: bool = False):
    return endpoints.visible_endpoints(actor(info)[0], include_destroyed=include_destroyed).select_related(
        "resource_group").prefetch_related("routings")


@strawberry.input
class ModifyEndpointInput:
    replicas: Optional[int] = strawberry.UNSET
    desired_session_count: Optional[int] = strawberry.UNSET
    open_to_public: Optional[bool] = strawberry.UNSET


@strawberry.type
class ModifyEndpoint:
    ok: bool
    msg: Optional[str]
    endpoint: Optional[Endpoint]


def _given(value) -> bool:
    return value is not strawberry.UNSET and value is not None


@strawberry.type
class Query:
    @strawberry.field
    def endpoint(self, info: Info, endpoint_id: uuid.UUID) -> Optional[Endpoint]:
        return endpoint_of(_endpoint(info, endpoint_id))

    @strawberry.field
    def endpoint_list(self, info: Info, limit: int, offset: int, filter: Optional[str] = None,
                      order: Optional[str] = None, project: Optional[uuid.UUID] = None,
                      group_id: Optional[uuid.UUID] = None, domain_name: Optional[str] = None,
                      user_uuid: Optional[uuid.UUID] = None) -> EndpointList:
        limit, offset = page(limit, offset)
        if domain_name is not None and len(domain_name) > 64:
            raise errors.InvalidAPIParameters("domain_name: at most 64 characters")
        query = _visible(info)
        if project or group_id:
            query = query.filter(project_id=project or group_id)
        if domain_name:
            query = query.filter(domain_id=domain_name)
        if user_uuid:
            query = query.filter(session_owner_id=user_uuid)
        query = apply_filter(query, filter, ENDPOINT_FIELDS)
        total = query.count()
        items = [endpoint_of(e) for e in apply_order(query, order, ENDPOINT_FIELDS, "-created_at")[offset:offset + limit]]
        return EndpointList(items=items, total_count=total)

    @strawberry.field
    def routing(self, info: Info, routing_id: uuid.UUID) -> Optional[Routing_]:
        visible = endpoints.visible_endpoints(actor(info)[0], include_destroyed=True)
        route = Routing.objects.select_related("endpoint").filter(pk=routing_id, endpoint__in=visible).first()
        if route is None:
            raise errors.object_not_found("route", f"No such route: {routing_id}")
        return routing_of(route)

    @strawberry.field
    def routing_list(self, info: Info, limit: int, offset: int, endpoint_id: Optional[uuid.UUID] = None,
                     filter: Optional[str] = None, order: Optional[str] = None) -> RoutingList:
        limit, offset = page(limit, offset)
        visible = endpoints.visible_endpoints(actor(info)[0], include_destroyed=True)
        query = Routing.objects.select_related("endpoint").filter(endpoint__in=visible)
        if endpoint_id is not None:
            query = query.filter(endpoint=_endpoint(info, endpoint_id))
        query = apply_filter(query, filter, ROUTING_FIELDS)
        total = query.count()
        items = [routing_of(r) for r in apply_order(query, order, ROUTING_FIELDS, "created_at")[offset:offset + limit]]
        return RoutingList(items=items, total_count=total)

    @strawberry.field
    def endpoint_token_list(self, info: Info, limit: int, offset: int,
                            endpoint_id: Optional[uuid.UUID] = None) -> EndpointTokenList:
        limit, offset = page(limit, offset)
        visible = endpoints.visible_endpoints(actor(info)[0], include_destroyed=True)
        query = EndpointToken.objects.select_related("created_by").filter(endpoint__in=visible)
        if endpoint_id is not None:
            query = query.filter(endpoint=_endpoint(info, endpoint_id))
        total = query.count()
        items = [EndpointTokenInfo(id=t.pk, endpoint_id=t.endpoint_id, hint=t.hint, created_at=iso_or_none(t.created_at),
                                   valid_until=iso_or_none(t.expires_at), created_by_email=t.created_by.email)
                 for t in query.order_by("-created_at")[offset:offset + limit]]
        return EndpointTokenList(items=items, total_count=total)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def modify_endpoint(self, info: Info, endpoint_id: uuid.UUID, props: ModifyEndpointInput) -> ModifyEndpoint:
        """Backend.AI's ``modify_endpoint``: ``replicas`` (or ``desired_session_count``) and
        ``open_to_public``, each through the service that owns the change."""
        user = actor(info)[0]
        endpoint = _endpoint(info, endpoint_id)
        replicas = props.replicas if _given(props.replicas) else props.desired_session_count
        if _given(replicas) and not 0 <= replicas <= MAX_REPLICAS:
            raise errors.InvalidAPIParameters(f"replicas: must be between 0 and {MAX_REPLICAS}")
        with transaction.atomic():  # both changes or neither
            if _given(replicas):
                endpoints.scale(user, endpoint, replicas)
            if _given(props.open_to_public):
                endpoints.set_open_to_public(user, endpoint, props.open_to_public)
        fresh = endpoints.get_endpoint(user, str(endpoint.pk), include_destroyed=True)
        return ModifyEndpoint(ok=True, msg="success", endpoint=endpoint_of(fresh))

