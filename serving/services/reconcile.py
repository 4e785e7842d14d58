"""The serving reconciler: every endpoint converges to ``replicas`` healthy routes
(docs/serving.md, "Reconciler").

``reconcile_endpoints(now=None)`` runs every 2 s (Celery beat ``serving.tasks.reconcile_endpoints``)
and whenever a service asks for it (``endpoints.hint_reconciler``).  A pass:

1. reads the endpoints that are not destroyed (one query) and pulls what the app proxy's
   workers saw of their routes (``coordinator().endpoint_health``, endpoints with a circuit);
2. in one transaction, locks the endpoints it will handle (``SKIP LOCKED``: two passes never
   handle the same endpoint) and reads their routes with their sessions (one query), then per
   endpoint:

   * maps each route's session to the route's status: a session that ended (or failed) before
     its route was ever healthy makes the route ``failed_to_start`` (its error kept in
     ``error_data``; ``retries`` + 1 and no new replica before ``next_attempt_at``, 5 s x 2^n,
     at most 5 minutes); a route that was healthy once and whose session ended is removed and
     replaced;
   * takes the health the proxy reported (``healthy`` / ``unhealthy``; ``unknown`` changes
     nothing) for routes whose session runs;
   * finishes drained routes: after ``drain_until`` their session is destroyed and the row goes;
   * creates the missing replicas (``sessions.enqueue``: an inference session named
     ``<endpoint>-<route id[:8]>``, the model folder mounted, the definition's port published
     first as the ``inference`` service port), or drains the extra ones (provisioning first,
     then unhealthy, then the newest healthy: ``terminating`` and ``active: false`` in the
     circuit, the session destroyed after the drain period);
   * a destroying endpoint drains every route; once none is left its circuit goes and the
     endpoint is DESTROYED;

   every decision is an ``EndpointEvent``;
3. after the commit, pushes each endpoint's route table to its circuit
   (``coordinator().sync_endpoint``) when it changed since the last push (and at least every
   ``REPUSH_SECONDS``), and removes the circuit of destroyed endpoints.

A pass with nothing to change runs a constant number of statements (the reads above).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from appproxy.gateway import coordinator
from backendai.api import errors as api_errors
from serving.models import (
    LIFECYCLE_MOVES,
    LIVE_ROUTE,
    ROUTE_MOVES,
    Endpoint,
    EventKind,
    LifecycleStage,
    RouteStatus,
    Routing,
)
from serving.services import endpoints as endpoint_services
from serving.services import events
from sessions import enqueue as session_enqueue
from sessions import services as session_services
from sessions.lifecycle import DEAD_SESSION, RUNNING_SESSION, SessionStatus

log = logging.getLogger(__name__)

BACKOFF_BASE = 5.0
BACKOFF_MAX = 300.0
#: a route table is pushed again after this long even when nothing changed (a coordinator restart)
REPUSH_SECONDS = 60.0
#: session statuses that end a route: the replica is gone (or going)
ENDED_SESSION = frozenset(DEAD_SESSION | {SessionStatus.ERROR, SessionStatus.TERMINATING})

# what was last pushed per endpoint (this process): {endpoint id: (fingerprint, monotonic time)}
_pushed: dict[str, tuple[tuple, float]] = {}
_pushed_lock = threading.Lock()


def backoff(retries: int) -> timedelta:
    """The wait before the next replica start after ``retries`` failures in a row."""
    return timedelta(seconds=min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, retries - 1)))


def forget_pushes(endpoint_id=None) -> None:
    """Forget what was pushed (of one endpoint, or of all): the next pass pushes it again."""
    with _pushed_lock:
        if endpoint_id is None:
            _pushed.clear()
        else:
            _pushed.pop(str(endpoint_id), None)


class _Pass:
    """The state of one pass: what it did, and what it does after the commit."""

    def __init__(self, now):
        self.now = now
        self.summary = {"endpoints": 0, "started": 0, "failed": 0, "replaced": 0, "drained": 0, "removed": 0,
                        "healthy": 0, "unhealthy": 0, "destroyed": 0, "pushed": 0, "push_errors": 0}
        self.push: dict = {}          # endpoint id -> (endpoint, route table)
        self.remove: list = []        # endpoints whose circuit goes (then DESTROYED)


def reconcile_endpoints(now=None) -> dict:
    """One pass over every endpoint that is not destroyed; a summary of what it did."""
    now = now or timezone.now()
    state = _Pass(now)
    candidates = list(Endpoint.objects.exclude(lifecycle_stage=LifecycleStage.DESTROYED)
                      .values_list("pk", "circuit_id"))
    if not candidates:
        return state.summary
    health = _pull_health([pk for pk, circuit in candidates if circuit])
    with transaction.atomic():
        locked = list(Endpoint.objects.select_for_update(skip_locked=True, of=("self",))
                      .filter(pk__in=[pk for pk, _ in candidates])
                      .exclude(lifecycle_stage=LifecycleStage.DESTROYED)
                      .select_related("session_owner", "owner_keypair", "owner_keypair__user"))
        routes_by_endpoint: dict = {e.pk: [] for e in locked}
        for route in (Routing.objects.filter(endpoint_id__in=list(routes_by_endpoint))
                      .select_related("session").order_by("created_at")):
            routes_by_endpoint[route.endpoint_id].append(route)
        for endpoint in locked:
            state.summary["endpoints"] += 1
            try:
                with transaction.atomic():
                    _reconcile_one(state, endpoint, routes_by_endpoint[endpoint.pk], health.get(str(endpoint.pk), {}))
            except Exception:  # noqa: BLE001 - one endpoint's fault never stops the others
                log.exception("reconciling endpoint %s (%s) failed", endpoint.pk, endpoint.name)
    _after_commit(state)
    if any(v for k, v in state.summary.items() if k != "endpoints"):
        log.info("serving reconcile: %s", state.summary)
    else:
        log.debug("serving reconcile: %s", state.summary)
    return state.summary


def _pull_health(endpoint_ids) -> dict:
    result = {}
    for endpoint_id in endpoint_ids:
        try:
            result[str(endpoint_id)] = coordinator().endpoint_health(endpoint_id) or {}
        except api_errors.BackendAIError as exc:
            log.debug("no route health for endpoint %s: %s", endpoint_id, exc.msg or exc.error_title)
        except Exception as exc:  # noqa: BLE001 - a coordinator hiccup: the statuses stay as they are
            log.warning("no route health for endpoint %s: %s", endpoint_id, exc)
    return result


# --- one endpoint ------------------------------------------------------------------------------------

def _reconcile_one(state: _Pass, endpoint: Endpoint, routes: list[Routing], health: dict) -> None:
    kept: list[Routing] = []
    for route in routes:
        route.endpoint = endpoint
        if route.status == RouteStatus.FAILED_TO_START:
            kept.append(route)
            continue
        if route.status == RouteStatus.TERMINATING:
            if _finish_drain(state, endpoint, route):
                continue
            kept.append(route)
            continue
        if _session_ended(route):
            _route_lost(state, endpoint, route)
            if route.pk is not None and route.status == RouteStatus.FAILED_TO_START:
                kept.append(route)
            continue
        if route.session.status in RUNNING_SESSION:
            _apply_health(state, endpoint, route, health.get(str(route.pk)))
        kept.append(route)

    live = [r for r in kept if r.status in LIVE_ROUTE]
    if endpoint.lifecycle_stage == LifecycleStage.DESTROYING:
        for route in live:
            _drain(state, endpoint, route, "the service is being destroyed")
        if not any(r.status == RouteStatus.TERMINATING for r in kept):
            state.remove.append(endpoint)
    elif len(live) < endpoint.replicas:
        kept.extend(_start_replicas(state, endpoint, endpoint.replicas - len(live)))
    elif len(live) > endpoint.replicas:
        for route in _drain_order(live)[:len(live) - endpoint.replicas]:
            _drain(state, endpoint, route, f"scaled down to {endpoint.replicas} replica(s)")
    if endpoint.lifecycle_stage == LifecycleStage.CREATED or any(r.status == RouteStatus.TERMINATING for r in kept):
        state.push[str(endpoint.pk)] = (endpoint, _route_table(kept))


def _session_ended(route: Routing) -> bool:
    return route.session is None or route.session.status in ENDED_SESSION


def _move(route: Routing, new: str, now, **fields) -> None:
    ROUTE_MOVES.check(route.status, new)
    route.status = new
    route.status_changed = now
    for name, value in fields.items():
        setattr(route, name, value)
    route.save(update_fields=["status", "status_changed", *fields])


def _route_lost(state: _Pass, endpoint: Endpoint, route: Routing) -> None:
    """The route's session ended (or was never there): failed to start, or removed and replaced."""
    now = state.now
    session = route.session
    info = {"session_id": str(session.pk) if session else None,
            "session_status": session.status if session else None,
            "status_info": session.status_info if session else "the session is gone",
            "status_data": (session.status_data or {}) if session else {}}
    if session is not None and session.status == SessionStatus.ERROR:
        _terminate(session, "replica-failed")
    healthy_once = bool((route.error_data or {}).get("healthy_once"))
    if not healthy_once:
        endpoint.retries += 1
        endpoint.next_attempt_at = now + backoff(endpoint.retries)
        message = _failure_text(info)
        endpoint.last_error = message[:2000]
        endpoint.save(update_fields=["retries", "next_attempt_at", "last_error", "updated_at"])
        _move(route, RouteStatus.FAILED_TO_START, now,
              error_data={"type": "failed-to-start", "message": message, **info})
        state.summary["failed"] += 1
        events.record(endpoint, EventKind.ERROR,
                      f"Replica {route.pk} failed to start: {message}; retry {endpoint.retries} "
                      f"not before {endpoint.next_attempt_at:%H:%M:%S}",
                      {"route": str(route.pk), **info, "retries": endpoint.retries,
                       "next_attempt_at": endpoint.next_attempt_at.isoformat()})
        return
    route_id = route.pk
    route.delete()
    route.pk = None
    state.summary["replaced"] += 1
    events.record(endpoint, EventKind.ROUTE,
                  f"Replica {route_id} lost its session ({info['session_status'] or 'gone'}: "
                  f"{info['status_info'] or 'no reason given'}); it is replaced",
                  {"route": str(route_id), **info})


def _failure_text(info: dict) -> str:
    status = info.get("session_status") or "gone"
    reason = info.get("status_info") or "no reason given"
    detail = info.get("status_data") or {}
    error = detail.get("error") if isinstance(detail, dict) else None
    text = f"the session is {status} ({reason})"
    if isinstance(error, dict) and error.get("repr"):
        text += f": {str(error['repr'])[:300]}"
    elif isinstance(error, str):
        text += f": {error[:300]}"
    return text


def _apply_health(state: _Pass, endpoint: Endpoint, route: Routing, seen: dict | None) -> None:
    status = (seen or {}).get("status")
    target = {"healthy": RouteStatus.HEALTHY, "unhealthy": RouteStatus.UNHEALTHY}.get(status)
    if target is None or route.status == target or not ROUTE_MOVES.allows(route.status, target):
        return
    before = route.status
    data = dict(route.error_data or {})
    if target == RouteStatus.HEALTHY:
        data["healthy_once"] = True
        data.pop("last_error", None)
    else:
        data["last_error"] = str((seen or {}).get("last_error") or "")[:500]
    _move(route, target, state.now, error_data=data)
    state.summary[target] += 1
    if target == RouteStatus.HEALTHY and (endpoint.retries or endpoint.next_attempt_at):
        endpoint.retries = 0
        endpoint.next_attempt_at = None
        endpoint.last_error = ""
        endpoint.save(update_fields=["retries", "next_attempt_at", "last_error", "updated_at"])
    kind = EventKind.ROUTE if target == RouteStatus.HEALTHY else EventKind.ERROR
    detail = f" ({data['last_error']})" if target == RouteStatus.UNHEALTHY and data.get("last_error") else ""
    events.record(endpoint, kind, f"Replica {route.pk} is {target} (was {before}){detail}",
                  {"route": str(route.pk), "session_id": str(route.session_id), "from": before, "to": target,
                   "failures": (seen or {}).get("failures")})


def _drain_order(live: list[Routing]) -> list[Routing]:
    """Which live routes go first when scaling down: provisioning, unhealthy, then healthy; newest first."""
    rank = {RouteStatus.PROVISIONING: 0, RouteStatus.UNHEALTHY: 1, RouteStatus.HEALTHY: 2}
    return sorted(live, key=lambda r: (rank[r.status], -r.created_at.timestamp()))


def _drain(state: _Pass, endpoint: Endpoint, route: Routing, reason: str) -> None:
    if endpoint_services.drain_route(route, state.now, reason=reason):
        state.summary["drained"] += 1
        events.record(endpoint, EventKind.ROUTE,
                      f"Replica {route.pk} drained ({reason}); its session ends after "
                      f"{route.drain_until:%H:%M:%S}",
                      {"route": str(route.pk), "session_id": str(route.session_id) if route.session_id else None,
                       "drain_until": route.drain_until.isoformat(), "reason": reason})


def _finish_drain(state: _Pass, endpoint: Endpoint, route: Routing) -> bool:
    """A drained route whose time is up (or whose session ended): its session destroyed, the row
    gone.  True when it went."""
    session = route.session
    session_gone = session is None or session.status in DEAD_SESSION
    if not session_gone and route.drain_until and route.drain_until > state.now:
        return False
    if not session_gone:
        _terminate(session, "route-drained")
    route_id = route.pk
    route.delete()
    state.summary["removed"] += 1
    events.record(endpoint, EventKind.ROUTE, f"Replica {route_id} removed"
                  + ("" if session_gone else f"; session {session.pk} destroyed"),
                  {"route": str(route_id), "session_id": str(session.pk) if session else None})
    return True


def _terminate(session, reason: str) -> None:
    try:
        with transaction.atomic():
            session_services.request_termination(session, reason)
    except Exception:  # noqa: BLE001 - the session reconciler and the next pass converge
        log.exception("could not destroy replica session %s", session.pk)


def _start_replicas(state: _Pass, endpoint: Endpoint, missing: int) -> list[Routing]:
    now = state.now
    if endpoint.next_attempt_at and endpoint.next_attempt_at > now:
        return []
    if endpoint.model_id is None:
        _start_failed(state, endpoint, api_errors.InvalidAPIParameters("The model folder of the service is gone"))
        return []
    owner = endpoint.session_owner
    keypair = endpoint.owner_keypair or owner.main_keypair
    started = []
    for _ in range(missing):
        route_id = uuid.uuid4()
        name = f"{endpoint.name}-{route_id.hex[:8]}"
        try:
            with transaction.atomic():
                result = session_enqueue.enqueue(owner, keypair, endpoint_services.replica_request(endpoint, name))
                route = Routing.objects.create(
                    id=route_id, endpoint=endpoint, session=result.session, session_owner=owner,
                    domain_id=endpoint.domain_id, project_id=endpoint.project_id, status=RouteStatus.PROVISIONING,
                    status_changed=now, traffic_ratio=1.0, error_data={})
        except api_errors.BackendAIError as exc:
            _start_failed(state, endpoint, exc)
            break
        route.endpoint = endpoint
        started.append(route)
        state.summary["started"] += 1
        events.record(endpoint, EventKind.ROUTE, f"Replica {route.pk} starting (session {result.session.pk}, "
                      f"{name})", {"route": str(route.pk), "session_id": str(result.session.pk)})
    return started


def _start_failed(state: _Pass, endpoint: Endpoint, exc: api_errors.BackendAIError) -> None:
    """A replica could not even be enqueued: a failed route records why; backoff."""
    now = state.now
    message = str(exc.msg or exc.error_title)
    endpoint.retries += 1
    endpoint.next_attempt_at = now + backoff(endpoint.retries)
    endpoint.last_error = message[:2000]
    endpoint.save(update_fields=["retries", "next_attempt_at", "last_error", "updated_at"])
    route = Routing.objects.create(endpoint=endpoint, session=None, session_owner=endpoint.session_owner,
                                   domain_id=endpoint.domain_id, project_id=endpoint.project_id,
                                   status=RouteStatus.FAILED_TO_START, status_changed=now, traffic_ratio=0.0,
                                   error_data={"type": exc.error_type, "message": message,
                                               "data": exc.data if isinstance(exc.data, dict) else None})
    state.summary["failed"] += 1
    events.record(endpoint, EventKind.ERROR,
                  f"A replica could not be started: {message}; retry {endpoint.retries} not before "
                  f"{endpoint.next_attempt_at:%H:%M:%S}",
                  {"route": str(route.pk), "error": exc.error_type, "retries": endpoint.retries,
                   "next_attempt_at": endpoint.next_attempt_at.isoformat()})


# --- the circuit -----------------------------------------------------------------------------------

def _route_table(routes: list[Routing]) -> list[dict]:
    """What the circuit serves: routes whose session runs (draining ones inactive)."""
    table = []
    for route in routes:
        if route.pk is None or route.session is None or route.session.status not in RUNNING_SESSION:
            continue
        if route.status in LIVE_ROUTE:
            active = True
        elif route.status == RouteStatus.TERMINATING:
            active = False
        else:
            continue
        table.append({"route_id": str(route.pk), "session_id": str(route.session_id),
                      "traffic_ratio": float(route.traffic_ratio), "active": active})
    return sorted(table, key=lambda r: r["route_id"])


def _fingerprint(endpoint: Endpoint, table: list[dict]) -> tuple:
    definition = endpoint.model_definition or {}
    return (tuple(tuple(sorted(r.items())) for r in table), endpoint.open_to_public,
            tuple(sorted((definition.get("health_check") or {}).items())), definition.get("port"),
            endpoint.token_secret, endpoint.circuit_id is not None)


def sync_circuit(endpoint: Endpoint, table: list[dict]) -> dict:
    """Push ``table`` to the endpoint's circuit (created on the first push)."""
    definition = endpoint.model_definition or {}
    return coordinator().sync_endpoint(
        endpoint.pk, owner_id=endpoint.session_owner_id, name=endpoint.name,
        scaling_group_id=endpoint.resource_group_id, app="inference", container_port=definition.get("port"),
        routes=table, open_to_public=endpoint.open_to_public, health_check=definition.get("health_check") or {},
        token_secret=endpoint.token_secret)


def _after_commit(state: _Pass) -> None:
    clock = time.monotonic()
    for key, (endpoint, table) in state.push.items():
        fingerprint = _fingerprint(endpoint, table)
        with _pushed_lock:
            last = _pushed.get(key)
        if last and last[0] == fingerprint and clock - last[1] < REPUSH_SECONDS:
            continue
        try:
            answer = sync_circuit(endpoint, table) or {}
        except Exception as exc:  # noqa: BLE001 - recorded on the endpoint; the next pass pushes again
            _push_failed(state, endpoint, exc)
            continue
        state.summary["pushed"] += 1
        with _pushed_lock:
            _pushed[key] = (fingerprint, clock)
        circuit_id, url = answer.get("circuit_id"), answer.get("url")
        changes = {}
        if circuit_id and str(endpoint.circuit_id or "") != str(circuit_id):
            changes["circuit_id"] = circuit_id
        if url and endpoint.url != url:
            changes["url"] = url
        if endpoint.last_error.startswith("app proxy: "):
            changes["last_error"] = ""
        if changes:
            Endpoint.objects.filter(pk=endpoint.pk).update(**changes, updated_at=timezone.now())
            if "url" in changes:
                events.record(endpoint, EventKind.INFO, f"Served at {url}", {"url": url, "circuit": str(circuit_id)})
    for endpoint in state.remove:
        try:
            if endpoint.circuit_id is not None:
                coordinator().remove_endpoint(endpoint.pk, reason="endpoint-destroyed")
        except Exception as exc:  # noqa: BLE001 - the endpoint stays DESTROYING; the next pass tries again
            _push_failed(state, endpoint, exc)
            continue
        with transaction.atomic():
            current = Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
            if current is None or current.lifecycle_stage != LifecycleStage.DESTROYING:
                continue
            if Routing.objects.filter(endpoint=current, status__in=[*LIVE_ROUTE, RouteStatus.TERMINATING]).exists():
                continue
            LIFECYCLE_MOVES.check(current.lifecycle_stage, LifecycleStage.DESTROYED)
            current.lifecycle_stage = LifecycleStage.DESTROYED
            current.destroyed_at = state.now
            current.save(update_fields=["lifecycle_stage", "destroyed_at", "updated_at"])
            events.record(current, EventKind.INFO, "Service destroyed", {})
        state.summary["destroyed"] += 1
        with _pushed_lock:
            _pushed.pop(str(endpoint.pk), None)


def _push_failed(state: _Pass, endpoint: Endpoint, exc: Exception) -> None:
    state.summary["push_errors"] += 1
    if isinstance(exc, api_errors.BackendAIError):
        message = f"app proxy: {exc.msg or exc.error_title}"
    else:
        log.warning("pushing the circuit of endpoint %s failed", endpoint.pk, exc_info=True)
        message = f"app proxy: {type(exc).__name__}"
    if endpoint.last_error != message:  # one event per distinct problem, not one per pass
        Endpoint.objects.filter(pk=endpoint.pk).update(last_error=message[:2000])
        endpoint.last_error = message
        events.record(endpoint, EventKind.ERROR, f"The endpoint's circuit could not be updated: {message}",
                      {"error": getattr(exc, "error_type", type(exc).__name__)})
