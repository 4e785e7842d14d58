"""Inference circuits: a model-serving endpoint's one circuit, spreading requests over its
routes (one per replica session), and what the worker carrying it reports back — route
health (``RouteHealth``) and cumulative traffic counters (``InferenceSample``) — turned into
the health, traffic and series answers the serving app reads (docs/appproxy.md,
"Inference circuits").

The serving app is the only caller (through ``appproxy.gateway``); it never writes these
rows itself.  Every change to a circuit takes its worker's next revision and hints the
worker, exactly like interactive circuits, and only when something the worker sees changed.
"""
from __future__ import annotations

import logging
import math
import uuid
from bisect import bisect_left
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from appproxy.models import (
    AppMode,
    Circuit,
    InferenceSample,
    Protocol,
    RouteHealth,
    RouteHealthStatus,
    Worker,
    WorkerStatus,
)
from appproxy.services.circuits import LIVE_SESSION, kernel_host, main_kernel, remove_circuits, update_circuit
from appproxy.services.exceptions import WorkerNotAvailable
from appproxy.services.placement import pick_worker, slot_for
from appproxy.services.revisions import next_revision, recompute_occupancy
from appproxy.services.serialise import frontend_url
from appproxy.services.worker_hints import hint_worker
from backendai.api import errors
from sessions.models import Session

log = logging.getLogger(__name__)

MAX_ROUTES = 256
MAX_REPORTS = 500
SAMPLE_RETENTION = timedelta(hours=1)
HEALTH_DEFAULTS = {"path": "/health", "interval": 10.0, "timeout": 5.0, "threshold": 3, "initial_delay": 0.0,
                   "expected_status": 200}
# the fields of a circuit the worker sees: a change to any of them is a new revision
WORKER_VISIBLE = ("app", "container_port", "routes", "health_check", "token_secret", "open_to_public")


# --- input -----------------------------------------------------------------------------------------

def _uuid(value, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        raise errors.InvalidAPIParameters(f"{what}: expected a UUID, got {str(value)[:80]!r}") from None


def _number(value, what: str, low: float, high: float, integer: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise errors.InvalidAPIParameters(f"{what}: expected {'an integer' if integer else 'a number'}, "
                                          f"got {str(value)[:40]!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise errors.InvalidAPIParameters(f"{what}: must be between {low:g} and {high:g}")
    return int(value) if integer else float(value)


def clean_health_check(value) -> dict:
    """``{path, interval, timeout, threshold, initial_delay, expected_status}`` with defaults; 400 otherwise."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise errors.InvalidAPIParameters("health_check: expected an object")
    unknown = set(value) - set(HEALTH_DEFAULTS)
    if unknown:
        raise errors.InvalidAPIParameters(f"health_check: unknown keys {', '.join(sorted(map(str, unknown)))}")
    given = {**HEALTH_DEFAULTS, **{k: v for k, v in value.items() if v is not None}}
    path = given["path"]
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 512 or any(
            not 0x21 <= ord(ch) <= 0x7E for ch in path):
        raise errors.InvalidAPIParameters("health_check.path: expected a path starting with '/' (printable ASCII)")
    return {"path": path, "interval": _number(given["interval"], "health_check.interval", 0.05, 3600),
            "timeout": _number(given["timeout"], "health_check.timeout", 0.05, 600),
            "threshold": _number(given["threshold"], "health_check.threshold", 1, 100, integer=True),
            "initial_delay": _number(given["initial_delay"], "health_check.initial_delay", 0, 86400),
            "expected_status": _number(given["expected_status"], "health_check.expected_status", 100, 599,
                                       integer=True)}


def clean_routes(value) -> list[dict]:
    if not isinstance(value, list):
        raise errors.InvalidAPIParameters("routes: expected a list")
    if len(value) > MAX_ROUTES:
        raise errors.InvalidAPIParameters(f"routes: at most {MAX_ROUTES}")
    routes, seen = [], set()
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise errors.InvalidAPIParameters(f"routes[{index}]: expected an object")
        route_id = str(_uuid(item.get("route_id"), f"routes[{index}].route_id"))
        if route_id in seen:
            raise errors.InvalidAPIParameters(f"routes[{index}].route_id: {route_id} is listed twice")
        seen.add(route_id)
        active = item.get("active", True)
        if not isinstance(active, bool):
            raise errors.InvalidAPIParameters(f"routes[{index}].active: expected true or false")
        routes.append({"route_id": route_id, "session_id": str(_uuid(item.get("session_id"),
                                                                      f"routes[{index}].session_id")),
                       "traffic_ratio": _number(item.get("traffic_ratio", 1.0), f"routes[{index}].traffic_ratio",
                                                0, 1e6),
                       "active": active})
    return routes


def clean_sync(*, owner_id, name, scaling_group_id, app, container_port, routes, open_to_public, health_check,
               token_secret) -> dict:
    if not isinstance(app, str) or not 1 <= len(app) <= 64:
        raise errors.InvalidAPIParameters("app: expected 1-64 characters")
    if not isinstance(name, str) or len(name) > 512:
        raise errors.InvalidAPIParameters("name: expected at most 512 characters")
    if scaling_group_id is not None and (not isinstance(scaling_group_id, str) or len(scaling_group_id) > 64):
        raise errors.InvalidAPIParameters("scaling_group_id: expected a scaling group name")
    if not isinstance(open_to_public, bool):
        raise errors.InvalidAPIParameters("open_to_public: expected true or false")
    if not isinstance(token_secret, str) or len(token_secret) > 128 or (not token_secret and not open_to_public):
        raise errors.InvalidAPIParameters("token_secret: expected 1-128 characters (empty only when public)")
    return {"owner_id": _uuid(owner_id, "owner_id"), "name": name, "scaling_group_id": scaling_group_id, "app": app,
            "container_port": _number(container_port, "container_port", 1, 65535, integer=True),
            "routes": clean_routes(routes), "open_to_public": open_to_public,
            "health_check": clean_health_check(health_check), "token_secret": token_secret}


# --- targets ---------------------------------------------------------------------------------------

def route_target(session_id, container_port: int) -> tuple[str | None, str | None, int | None]:
    """``(kernel id, host, host port)`` of the service port publishing ``container_port`` in the
    session's main kernel; ``(kernel id or None, None, None)`` while it has none (not running yet,
    not published yet, or ended)."""
    session = Session.objects.filter(pk=session_id).only("pk", "status").first()
    if session is None or session.status not in LIVE_SESSION:
        return None, None, None
    kernel = main_kernel(session)
    if kernel is None:
        return None, None, None
    for entry in kernel.service_ports or []:
        container_ports = list(entry.get("container_ports") or [])
        if container_port in container_ports:
            index = container_ports.index(container_port)
            host_ports = list(entry.get("host_ports") or [])
            if index < len(host_ports) and host_ports[index]:
                return str(kernel.pk), kernel_host(kernel), int(host_ports[index])
    return str(kernel.pk), None, None


def resolve_routes(routes: list[dict], container_port: int) -> list[dict]:
    """The routes as stored on the circuit: each with its kernel's ``host``/``port`` (None while
    unpublished: the worker does not see it until the sweep or the next sync finds one)."""
    resolved = []
    for route in sorted(routes, key=lambda r: r["route_id"]):
        kernel_id, host, port = route_target(route["session_id"], container_port)
        resolved.append({"route_id": route["route_id"], "session_id": route["session_id"], "kernel_id": kernel_id,
                         "host": host, "port": port, "traffic_ratio": float(route["traffic_ratio"]),
                         "active": bool(route["active"])})
    return resolved


def worker_routes(circuit: Circuit) -> list[dict]:
    """What the worker gets: the routes that have a target."""
    return [{"route_id": r["route_id"], "session_id": r["session_id"], "host": r["host"], "port": r["port"],
             "traffic_ratio": r["traffic_ratio"], "active": r["active"]}
            for r in circuit.routes or [] if r.get("host") and r.get("port")]


# --- circuits --------------------------------------------------------------------------------------

def _answer(circuit: Circuit) -> dict:
    worker = circuit.worker
    return {"circuit_id": str(circuit.pk), "url": frontend_url(circuit, worker), "worker_id": str(worker.pk)}


def _change(circuit: Circuit, fields: dict) -> None:
    """Write ``fields`` with a new revision of the circuit's worker, and hint it (in the caller's transaction)."""
    visible = any(key in WORKER_VISIBLE for key in fields)
    if visible:
        fields["revision"] = next_revision(circuit.worker_id)
        hint_worker(circuit.worker_id)
    Circuit.objects.filter(pk=circuit.pk).update(updated_at=timezone.now(), **fields)


def sync_endpoint(endpoint_id, *, owner_id, name="", scaling_group_id=None, app="inference", container_port,
                  routes, open_to_public=False, health_check=None, token_secret="") -> dict:
    """Create the endpoint's circuit (on the worker ``pick_worker`` chooses; 503
    ``worker-not-available`` when none) or bring it up to date; a new revision only when
    something the worker sees changed.  ``{"circuit_id", "url", "worker_id"}``."""
    eid = _uuid(endpoint_id, "endpoint_id")
    clean = clean_sync(owner_id=owner_id, name=name, scaling_group_id=scaling_group_id, app=app,
                       container_port=container_port, routes=routes, open_to_public=open_to_public,
                       health_check=health_check, token_secret=token_secret)
    owner = User.objects.filter(pk=clean["owner_id"]).first()
    if owner is None:
        raise errors.object_not_found("user", f"No user {clean['owner_id']}")
    resolved = resolve_routes(clean["routes"], clean["container_port"])
    desired = {"app": clean["app"], "container_port": clean["container_port"], "routes": resolved,
               "health_check": clean["health_check"], "token_secret": clean["token_secret"],
               "open_to_public": clean["open_to_public"], "owner_id": owner.pk,
               "arguments": {"endpoint_name": clean["name"], "scaling_group": clean["scaling_group_id"]}}
    for attempt in range(3):
        try:
            with transaction.atomic():
                circuit = (Circuit.objects.select_for_update().select_related("worker")
                           .filter(endpoint_id=eid).first())
                if circuit is None:
                    circuit = _create(eid, owner, clean, desired)
                else:
                    circuit = _update(circuit, clean, desired)
                live = {r["route_id"] for r in resolved}
                RouteHealth.objects.filter(circuit=circuit).exclude(route_id__in=list(live)).delete()
            break
        except IntegrityError:
            if attempt == 2:
                raise
            log.info("endpoint %s: concurrent sync; retrying", eid)
    return _answer(Circuit.objects.select_related("worker").get(pk=circuit.pk))


def _create(eid, owner, clean: dict, desired: dict) -> Circuit:
    worker = pick_worker(Protocol.HTTP, clean["scaling_group_id"])
    worker = Worker.objects.select_for_update().get(pk=worker.pk)
    circuit = Circuit(app_mode=AppMode.INFERENCE, endpoint_id=eid, protocol=Protocol.HTTP, target_host="",
                      target_port=0, worker=worker, owner=owner,
                      **{k: v for k, v in desired.items() if k != "owner_id"})
    slot = slot_for(worker, circuit, Protocol.HTTP)
    circuit.port, circuit.subdomain = slot["port"], slot["subdomain"]
    circuit.revision = next_revision(worker.pk)
    circuit.save(force_insert=True)
    recompute_occupancy([worker.pk])
    hint_worker(worker.pk)
    log.info("endpoint %s (%s): inference circuit %s with %d route(s) on worker %s at %s", eid, clean["name"],
             circuit.pk, len(worker_routes(circuit)), worker.authority, circuit.port or circuit.subdomain)
    return circuit


def _update(circuit: Circuit, clean: dict, desired: dict) -> Circuit:
    if circuit.worker.status != WorkerStatus.ALIVE:
        try:
            replacement = pick_worker(Protocol.HTTP, clean["scaling_group_id"], exclude=[circuit.worker_id])
        except WorkerNotAvailable:
            log.warning("endpoint %s: worker %s is %s and no other worker is free; the circuit stays",
                        circuit.endpoint_id, circuit.worker.authority, circuit.worker.status)
        else:
            log.info("endpoint %s: worker %s is %s, moving the circuit to %s", circuit.endpoint_id,
                     circuit.worker.authority, circuit.worker.status, replacement.authority)
            circuit = update_circuit(circuit, worker=replacement)
    fields = {k: v for k, v in desired.items() if getattr(circuit, k) != v}
    if fields:
        _change(circuit, fields)
        log.info("endpoint %s: inference circuit %s changed: %s", circuit.endpoint_id, circuit.pk,
                 ", ".join(sorted(fields)))
    return Circuit.objects.select_related("worker").get(pk=circuit.pk)


def remove_endpoint(endpoint_id, reason: str = "endpoint-destroyed") -> int:
    """The endpoint's circuit goes (tombstone, hint); 0 when it has none."""
    eid = _uuid(endpoint_id, "endpoint_id")
    if not isinstance(reason, str) or not reason or len(reason) > 64:
        raise errors.InvalidAPIParameters("reason: expected 1-64 characters")
    removed = remove_circuits(Circuit.objects.filter(endpoint_id=eid), reason=reason)
    if removed:
        log.info("endpoint %s: inference circuit removed (%s)", eid, reason)
    return removed


def retarget_endpoints() -> int:
    """The sweep: re-resolve every inference circuit's routes (a port published late, a kernel
    restarted elsewhere, a replica's session ended); one revision per circuit that changed."""
    changed = 0
    for circuit_id in Circuit.objects.filter(app_mode=AppMode.INFERENCE).values_list("pk", flat=True):
        with transaction.atomic():
            circuit = Circuit.objects.select_for_update().filter(pk=circuit_id).first()
            if circuit is None or not circuit.container_port:
                continue
            resolved = resolve_routes(circuit.routes or [], circuit.container_port)
            if resolved != circuit.routes:
                _change(circuit, {"routes": resolved})
                changed += 1
                log.info("endpoint %s: route targets changed (%d of %d reachable)", circuit.endpoint_id,
                         sum(1 for r in resolved if r["port"]), len(resolved))
    return changed


# --- what workers report ---------------------------------------------------------------------------

def _when(value, now: datetime) -> datetime | None:
    if value is None:
        return None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parsed = datetime.fromtimestamp(float(value), tz=dt_timezone.utc)
        else:
            parsed = datetime.fromisoformat(str(value))
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt_timezone.utc)
    except (ValueError, OverflowError, OSError, TypeError):
        return None
    return min(parsed, now)


def _int(value, default=0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return default
    return int(min(value, 2 ** 62))


def _inference_circuits(worker: Worker, ids) -> dict[str, Circuit]:
    keys = []
    for cid in list(ids)[:MAX_REPORTS]:
        try:
            keys.append(uuid.UUID(str(cid)))
        except ValueError:
            continue
    return {str(c.pk): c for c in Circuit.objects.filter(worker=worker, app_mode=AppMode.INFERENCE, pk__in=keys)}


def record_route_health(worker: Worker, reports: dict) -> int:
    """``{circuit_id: {route_id: {status, changed_at, checked_at, failures, last_error}}}`` from the
    worker carrying the circuits: upsert ``RouteHealth`` (an older report never overwrites a newer
    one).  Circuits of other workers and routes the circuit does not have are ignored."""
    if not isinstance(reports, dict):
        return 0
    now = timezone.now()
    recorded = 0
    for cid, circuit in _inference_circuits(worker, reports).items():
        routes = reports.get(cid)
        if not isinstance(routes, dict):
            continue
        known = {r["route_id"] for r in circuit.routes or []}
        for route_id, health in list(routes.items())[:MAX_ROUTES]:
            if route_id not in known or not isinstance(health, dict):
                continue
            status = health.get("status")
            if status not in RouteHealthStatus.values:
                continue
            checked = _when(health.get("checked_at"), now)
            values = {"status": status, "changed_at": _when(health.get("changed_at"), now), "checked_at": checked,
                      "failures": _int(health.get("failures")),
                      "last_error": str(health.get("last_error") or "")[:500]}
            row = RouteHealth.objects.filter(circuit=circuit, route_id=route_id).first()
            if row is None:
                try:
                    with transaction.atomic():
                        RouteHealth.objects.create(circuit=circuit, route_id=route_id, **values)
                except IntegrityError:
                    continue
            else:
                if row.checked_at and checked and checked < row.checked_at:
                    continue
                if row.status != status:
                    log.info("endpoint %s: route %s is %s (was %s) per worker %s%s", circuit.endpoint_id, route_id,
                             status, row.status, worker.authority,
                             f": {values['last_error']}" if values["last_error"] else "")
                RouteHealth.objects.filter(pk=row.pk).update(**values)
            recorded += 1
    return recorded


def record_samples(worker: Worker, reports: dict) -> int:
    """``{circuit_id: {requests_total, errors_total, inflight, latency_sum, latency_count,
    latency_buckets, healthy_routes, routes}}`` (cumulative since the worker started) → one
    ``InferenceSample`` per circuit."""
    if not isinstance(reports, dict):
        return 0
    now = timezone.now()
    rows = []
    for cid, circuit in _inference_circuits(worker, reports).items():
        data = reports.get(cid)
        if not isinstance(data, dict):
            continue
        buckets = data.get("latency_buckets")
        buckets = {str(k)[:24]: _int(v) for k, v in list(buckets.items())[:64]} if isinstance(buckets, dict) else {}
        routes = data.get("routes")
        routes = ({str(k)[:40]: {"requests": _int(v.get("requests")), "errors": _int(v.get("errors"))}
                   for k, v in list(routes.items())[:MAX_ROUTES] if isinstance(v, dict)}
                  if isinstance(routes, dict) else {})
        latency_sum = data.get("latency_sum")
        latency_sum = float(latency_sum) if isinstance(latency_sum, (int, float)) and not isinstance(
            latency_sum, bool) and math.isfinite(latency_sum) and latency_sum >= 0 else 0.0
        rows.append(InferenceSample(
            circuit=circuit, endpoint_id=circuit.endpoint_id, worker=worker, at=now,
            requests_total=_int(data.get("requests_total")), errors_total=_int(data.get("errors_total")),
            inflight=min(_int(data.get("inflight")), 2 ** 31 - 1), latency_sum=latency_sum,
            latency_count=_int(data.get("latency_count")), latency_buckets=buckets,
            healthy_routes=min(_int(data.get("healthy_routes")), 2 ** 31 - 1), routes=routes))
    InferenceSample.objects.bulk_create(rows)
    return len(rows)


def record_heartbeat(worker: Worker, reports: dict) -> None:
    """The ``inference`` part of a heartbeat: ``{circuit_id: {"health": {...}, "counters": {...}}}``."""
    if not isinstance(reports, dict) or not reports:
        return
    record_route_health(worker, {cid: r.get("health") for cid, r in reports.items() if isinstance(r, dict)})
    record_samples(worker, {cid: r.get("counters") for cid, r in reports.items() if isinstance(r, dict)})


def prune_samples(now=None) -> int:
    """Forget samples older than an hour."""
    return InferenceSample.objects.filter(at__lt=(now or timezone.now()) - SAMPLE_RETENTION).delete()[0]


# --- what the serving app reads --------------------------------------------------------------------

def _circuit_of(endpoint_id) -> Circuit | None:
    return Circuit.objects.filter(endpoint_id=_uuid(endpoint_id, "endpoint_id")).first()


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def endpoint_health(endpoint_id) -> dict:
    """``{route_id: {status, changed_at, checked_at, failures, last_error}}`` for every route of the
    circuit (``unknown`` until its worker reports); ``{}`` when the endpoint has no circuit."""
    circuit = _circuit_of(endpoint_id)
    if circuit is None:
        return {}
    rows = {str(h.route_id): h for h in RouteHealth.objects.filter(circuit=circuit)}
    answer = {}
    for route in circuit.routes or []:
        row = rows.get(route["route_id"])
        answer[route["route_id"]] = ({"status": RouteHealthStatus.UNKNOWN.value, "changed_at": None,
                                      "checked_at": None, "failures": 0, "last_error": ""} if row is None else
                                     {"status": row.status, "changed_at": _iso(row.changed_at),
                                      "checked_at": _iso(row.checked_at), "failures": row.failures,
                                      "last_error": row.last_error})
    return answer


def _bound(key: str) -> float:
    try:
        return float(key)
    except ValueError:
        return math.inf


def quantile(q: float, buckets: dict) -> float | None:
    """Like Prometheus' ``histogram_quantile``: ``buckets`` maps upper bounds to counts of
    observations at or below them (cumulative over bounds); linear within the bucket."""
    bounds = sorted(((_bound(k), v) for k, v in buckets.items()), key=lambda item: item[0])
    if not bounds or bounds[-1][1] <= 0:
        return None
    total = bounds[-1][1]
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return previous_bound


class _Delta:
    """Sums of counter increases between consecutive samples (a counter that went down means the
    worker restarted: its new value is the increase)."""

    __slots__ = ("requests", "errors", "latency_sum", "latency_count", "buckets", "routes")

    def __init__(self):
        self.requests = self.errors = self.latency_count = 0
        self.latency_sum = 0.0
        self.buckets: dict[str, int] = {}
        self.routes: dict[str, list[int]] = {}

    def add(self, prev: InferenceSample, cur: InferenceSample) -> None:
        reset = cur.requests_total < prev.requests_total or cur.latency_count < prev.latency_count
        base = None if reset else prev
        self.requests += cur.requests_total - (base.requests_total if base else 0)
        self.errors += max(0, cur.errors_total - (base.errors_total if base else 0))
        self.latency_count += cur.latency_count - (base.latency_count if base else 0)
        self.latency_sum += max(0.0, cur.latency_sum - (base.latency_sum if base else 0.0))
        for key, count in (cur.latency_buckets or {}).items():
            before = (base.latency_buckets or {}).get(key, 0) if base else 0
            self.buckets[key] = self.buckets.get(key, 0) + max(0, count - before)
        for route_id, figures in (cur.routes or {}).items():
            before = (base.routes or {}).get(route_id, {}) if base else {}
            into = self.routes.setdefault(route_id, [0, 0])
            into[0] += max(0, figures.get("requests", 0) - before.get("requests", 0))
            into[1] += max(0, figures.get("errors", 0) - before.get("errors", 0))

    @property
    def latency_mean(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None


def _samples(circuit: Circuit, since: datetime) -> list[InferenceSample]:
    """Samples after ``since`` plus, per worker, the last one at or before it (the base of the first delta)."""
    inside = list(InferenceSample.objects.filter(circuit=circuit, at__gt=since).order_by("at", "pk"))
    bases = []
    for worker_id in set(InferenceSample.objects.filter(circuit=circuit).values_list("worker_id", flat=True)):
        base = InferenceSample.objects.filter(circuit=circuit, worker_id=worker_id, at__lte=since).order_by(
            "-at", "-pk").first()
        if base is not None:
            bases.append(base)
    return sorted(bases, key=lambda s: (s.at, s.pk)) + inside


def _pairs(samples: list[InferenceSample]):
    """Consecutive samples of the same worker, in time order."""
    last: dict = {}
    for sample in samples:
        prev = last.get(sample.worker_id)
        last[sample.worker_id] = sample
        if prev is not None:
            yield prev, sample


def _check_range(value, what: str, low: int, high: int) -> int:
    return _number(value, what, low, high, integer=True)


def endpoint_traffic(endpoint_id, window_seconds=60, now=None) -> dict:
    """Rates and latency over the last ``window_seconds`` from the worker's samples.
    ``request_rate`` and ``error_rate`` are per second; ``error_ratio`` is errors / requests.
    ``span`` is the seconds the rates were measured over: 0 while fewer than two samples exist,
    when the rates and latencies are not measurements yet (their zeros mean "no data")."""
    window = _check_range(window_seconds, "window", 1, 3600)
    circuit = _circuit_of(endpoint_id)
    now = now or timezone.now()
    answer = {"request_rate": 0.0, "error_rate": 0.0, "error_ratio": 0.0, "inflight": 0, "latency_mean": None,
              "latency_p50": None, "latency_p99": None, "requests": 0, "errors": 0, "healthy_routes": 0,
              "per_route": {}, "samples": 0, "window": window, "span": 0.0}
    if circuit is None:
        return answer
    samples = _samples(circuit, now - timedelta(seconds=window))
    answer["samples"] = sum(1 for s in samples if s.at > now - timedelta(seconds=window))
    if not samples:
        return answer
    newest = max(samples, key=lambda s: (s.at, s.pk))
    answer.update(inflight=newest.inflight, healthy_routes=newest.healthy_routes)
    delta = _Delta()
    for prev, cur in _pairs(samples):
        delta.add(prev, cur)
    elapsed = (newest.at - samples[0].at).total_seconds()
    if elapsed <= 0:
        return answer
    answer.update(span=elapsed, requests=delta.requests, errors=delta.errors, request_rate=delta.requests / elapsed,
                  error_rate=delta.errors / elapsed,
                  error_ratio=delta.errors / delta.requests if delta.requests else 0.0,
                  latency_mean=delta.latency_mean, latency_p50=quantile(0.5, delta.buckets),
                  latency_p99=quantile(0.99, delta.buckets),
                  per_route={rid: {"request_rate": r / elapsed, "requests": r, "errors": e}
                             for rid, (r, e) in delta.routes.items()})
    return answer


def endpoint_series(endpoint_id, minutes=15, step_seconds=30, now=None) -> list[dict]:
    """One point per step over the last ``minutes`` (oldest first): ``{at (the step's start),
    request_rate, error_rate (per second), latency_mean (s or None), inflight (last seen)}``."""
    minutes = _check_range(minutes, "minutes", 1, 60)
    step = _check_range(step_seconds, "step", 1, 3600)
    if minutes * 60 // step > 720:
        raise errors.InvalidAPIParameters("step: at most 720 points (a larger step or fewer minutes)")
    now = now or timezone.now()
    count = max(1, math.ceil(minutes * 60 / step))
    start = now - timedelta(seconds=count * step)
    deltas = [_Delta() for _ in range(count)]
    inflight = [0] * count
    circuit = _circuit_of(endpoint_id)
    if circuit is not None:
        edges = [start + timedelta(seconds=step * (i + 1)) for i in range(count)]
        for prev, cur in _pairs(_samples(circuit, start)):
            index = min(bisect_left(edges, cur.at), count - 1)
            deltas[index].add(prev, cur)
            inflight[index] = cur.inflight
    return [{"at": (start + timedelta(seconds=step * i)).isoformat(), "request_rate": d.requests / step,
             "error_rate": d.errors / step, "latency_mean": d.latency_mean, "inflight": inflight[i]}
            for i, d in enumerate(deltas)]
