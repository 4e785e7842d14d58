"""A worker's own calls (registration, heartbeat, its circuit table, shutdown), its
liveness, and what operators do to workers.  A worker's status changes only through
``Worker.move_to`` or ``WORKER_MOVES`` (``appproxy.models``)."""
from __future__ import annotations

import logging
import re
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from appproxy.models import WORKER_MOVES, Circuit, FrontendMode, Worker, WorkerStatus, WorkerToken
from appproxy.services.access import record_access
from appproxy.services.circuits import remove_circuits
from appproxy.services.inference import record_heartbeat, record_route_health
from appproxy.services.placement import relocate
from appproxy.services.revisions import recompute_occupancy
from appproxy.services.serialise import circuit_json, worker_json
from appproxy.services.sweeps import ended_session_circuits
from appproxy.services.timeouts import heartbeat_timeout, permit_ttl
from appproxy.services.worker_tokens import check_token_allows, touch_token
from backendai import daemons
from backendai.actions import audited
from backendai.api import errors

log = logging.getLogger(__name__)

AUTHORITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def get_worker(authority: str) -> Worker:
    worker = Worker.objects.filter(authority=authority).first()
    if worker is None:
        raise errors.object_not_found("proxy worker", f"Worker {authority} is not registered (register first)")
    return worker


def validate_registration(data: dict) -> dict:
    """Normalise a register payload or raise InvalidAPIParameters naming the field."""
    mode = data.get("frontend_mode", FrontendMode.PORT)
    protocols = list(dict.fromkeys(data.get("protocols") or (["http", "tcp"] if mode == "port" else ["http"])))
    clean = {"frontend_mode": mode, "protocols": protocols, "scheme": data.get("scheme") or "http",
             "advertised_host": data["advertised_host"], "api_endpoint": data["api_endpoint"].rstrip("/"),
             "hint_url": (data.get("hint_url") or "").rstrip("/"), "capacity": data.get("capacity") or 0,
             "metrics_address": daemons.metrics_target(data.get("metrics_address") or "", data["advertised_host"]),
             "version": data.get("version") or "", "port_range_start": None, "port_range_end": None,
             "wildcard_domain": "", "wildcard_port": None}
    if mode == FrontendMode.PORT:
        port_range = data.get("port_range")
        if not port_range:
            raise errors.InvalidAPIParameters("port_range: a port-mode worker needs a port range [first, last]")
        first, last = port_range
        if not (1 <= first <= last <= 65535):
            raise errors.InvalidAPIParameters(f"port_range: {first}-{last} is not a range of ports")
        clean.update(port_range_start=first, port_range_end=last)
    else:
        domain = (data.get("wildcard_domain") or "").strip(".").lower()
        if not domain or not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", domain):
            raise errors.InvalidAPIParameters("wildcard_domain: a wildcard worker needs a domain such as apps.example.com")
        if not data.get("wildcard_port"):
            raise errors.InvalidAPIParameters("wildcard_port: a wildcard worker needs its traffic port")
        if "tcp" in protocols:
            raise errors.InvalidAPIParameters("protocols: raw TCP needs a port-mode worker")
        clean.update(wildcard_domain=domain, wildcard_port=data["wildcard_port"])
    return clean


@audited("proxy-worker", "register", "authority")
def register(token: WorkerToken, authority: str, data: dict) -> dict:
    """Create or update the worker (idempotent) and hand it its secret.  Circuits whose
    port left the range (or whose mode changed) are moved within the worker."""
    check_token_allows(token, authority)
    if not AUTHORITY_RE.fullmatch(authority):
        raise errors.InvalidAPIParameters(f"authority: {authority!r} is not 1-64 letters, digits, '.', '_' or '-'")
    clean = validate_registration(data)
    now = timezone.now()
    with transaction.atomic():
        worker = Worker.objects.select_for_update().filter(authority=authority).first()
        if worker is None:
            worker = Worker.objects.create(authority=authority, secret=secrets.token_urlsafe(32), status_changed=now,
                                           last_heartbeat=now, **clean)
            log.info("proxy worker %s registered (%s mode, %s)", authority, worker.frontend_mode,
                     worker.api_endpoint)
        else:
            moved = (clean["frontend_mode"], clean["port_range_start"], clean["port_range_end"]) != (
                worker.frontend_mode, worker.port_range_start, worker.port_range_end)
            for key, value in clean.items():
                setattr(worker, key, value)
            if worker.status != WorkerStatus.ALIVE:
                log.info("proxy worker %s is back (was %s)", authority, worker.status)
                worker.move_to(WorkerStatus.ALIVE, now)
            worker.last_heartbeat = now
            worker.save()
            if moved:
                relocate(worker, list(worker.circuits.all()), reason="worker-reconfigured")
        touch_token(token, now)
        recompute_occupancy([worker.pk])
        worker.refresh_from_db()
    return {"worker": worker_json(worker), "secret": worker.secret, "revision": worker.revision,
            "permit_ttl": permit_ttl(), "heartbeat_timeout": heartbeat_timeout()}


def heartbeat(token: WorkerToken, authority: str, data: dict) -> dict:
    """Liveness plus last-access reports (and, for inference circuits, route health and traffic
    counters); revives a LOST worker; removes circuits of ended sessions on the way, so routes
    converge even without the periodic sweep."""
    check_token_allows(token, authority)
    now = timezone.now()
    worker = get_worker(authority)
    failed = sorted({int(p) for p in data.get("failed_ports") or []})
    changes = {"last_heartbeat": now}
    if worker.status != WorkerStatus.ALIVE:
        log.info("proxy worker %s is back (was %s)", authority, worker.status)
        changes.update(WORKER_MOVES.move_fields(worker.status, WorkerStatus.ALIVE, now))
    if failed != list(worker.failed_ports or []):
        changes["failed_ports"] = failed
    Worker.objects.filter(pk=worker.pk).update(**changes)
    if failed and failed != list(worker.failed_ports or []):
        log.warning("proxy worker %s cannot listen on ports %s: moving their circuits", authority, failed)
        with transaction.atomic():
            locked = Worker.objects.select_for_update().get(pk=worker.pk)
            relocate(locked, list(locked.circuits.filter(port__in=failed)), reason="port-unavailable")
    record_access(worker, data.get("circuits") or {})
    record_heartbeat(worker, data.get("inference") or {})
    remove_circuits(ended_session_circuits(Circuit.objects.filter(worker=worker)), reason="session-ended")
    touch_token(token, now)
    revision = Worker.objects.filter(pk=worker.pk).values_list("revision", flat=True).get()
    return {"status": WorkerStatus.ALIVE, "revision": revision, "heartbeat_timeout": heartbeat_timeout()}


def circuit_table(token: WorkerToken, authority: str, since: int | None = None) -> dict:
    """The worker's circuits: all of them (``full``) without ``since`` or when ``since``
    is outside what the tombstones cover, else what changed and what was removed after it."""
    check_token_allows(token, authority)
    worker = get_worker(authority)
    revision = worker.revision  # read first: anything committed later comes again next time
    if since is None or since > revision or since < worker.horizon:
        return {"revision": revision, "full": True, "removed": [],
                "circuits": [circuit_json(c) for c in worker.circuits.order_by("revision")]}
    changed = [circuit_json(c) for c in worker.circuits.filter(revision__gt=since).order_by("revision")]
    removed = [str(cid) for cid in worker.tombstones.filter(revision__gt=since).values_list("circuit_id", flat=True)]
    return {"revision": revision, "full": False, "circuits": changed, "removed": removed}


def report_route_health(token: WorkerToken, authority: str, reports: dict) -> int:
    """``POST .../route-health``: a worker's health checks flipped routes (sent at once; every
    heartbeat repeats the full picture)."""
    check_token_allows(token, authority)
    worker = get_worker(authority)
    touch_token(token, timezone.now())
    return record_route_health(worker, reports)


@audited("proxy-worker", "shutdown", "authority")
def shutdown(token: WorkerToken, authority: str) -> None:
    check_token_allows(token, authority)
    now = timezone.now()
    if WORKER_MOVES.update(Worker.objects.filter(authority=authority), WorkerStatus.TERMINATED, now):
        log.info("proxy worker %s shut down cleanly (its circuits stay for its return)", authority)


@audited("proxy-worker", "mark-lost", when=bool)
def mark_lost_workers(timeout_seconds: float | None = None) -> int:
    """ALIVE workers silent for longer than the heartbeat timeout become LOST: no new circuits go there."""
    timeout = timedelta(seconds=timeout_seconds if timeout_seconds is not None else heartbeat_timeout())
    names = daemons.mark_silent_lost(Worker, WORKER_MOVES, timeout, timezone.now(), key="authority",
                                     never_seen_is_silent=True)
    for name in names:
        log.warning("proxy worker %s is LOST (no heartbeat for %s s)", name, timeout.total_seconds())
    return len(names)


@audited("proxy-worker", "set-schedulable", "workers")
def set_schedulable(workers, schedulable: bool) -> int:
    return Worker.objects.filter(pk__in=[w.pk for w in workers]).update(schedulable=schedulable)


@audited("proxy-worker", "rotate-secret", "worker")
def rotate_secret(worker: Worker) -> None:
    """A new secret: every permit and setup token of the worker stops working at its next registration."""
    Worker.objects.filter(pk=worker.pk).update(secret=secrets.token_urlsafe(32))
    log.warning("proxy worker %s: secret rotated; it must re-register (restart it)", worker.authority)
