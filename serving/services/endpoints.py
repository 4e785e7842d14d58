"""The one door for endpoints and their routes (docs/serving.md).

REST views, GraphQL resolvers, admin actions, the autoscaler and the reconciler
call these; nothing else writes ``Endpoint`` or ``Routing`` rows (the reconciler,
``serving.services.reconcile``, owns replica sessions and route statuses).

* ``create_endpoint(actor, actor_keypair, spec, dry_run=False)``: Backend.AI's create body, every
  check first (inputs, owner, project, resource group, image, resources, folders, the model
  definition, mounts), then one row; ``dry_run`` checks only (``/services/_/try`` uses it).
* ``visible_endpoints`` / ``get_endpoint``: owners see theirs, domain admins their domain's,
  superadmins all; anyone else gets 404.
* ``apply_replicas`` (the door of ``scale`` and of the autoscaler), ``destroy``,
  ``set_traffic_ratio``, ``remove_route``, ``issue_token``, ``errors`` / ``clear_errors``,
  ``try_start`` (a background task that starts one replica, waits for its health check, and
  destroys it).
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from datetime import timedelta

import httpx
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from agents import services as agent_services
from appproxy import tokens as proxy_tokens
from backendai import bgtasks
from backendai import services as manager_services
from backendai.actions import audited
from backendai.api import errors as api_errors
from serving import metrics as serving_metrics
from serving.models import (
    DEFAULT_MODEL_MOUNT,
    LIFECYCLE_MOVES,
    LIVE_ROUTE,
    MAX_REPLICAS,
    ROUTE_MOVES,
    Endpoint,
    EndpointToken,
    EventKind,
    LifecycleStage,
    RouteStatus,
    Routing,
)
from serving.services import definitions, events
from sessions import enqueue as session_enqueue
from sessions import services as session_services
from sessions import validation
from sessions.enqueue import EnqueueRequest
from sessions.lifecycle import DEAD_SESSION, RUNNING_SESSION, SessionStatus
from sessions.models import Kernel, Session, SessionType
from vfolders import services as vfolder_services
from vfolders.models import UsageMode

log = logging.getLogger(__name__)

#: an endpoint's name leaves room for the replica suffix (``-<8 hex>``) in a session name
NAME_MAX = validation.NAME_MAX - 9
#: token lifetimes: at least a minute, at most a year
TOKEN_MIN_SECONDS, TOKEN_MAX_SECONDS = 60, 365 * 86400
DEFAULT_TOKEN_DURATION = "30d"
TOKEN_DURATION_RE = re.compile(r"\s*(\d{1,9})\s*([smhdw]?)\s*")
MAX_TRAFFIC_RATIO = 100.0
#: ``/services/_/try``: the most seconds it waits for the replica to start and pass
TRY_MAX_WAIT = 600
EXTRA_MOUNT_TYPES = ("bind", "volume")


# --- reading a spec ------------------------------------------------------------------------------

def _pick(data: dict, *names, default=None):
    """The value of the first of ``names`` present (not None) in ``data``; (name, value)."""
    for name in names:
        if data.get(name) is not None:
            return name, data[name]
    return names[0], default


def _bool(value, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise validation.invalid(field, "must be true or false")
    return value


def _integer(value, field: str, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 12:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise validation.invalid(field, f"must be an integer between {low} and {high}")
    if not low <= value <= high:
        raise validation.invalid(field, f"must be between {low} and {high} (got {value})")
    return value


def _endpoint_name(value, field: str) -> str:
    if value is None or value == "":
        raise validation.invalid(field, "is required")
    name = validation.check_new_name(value, field)
    if len(name) > NAME_MAX:
        raise validation.invalid(field, f"must be at most {NAME_MAX} characters (replica sessions add a suffix)")
    return name


def _extra_mounts(value) -> list[dict]:
    """``config.extra_mounts``: ``{vfolder_id: {mount_destination, type}}`` (a list of
    ``{vfolder_id, mount_destination, type}`` is taken too)."""
    if value is None:
        return []
    if isinstance(value, list):
        items = []
        for idx, entry in enumerate(value):
            if not isinstance(entry, dict) or not isinstance(entry.get("vfolder_id"), str):
                raise validation.invalid(f"config.extra_mounts[{idx}]", "must be an object with a vfolder_id")
            items.append((entry["vfolder_id"], entry))
    elif isinstance(value, dict):
        items = list(value.items())
    else:
        raise validation.invalid("config.extra_mounts", "must map folder ids to {mount_destination, type}")
    if len(items) > validation.LIST_MAX:
        raise validation.invalid("config.extra_mounts", f"at most {validation.LIST_MAX} folders")
    mounts = []
    for ref, options in items:
        field = f"config.extra_mounts.{str(ref)[:40]}"
        if vfolder_services._parse_uuid(ref) is None:
            raise validation.invalid(field, "must be keyed by a folder id")
        options = options if options is not None else {}
        if not isinstance(options, dict):
            raise validation.invalid(field, "must be an object like {\"mount_destination\": \"/data\"}")
        destination = options.get("mount_destination")
        if destination is not None and (not isinstance(destination, str)
                                        or len(destination) > validation.MOUNT_PATH_MAX):
            raise validation.invalid(f"{field}.mount_destination", "must be a path string")
        kind = options.get("type") or "bind"
        if kind not in EXTRA_MOUNT_TYPES:
            raise validation.invalid(f"{field}.type", f"must be one of {', '.join(EXTRA_MOUNT_TYPES)}")
        mounts.append({"vfolder_id": str(vfolder_services._parse_uuid(ref)), "mount_destination": destination or "",
                       "type": kind})
    return mounts


def _model_folder(owner: User, ref) -> object:
    if ref is None or ref == "":
        raise validation.invalid("config.model", "is required (the model folder's id or name)")
    if not isinstance(ref, str) or len(ref) > 64:
        raise validation.invalid("config.model", "must be a folder id or name")
    access = vfolder_services.get_folder(owner, ref)  # 404 for someone else's folder
    folder = access.folder
    if folder.usage_mode != UsageMode.MODEL:
        raise validation.invalid("config.model", f"the folder {folder.name!r} is not a model folder "
                                                 f"(its usage mode is {folder.usage_mode!r})")
    vfolder_services.require_usable(folder)
    return folder


def _check_name_free(owner: User, name: str, field: str) -> None:
    if Endpoint.objects.filter(session_owner=owner, name=name).exclude(
            lifecycle_stage=LifecycleStage.DESTROYED).exists():
        raise validation.invalid(field, f"a service named {name!r} already exists")


@audited("endpoint", "create", lambda a, k, r: r if r is not None else (k.get("spec") or (a[2] if len(a) > 2 else {})).get("name"))
def create_endpoint(actor: User, actor_keypair, spec: dict, *, dry_run: bool = False) -> Endpoint:
    """A new endpoint from Backend.AI's create body; every check comes first, a refused request
    writes nothing.  ``dry_run``: the checked, unsaved endpoint."""
    if not isinstance(spec, dict):
        raise api_errors.InvalidAPIParameters("The request body must be a JSON object")
    config = spec.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise validation.invalid("config", "must be an object")
    name_field, raw_name = _pick(spec, "service_name", "name")
    name = _endpoint_name(raw_name, name_field)
    replicas_field, raw_replicas = _pick(spec, "replicas", "desired_session_count", "desiredSessionCount", default=1)
    replicas = _integer(raw_replicas, replicas_field, 0, MAX_REPLICAS)
    runtime = definitions.check_runtime(_pick(spec, "runtime_variant", "runtimeVariant")[1])
    open_to_public = _bool(_pick(spec, "open_to_public", "openToPublic")[1], "open_to_public")
    extra_mounts = _extra_mounts(_pick(config, "extra_mounts", "extraMounts")[1])
    definition_path = definitions.clean_definition_path(
        _pick(config, "model_definition_path", "modelDefinitionPath")[1])
    mount_field, mount_raw = _pick(config, "model_mount_destination", "modelMountDestination",
                                   default=DEFAULT_MODEL_MOUNT)
    if not isinstance(mount_raw, str) or not mount_raw.startswith("/"):
        raise validation.invalid(f"config.{mount_field}", "must be an absolute path in the container")
    mount_destination = vfolder_services.container_path(mount_raw, "model")

    # the fields a session request has, checked by the sessions' own rules
    fields = {
        "image": _pick(spec, "image", "lang")[1],
        "architecture": _pick(spec, "architecture", "arch")[1],
        "group": _pick(spec, "group", "group_name", "groupName")[1],
        "domain": _pick(spec, "domain", "domain_name", "domainName")[1],
        "cluster_size": _pick(spec, "cluster_size", "clusterSize")[1],
        "cluster_mode": _pick(spec, "cluster_mode", "clusterMode")[1],
        "tag": spec.get("tag"),
        "startup_command": _pick(spec, "startup_command", "startupCommand")[1],
        "bootstrap_script": _pick(spec, "bootstrap_script", "bootstrapScript")[1],
        "callback_url": _pick(spec, "callback_url", "callbackUrl")[1],
        "owner_access_key": _pick(spec, "owner_access_key", "ownerAccessKey")[1],
        "environ": config.get("environ"),
        "scaling_group": _pick(config, "scaling_group", "scalingGroup")[1],
        "resources": config.get("resources"),
        "resource_opts": config.get("resource_opts"),
    }
    if fields["image"] is None:
        raise validation.invalid("image", "is required")
    names = {"architecture": "arch", "environ": "config.environ", "scaling_group": "config.scaling_group",
             "resources": "config.resources", "resource_opts": "config.resource_opts"}
    clean = validation.clean_create(fields, names)

    keypair = session_enqueue.owner_keypair(actor, actor_keypair, clean.get("owner_access_key"))
    owner = keypair.user
    project = session_enqueue.choose_project(owner, clean.get("group", "default"), clean.get("domain", owner.domain_id))
    group = session_enqueue.choose_scaling_group(owner, project, clean.get("scaling_group"), SessionType.INFERENCE)
    image = agent_services.resolve_image(clean["image"], clean.get("architecture"), domain=project.domain)
    agent_services.check_customized_image_owner(image, owner)
    slot_types = manager_services.known_slot_types()
    cluster_size = clean.get("cluster_size", 1)
    per_kernel, _ = session_enqueue.compute_request(image, clean.get("resources") or {},
                                                    clean.get("resource_opts") or {}, slot_types)
    session_enqueue.check_absolute_limits(keypair, project, per_kernel.scale(cluster_size), slot_types)
    _check_name_free(owner, name, name_field)
    model = _model_folder(owner, _pick(config, "model", "model_id")[1])
    for mount in extra_mounts:
        if mount["vfolder_id"] == str(model.pk):
            raise validation.invalid("config.extra_mounts", "must not name the model folder again")
    if runtime.needs_definition:
        definition = definitions.load_definition(model, definition_path)
    else:
        definition = definitions.preset_definition(runtime, image)

    endpoint = Endpoint(
        name=name, created_user=actor, session_owner=owner, owner_keypair=keypair, domain_id=project.domain_id,
        project=project, resource_group=group, image=image.name, architecture=image.architecture,
        runtime_variant=runtime.name, model=model, model_mount_destination=mount_destination,
        model_definition_path=definition_path, model_definition=definition,
        resource_slots=dict(clean.get("resources") or {}), resource_opts=dict(clean.get("resource_opts") or {}),
        cluster_mode=clean.get("cluster_mode", "single-node"), cluster_size=cluster_size,
        environ=dict(clean.get("environ") or {}), extra_mounts=extra_mounts,
        startup_command=clean.get("startup_command") or "", bootstrap_script=clean.get("bootstrap_script") or "",
        callback_url=clean.get("callback_url") or "", tag=clean.get("tag") or "", replicas=replicas,
        open_to_public=open_to_public, token_secret=secrets.token_urlsafe(32),
    )
    # the folders as a replica mounts them (host permissions, destinations, overlaps), checked
    # without keeping anything
    with transaction.atomic():
        try:
            with transaction.atomic():
                session_enqueue.mounts_for(owner, project, replica_request(endpoint, "check-mounts"))
                raise _DryRun()
        except _DryRun:
            pass
    if dry_run:
        return endpoint
    try:
        with transaction.atomic():
            endpoint.save(force_insert=True)
    except IntegrityError:  # a concurrent create with the same name won
        raise validation.invalid(name_field, f"a service named {name!r} already exists") from None
    events.record(endpoint, EventKind.INFO, f"Service created with {replicas} replica(s) of {image.name} "
                  f"(runtime {runtime.name}, model folder {model.name})",
                  {"replicas": replicas, "runtime": runtime.name, "model": str(model.pk), "by": str(actor.pk)})
    hint_reconciler()
    return endpoint


class _DryRun(Exception):
    pass


def replica_request(endpoint: Endpoint, name: str) -> EnqueueRequest:
    """The session request of one replica of ``endpoint``."""
    definition = endpoint.model_definition or {}
    model_ref = str(endpoint.model_id) if endpoint.model_id else None
    mounts, mount_map = [], {}
    if model_ref:
        mounts.append(model_ref)
        mount_map[model_ref] = endpoint.model_mount_destination or DEFAULT_MODEL_MOUNT
    for extra in endpoint.extra_mounts or []:
        mounts.append(extra["vfolder_id"])
        if extra.get("mount_destination"):
            mount_map[extra["vfolder_id"]] = extra["mount_destination"]
    return EnqueueRequest(
        image=endpoint.image, name=name, session_type=SessionType.INFERENCE, architecture=endpoint.architecture,
        group=str(endpoint.project_id), domain=endpoint.domain_id, cluster_size=endpoint.cluster_size,
        cluster_mode=endpoint.cluster_mode, tag=endpoint.tag or "", enqueue_only=True, reuse_if_exists=False,
        startup_command=definition.get("start_command") or endpoint.startup_command or None,
        bootstrap_script=endpoint.bootstrap_script or None, mounts=mounts, mount_map=mount_map,
        environ=dict(endpoint.environ or {}), scaling_group=endpoint.resource_group_id,
        resources=dict(endpoint.resource_slots or {}), resource_opts=dict(endpoint.resource_opts or {}),
        inference_port=definition.get("port"),
    )


def hint_reconciler() -> None:
    """Ask for a reconcile pass now rather than at the next tick (after the commit; best effort)."""
    def send():
        from backendai.celery import app as celery_app

        try:
            celery_app.send_task("serving.tasks.reconcile_endpoints")
        except Exception as exc:  # noqa: BLE001 - the periodic pass converges anyway
            log.debug("could not hint the serving reconciler: %s", exc)

    transaction.on_commit(send)


# --- who sees what ----------------------------------------------------------------------------------

def visible_endpoints(actor: User, *, include_destroyed: bool = False):
    """Endpoints ``actor`` may see: their own, their domain's (domain admins), all (superadmins)."""
    query = Endpoint.objects.select_related("session_owner", "created_user", "project", "model", "owner_keypair")
    if not include_destroyed:
        query = query.exclude(lifecycle_stage=LifecycleStage.DESTROYED)
    if actor.is_superadmin:
        return query
    if actor.is_domain_admin:
        return query.filter(domain_id=actor.domain_id)
    return query.filter(Q(session_owner=actor) | Q(created_user=actor))


def get_endpoint(actor: User, endpoint_id_or_name, *, include_destroyed: bool = False) -> Endpoint:
    """One endpoint by id (dashed or hex) or by name (a live one first); 404 when not visible."""
    if not isinstance(endpoint_id_or_name, str) or not endpoint_id_or_name or len(endpoint_id_or_name) > 64:
        raise api_errors.object_not_found("endpoint", "No such model service")
    query = visible_endpoints(actor, include_destroyed=True)
    found = None
    ident = validation.as_uuid(endpoint_id_or_name)
    if ident is not None:
        found = query.filter(pk=ident).first()
    if found is None:
        named = query.filter(name=endpoint_id_or_name).order_by("-created_at")
        found = named.exclude(lifecycle_stage=LifecycleStage.DESTROYED).filter(session_owner=actor).first() \
            or named.exclude(lifecycle_stage=LifecycleStage.DESTROYED).first()
        if found is None and include_destroyed:
            found = named.first()
    if found is None or (found.lifecycle_stage == LifecycleStage.DESTROYED and not include_destroyed):
        raise api_errors.object_not_found("endpoint", f"No such model service: {endpoint_id_or_name}")
    return found


def _require_manage(actor: User, endpoint: Endpoint) -> None:
    """Changing an endpoint: whoever sees it (owner, creator, their domain admin, superadmin)."""
    if not visible_endpoints(actor, include_destroyed=True).filter(pk=endpoint.pk).exists():
        raise api_errors.object_not_found("endpoint", f"No such model service: {endpoint.pk}")


def _locked(endpoint: Endpoint) -> Endpoint:
    return Endpoint.objects.select_for_update().get(pk=endpoint.pk)


# --- replicas ------------------------------------------------------------------------------------------

@transaction.atomic
def apply_replicas(endpoint: Endpoint, replicas: int, *, kind: str = EventKind.SCALE, message: str = "",
                   data: dict | None = None, actor: User | None = None) -> Endpoint:
    """Set ``replicas`` (callers validate the range): the door of ``scale`` and the autoscaler."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
        raise validation.invalid("replicas", f"must be an integer between 0 and {MAX_REPLICAS}")
    locked = _locked(endpoint)
    if locked.lifecycle_stage != LifecycleStage.CREATED:
        raise api_errors.InvalidAPIParameters(f"The model service {locked.name!r} is {locked.lifecycle_stage}; "
                                          "it cannot be scaled")
    before = locked.replicas
    if before != replicas:
        locked.replicas = replicas
        locked.save(update_fields=["replicas", "updated_at"])
    info = {"from": before, "to": replicas, **(data or {})}
    if actor is not None:
        info["by"] = str(actor.pk)
    events.record(locked, kind, message or f"Replicas {before} -> {replicas}", info)
    transaction.on_commit(lambda: serving_metrics.count_scaling(locked.pk, kind, before, replicas))
    hint_reconciler()
    endpoint.replicas = locked.replicas
    return locked


@audited("endpoint", "scale", "endpoint")
def scale(actor: User, endpoint: Endpoint, replicas) -> Endpoint:
    """``service scale``: replicas by hand (0..MAX_REPLICAS)."""
    _require_manage(actor, endpoint)
    replicas = _integer(replicas, "to", 0, MAX_REPLICAS)
    return apply_replicas(endpoint, replicas, kind=EventKind.SCALE, actor=actor,
                          message=f"Scaled by {actor.email} to {replicas} replica(s)")


@audited("endpoint", "destroy", "endpoint")
@transaction.atomic
def destroy(actor: User, endpoint: Endpoint) -> Endpoint:
    """``service rm``: the endpoint goes DESTROYING; the reconciler drains its routes, destroys
    the sessions and the circuit, and then marks it DESTROYED."""
    _require_manage(actor, endpoint)
    locked = _locked(endpoint)
    if locked.lifecycle_stage != LifecycleStage.CREATED:
        return locked
    LIFECYCLE_MOVES.check(locked.lifecycle_stage, LifecycleStage.DESTROYING)
    locked.lifecycle_stage = LifecycleStage.DESTROYING
    locked.save(update_fields=["lifecycle_stage", "updated_at"])
    events.record(locked, EventKind.INFO, f"Destroy requested by {actor.email}", {"by": str(actor.pk)})
    hint_reconciler()
    return locked


@audited("endpoint", "set-open-to-public", "endpoint")
@transaction.atomic
def set_open_to_public(actor: User, endpoint: Endpoint, open_to_public) -> Endpoint:
    """Whether the endpoint takes requests without a token (the reconciler pushes it to the circuit)."""
    _require_manage(actor, endpoint)
    value = _bool(open_to_public, "open_to_public")
    locked = _locked(endpoint)
    if locked.lifecycle_stage != LifecycleStage.CREATED:
        raise api_errors.InvalidAPIParameters(f"The model service {locked.name!r} is {locked.lifecycle_stage}")
    if locked.open_to_public != value:
        locked.open_to_public = value
        locked.save(update_fields=["open_to_public", "updated_at"])
        events.record(locked, EventKind.INFO, f"{'Open to the public' if value else 'Tokens required'} "
                      f"(set by {actor.email})", {"open_to_public": value, "by": str(actor.pk)})
        hint_reconciler()
    endpoint.open_to_public = locked.open_to_public
    return locked


@audited("endpoint", "sync", "endpoint")
def sync(actor: User, endpoint: Endpoint) -> dict:
    """``POST /services/<id>/sync``: converge the endpoint now and push its route table to the
    circuit even if this process pushed the same table before; the pass's summary."""
    from serving.services import reconcile  # the reconciler is built on this module

    _require_manage(actor, endpoint)
    reconcile.forget_pushes(endpoint.pk)
    events.record(endpoint, EventKind.INFO, f"Sync requested by {actor.email}", {"by": str(actor.pk)})
    return reconcile.reconcile_endpoints()


def _route(endpoint: Endpoint, route_id) -> Routing:
    ident = validation.as_uuid(route_id) if isinstance(route_id, str) else route_id
    route = Routing.objects.select_for_update().filter(endpoint=endpoint, pk=ident).first() if ident else None
    if route is None:
        raise api_errors.object_not_found("route", f"No such route: {route_id}")
    return route


@audited("endpoint", "set-traffic-ratio", "endpoint")
@transaction.atomic
def set_traffic_ratio(actor: User, endpoint: Endpoint, route_id, ratio) -> Routing:
    """``PUT /services/<id>/routings/<rid>``: the route's share of traffic (0..100; 0 drains it
    of new requests without removing it)."""
    _require_manage(actor, endpoint)
    if isinstance(ratio, str):
        try:
            ratio = float(ratio)
        except ValueError:
            raise validation.invalid("traffic_ratio", "must be a number") from None
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio != ratio \
            or not 0 <= ratio <= MAX_TRAFFIC_RATIO:
        raise validation.invalid("traffic_ratio", f"must be a number between 0 and {MAX_TRAFFIC_RATIO:g}")
    route = _route(endpoint, route_id)
    if route.status not in LIVE_ROUTE:
        raise api_errors.InvalidAPIParameters(
            f"The route {route.pk} is {route.status}; its traffic ratio cannot change")
    before = route.traffic_ratio
    route.traffic_ratio = float(ratio)
    route.save(update_fields=["traffic_ratio"])
    events.record(endpoint, EventKind.ROUTE, f"Traffic ratio of route {route.pk} {before:g} -> {ratio:g}",
                  {"route": str(route.pk), "from": before, "to": float(ratio), "by": str(actor.pk)})
    Endpoint.objects.filter(pk=endpoint.pk).update(updated_at=timezone.now())  # the reconciler pushes the circuit
    hint_reconciler()
    return route


def drain_route(route: Routing, now=None, *, reason: str = "") -> bool:
    """A live route goes TERMINATING: no new requests (``active: false`` in the circuit), its
    session destroyed once ``drain_until`` passes.  False when it was not live."""
    now = now or timezone.now()
    if route.status not in LIVE_ROUTE:
        return False
    ROUTE_MOVES.check(route.status, RouteStatus.TERMINATING)
    check = (route.endpoint.model_definition or {}).get("health_check") or {}
    route.status = RouteStatus.TERMINATING
    route.status_changed = now
    route.drain_until = now + drain_period(check)
    if reason:
        route.error_data = {**(route.error_data or {}), "drain_reason": reason}
    route.save(update_fields=["status", "status_changed", "drain_until", "error_data"])
    return True


def drain_period(health_check: dict) -> timedelta:
    """How long a drained route keeps its session: a health-check interval and a few seconds
    (every worker has its new table by then and in-flight requests finished)."""
    interval = float(health_check.get("interval") or definitions.HEALTH_DEFAULTS["interval"])
    return timedelta(seconds=min(interval, 60.0) + 5.0)


@audited("endpoint", "remove-route", "endpoint")
@transaction.atomic
def remove_route(actor: User, endpoint: Endpoint, route_id) -> Endpoint:
    """``DELETE /services/<id>/routings/<rid>``: drain that route and take one replica away."""
    _require_manage(actor, endpoint)
    locked = _locked(endpoint)
    if locked.lifecycle_stage != LifecycleStage.CREATED:
        raise api_errors.InvalidAPIParameters(f"The model service {locked.name!r} is {locked.lifecycle_stage}")
    route = _route(locked, route_id)
    route.endpoint = locked
    if not drain_route(route, reason="removed by user"):
        raise api_errors.InvalidAPIParameters(
            f"The route {route.pk} is {route.status}; only a live route can be removed")
    before = locked.replicas
    locked.replicas = max(0, before - 1)
    locked.save(update_fields=["replicas", "updated_at"])
    events.record(locked, EventKind.SCALE, f"Route {route.pk} removed by {actor.email}; replicas {before} -> "
                  f"{locked.replicas}", {"route": str(route.pk), "from": before, "to": locked.replicas,
                                         "by": str(actor.pk)})
    hint_reconciler()
    return locked


# --- tokens ---------------------------------------------------------------------------------------

def parse_token_duration(value) -> int:
    """A token lifetime like ``30m``, ``2h``, ``3d``, ``1w`` or seconds (``3600``): seconds,
    within [1 minute, 1 year]."""
    if value is None or value == "":
        value = DEFAULT_TOKEN_DURATION
    if isinstance(value, bool):
        raise validation.invalid("duration", "must be a duration like 30m, 2h or 3d")
    if isinstance(value, int):
        seconds = value
    else:
        match = TOKEN_DURATION_RE.fullmatch(value) if isinstance(value, str) and len(value) <= 32 else None
        if match is None:
            raise validation.invalid("duration", "must be a duration like 30m, 2h or 3d")
        seconds = int(match.group(1)) * validation.DURATION_UNITS.get(match.group(2) or "s", 1)
    if not TOKEN_MIN_SECONDS <= seconds <= TOKEN_MAX_SECONDS:
        raise validation.invalid("duration", "must be between 1 minute and 365 days")
    return seconds


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@audited("endpoint", "issue-token", "endpoint")
def issue_token(actor: User, endpoint: Endpoint, duration=None) -> tuple[EndpointToken, str]:
    """A new API token of the endpoint (shown once; only its digest is kept)."""
    _require_manage(actor, endpoint)
    if endpoint.lifecycle_stage != LifecycleStage.CREATED:
        raise api_errors.InvalidAPIParameters(f"The model service {endpoint.name!r} is {endpoint.lifecycle_stage}")
    seconds = parse_token_duration(duration)
    now = timezone.now()
    token = proxy_tokens.make_endpoint_token(endpoint.token_secret, endpoint.pk, actor.pk, seconds,
                                             now=now.timestamp())
    row = EndpointToken.objects.create(endpoint=endpoint, created_by=actor, digest=token_digest(token),
                                       hint=token[-6:], expires_at=now + timedelta(seconds=seconds))
    events.record(endpoint, EventKind.INFO, f"API token …{row.hint} issued to {actor.email}, "
                  f"valid until {row.expires_at:%Y-%m-%d %H:%M} UTC", {"token": str(row.pk), "by": str(actor.pk)})
    return row, token


@audited("endpoint", "revoke-tokens", "endpoint")
@transaction.atomic
def revoke_tokens(actor: User, endpoint: Endpoint) -> int:
    """Revoke every API token of the endpoint at once: the endpoint gets a new token secret (the
    next reconciler pass, hinted now, pushes it to the circuit, after which the worker refuses every
    token signed with the old one) and the token rows go.  How many tokens were listed."""
    _require_manage(actor, endpoint)
    locked = _locked(endpoint)
    locked.token_secret = secrets.token_urlsafe(32)
    locked.save(update_fields=["token_secret", "updated_at"])
    endpoint.token_secret = locked.token_secret
    revoked = EndpointToken.objects.filter(endpoint=locked).delete()[0]
    events.record(locked, EventKind.INFO, f"All API tokens revoked by {actor.email} ({revoked} listed)",
                  {"by": str(actor.pk), "revoked": revoked})
    hint_reconciler()
    return revoked


# --- errors ---------------------------------------------------------------------------------------

def errors(endpoint: Endpoint) -> dict:
    """``GET /services/<id>/errors``: the routes that failed to start, with why."""
    failed = Routing.objects.filter(endpoint=endpoint, status=RouteStatus.FAILED_TO_START).order_by("-created_at")
    return {"errors": [{"session_id": str(r.session_id) if r.session_id else None, "route_id": str(r.pk),
                        "error": r.error_data or {}} for r in failed[:100]],
            "retries": endpoint.retries}


@audited("endpoint", "clear-errors", "endpoint")
@transaction.atomic
def clear_errors(actor: User, endpoint: Endpoint) -> int:
    """``POST /services/<id>/errors/clear``: forget failed routes and the retry backoff."""
    _require_manage(actor, endpoint)
    locked = _locked(endpoint)
    removed = Routing.objects.filter(endpoint=locked, status=RouteStatus.FAILED_TO_START).delete()[0]
    locked.retries = 0
    locked.next_attempt_at = None
    locked.last_error = ""
    locked.save(update_fields=["retries", "next_attempt_at", "last_error", "updated_at"])
    events.record(locked, EventKind.INFO, f"Errors cleared by {actor.email} ({removed} failed route(s))",
                  {"removed": removed, "by": str(actor.pk)})
    hint_reconciler()
    return removed


# --- /services/_/try --------------------------------------------------------------------------

@audited("endpoint", "try-start")
def try_start(actor: User, actor_keypair, spec: dict) -> str:
    """Check ``spec`` as a create would, then start a background task that runs one replica
    until its health check passes (or fails) and destroys it; the task id."""
    endpoint = create_endpoint(actor, actor_keypair, spec, dry_run=True)
    return bgtasks.start("model_service_try", "serving.services.endpoints.try_task", _try_payload(endpoint),
                         str(actor.pk), owner=actor.pk)


def _try_payload(endpoint: Endpoint) -> dict:
    return {
        "name": endpoint.name, "owner": str(endpoint.session_owner_id),
        "access_key": endpoint.owner_keypair.access_key if endpoint.owner_keypair_id else None,
        "project": str(endpoint.project_id), "domain": endpoint.domain_id, "image": endpoint.image,
        "architecture": endpoint.architecture, "model": str(endpoint.model_id),
        "model_mount_destination": endpoint.model_mount_destination, "model_definition": endpoint.model_definition,
        "resource_group": endpoint.resource_group_id, "resource_slots": endpoint.resource_slots,
        "resource_opts": endpoint.resource_opts, "cluster_mode": endpoint.cluster_mode,
        "cluster_size": endpoint.cluster_size, "environ": endpoint.environ, "extra_mounts": endpoint.extra_mounts,
        "startup_command": endpoint.startup_command, "bootstrap_script": endpoint.bootstrap_script,
        "tag": endpoint.tag,
    }


def inference_target(session: Session) -> tuple[str, int] | None:
    """(host, port) of the session's inference service port, once the agent published it."""
    from appproxy.services.circuits import kernel_host

    kernel = Kernel.objects.filter(session=session, cluster_role="main").first()
    if kernel is None:
        return None
    entry = next((p for p in kernel.service_ports or [] if p.get("name") == "inference"), None)
    host_ports = (entry or {}).get("host_ports") or []
    if not host_ports or not host_ports[0]:
        return None
    return kernel_host(kernel), int(host_ports[0])


@bgtasks.background
def try_task(progress: bgtasks.Progress, payload: dict, actor_id: str) -> str:
    """Start one replica as the service would, wait for its health check, destroy it."""
    from accounts.models import Keypair

    owner = User.objects.get(pk=payload["owner"])
    keypair = Keypair.objects.filter(access_key=payload.get("access_key")).first() or owner.main_keypair
    endpoint = Endpoint(
        name=payload["name"], session_owner=owner, owner_keypair=keypair, project_id=payload["project"],
        domain_id=payload["domain"], image=payload["image"], architecture=payload["architecture"],
        model_id=payload["model"], model_mount_destination=payload["model_mount_destination"],
        model_definition=payload["model_definition"], resource_group_id=payload["resource_group"],
        resource_slots=payload["resource_slots"], resource_opts=payload["resource_opts"],
        cluster_mode=payload["cluster_mode"], cluster_size=payload["cluster_size"], environ=payload["environ"],
        extra_mounts=payload["extra_mounts"], startup_command=payload["startup_command"],
        bootstrap_script=payload["bootstrap_script"], tag=payload["tag"])
    check = endpoint.model_definition.get("health_check") or {}
    budget = min(TRY_MAX_WAIT, float(check.get("initial_delay", 0)) + 300.0
                 + float(check.get("interval", 10)) * int(check.get("threshold", 10)))
    progress.update(0, total=3, message="starting a replica")
    name = f"{endpoint.name}-try-{secrets.token_hex(2)}"
    result = session_enqueue.enqueue(owner, keypair, replica_request(endpoint, name))
    session = result.session
    log.info("service try %s: session %s for user %s", endpoint.name, session.pk, owner.pk)
    deadline = time.monotonic() + budget
    try:
        while True:
            session.refresh_from_db()
            if session.status in RUNNING_SESSION:
                break
            if session.status in DEAD_SESSION or session.status == SessionStatus.ERROR:
                raise bgtasks.TaskFailed(f"The replica did not start: {session.status} "
                                         f"({session.status_info or 'no reason given'})")
            if time.monotonic() > deadline:
                raise bgtasks.TaskFailed(f"The replica did not start within {budget:.0f} s (still {session.status})")
            progress.update(0, message=f"replica session is {session.status}")
            time.sleep(1.0)
        progress.update(1, message="waiting for the health check")
        url, last = None, "no answer yet"
        passes = False
        failures = 0
        started = time.monotonic()
        while time.monotonic() < deadline:
            target = inference_target(session)
            if target is not None:
                url = f"http://{target[0]}:{target[1]}{check.get('path', '/')}"
                try:
                    response = httpx.get(url, timeout=float(check.get("timeout", 15)), trust_env=False)
                    if response.status_code == int(check.get("expected_status", 200)):
                        passes = True
                        break
                    last = f"answered {response.status_code}, expected {check.get('expected_status', 200)}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}"
                if time.monotonic() - started >= float(check.get("initial_delay", 0)):
                    failures += 1
                if failures >= int(check.get("threshold", 10)) + 1:
                    break
            session.refresh_from_db()
            if session.status not in RUNNING_SESSION:
                raise bgtasks.TaskFailed(f"The replica stopped ({session.status}) before its health check passed")
            progress.update(1, message=f"health check: {last}")
            time.sleep(max(0.2, float(check.get("interval", 10))))
        if not passes:
            raise bgtasks.TaskFailed(f"The health check of {check.get('path', '/')} did not pass: {last}")
        progress.update(2, message="the health check passed; removing the replica")
        return f"The model service started and its health check passed ({url})"
    finally:
        try:
            session_services.request_termination(session, "service-try-finished", forced=True)
        except Exception:  # noqa: BLE001 - a failed cleanup is logged; the session reconciler ends it anyway
            log.exception("service try %s: could not destroy session %s", endpoint.name, session.pk)
