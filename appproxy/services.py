"""Business rules of the app proxy coordinator: worker tokens, registration and
heartbeats, the circuit table with revisions, worker selection, launching apps
(``start_service``), and the sweeps that keep circuits in step with sessions.

Every state change of workers and circuits goes through this module; REST and
web views, the admin and Celery tasks call it.  Pushes to workers are hints
only: a worker also re-reads its table on a timer, so a lost hint costs a few
seconds, never a route.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from appproxy import tokens
from appproxy.models import (Circuit, CircuitTombstone, FrontendMode, Protocol, SetupToken, Worker, WorkerStatus,
                             WorkerToken)
from backendai.api import errors
from sessions.lifecycle import SessionStatus
from sessions.models import Kernel, Session

log = logging.getLogger(__name__)

TOKEN_PREFIX = "bpt_"
# Sessions whose circuits stay; any other status removes them.
LIVE_SESSION = (SessionStatus.RUNNING, SessionStatus.RUNNING_DEGRADED, SessionStatus.RESTARTING)
# Sessions an app can be opened in.
SERVICE_READY = (SessionStatus.RUNNING, SessionStatus.RUNNING_DEGRADED)
# Service-port protocols and the circuit protocol carrying them (reference §8).
PROTOCOL_MAP = {"http": Protocol.HTTP, "preopen": Protocol.HTTP, "tcp": Protocol.TCP, "vnc": Protocol.TCP,
                "rdp": Protocol.TCP}
MAX_ACCESS_REPORTS = 2000
AUTHORITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class WorkerNotAvailable(errors.BackendAIError):
    status_code = 503
    error_type = "worker-not-available"
    error_title = "No app proxy worker is available."


class SessionNotRunning(errors.BackendAIError):
    status_code = 409
    error_type = "invalid-session-state"
    error_title = "The session is not running."


class AppNotReady(errors.BackendAIError):
    status_code = 503
    error_type = "app-not-ready"
    error_title = "The app is not reachable yet."


class SetupTokenInvalid(errors.BackendAIError):
    status_code = 403
    error_type = "setup-token-invalid"
    error_title = "The app link is not valid."


class SetupTokenUsed(errors.BackendAIError):
    status_code = 410
    error_type = "setup-token-used"
    error_title = "The app link was already used."


def _setting(name: str, default):
    return getattr(settings, name, default)


def heartbeat_timeout() -> float:
    return float(_setting("APPPROXY_WORKER_HEARTBEAT_TIMEOUT", 30))


def idle_timeout() -> float:
    return float(_setting("APPPROXY_CIRCUIT_IDLE_TIMEOUT", 3600))


def setup_token_ttl() -> float:
    return float(_setting("APPPROXY_SETUP_TOKEN_TTL", 120))


def permit_ttl() -> float:
    return float(_setting("APPPROXY_PERMIT_TTL", 7 * 86400))


def tombstone_retention() -> float:
    return float(_setting("APPPROXY_TOMBSTONE_RETENTION", 86400))


# --- worker tokens ---------------------------------------------------------------------------

def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def issue_token(name: str, *, authority: str = "") -> tuple[WorkerToken, str]:
    """A new worker token; the raw value is returned once and only its hash is kept."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = WorkerToken.objects.create(name=name, token_hash=hash_token(raw), token_prefix=raw[:12],
                                       authority=authority)
    log.info("issued proxy worker token %s (%s)", token.pk, token)
    return token, raw


def revoke_tokens(tokens_) -> int:
    return WorkerToken.objects.filter(pk__in=[t.pk for t in tokens_], revoked_at__isnull=True).update(
        revoked_at=timezone.now())


def token_for(raw: str) -> WorkerToken | None:
    token = WorkerToken.objects.filter(token_hash=hash_token(raw)).first()
    if token is None or token.revoked_at is not None:
        return None
    return token


def check_token_allows(token: WorkerToken, authority: str) -> None:
    if token.authority and token.authority != authority:
        raise errors.GenericForbidden(f"This token is bound to worker {token.authority}")


def _touch_token(token: WorkerToken, now) -> None:
    if token.last_used is None or now - token.last_used > timedelta(minutes=1):
        WorkerToken.objects.filter(pk=token.pk).update(last_used=now)


# --- serialising for workers -----------------------------------------------------------------

def worker_json(worker: Worker) -> dict:
    return {
        "id": str(worker.pk), "authority": worker.authority, "frontend_mode": worker.frontend_mode,
        "protocols": list(worker.protocols or []), "scheme": worker.scheme,
        "advertised_host": worker.advertised_host, "api_endpoint": worker.api_endpoint,
        "port_range": [worker.port_range_start, worker.port_range_end] if worker.port_range_start else None,
        "wildcard_domain": worker.wildcard_domain or None, "wildcard_port": worker.wildcard_port,
        "capacity": worker.effective_capacity, "occupancy": worker.occupancy, "status": worker.status,
        "schedulable": worker.schedulable, "revision": worker.revision,
    }


def circuit_json(circuit: Circuit) -> dict:
    return {
        "id": str(circuit.pk), "app": circuit.app, "protocol": circuit.protocol,
        "session_id": str(circuit.session_id), "kernel_id": str(circuit.kernel_id) if circuit.kernel_id else None,
        "owner_id": str(circuit.owner_id), "granted_users": [str(u) for u in circuit.granted_users or []],
        "target_host": circuit.target_host, "target_port": circuit.target_port,
        "port": circuit.port, "subdomain": circuit.subdomain or None,
        "open_to_public": circuit.open_to_public, "allowed_client_ips": list(circuit.allowed_client_ips or []),
        "revision": circuit.revision,
    }


def frontend_url(circuit: Circuit, worker: Worker | None = None) -> str:
    """Where users reach the circuit: ``scheme://host:port`` or ``scheme://sub.domain[:port]``."""
    worker = worker or circuit.worker
    if circuit.protocol == Protocol.TCP:
        return f"tcp://{worker.advertised_host}:{circuit.port}"
    default_port = 443 if worker.scheme == "https" else 80
    if worker.frontend_mode == FrontendMode.WILDCARD:
        port = "" if worker.wildcard_port in (None, default_port) else f":{worker.wildcard_port}"
        return f"{worker.scheme}://{circuit.subdomain}.{worker.wildcard_domain}{port}"
    port = "" if circuit.port == default_port else f":{circuit.port}"
    return f"{worker.scheme}://{worker.advertised_host}{port}"


# --- hints to workers ------------------------------------------------------------------------

_hint_pool: ThreadPoolExecutor | None = None


def _post_hint(authority: str, url: str, secret: str, revision: int) -> None:
    import httpx

    body = json.dumps({"revision": revision}).encode()
    try:
        httpx.post(url, content=body, timeout=2.0, headers={
            "Content-Type": "application/json", "X-AppProxy-Signature": tokens.sign_hint(secret, body)})
    except httpx.HTTPError as exc:
        log.debug("hint to proxy worker %s at %s failed: %s (it resyncs on its timer)", authority, url, exc)


def send_hint(authority: str, url: str, secret: str, revision: int) -> None:
    """Fire and forget: a lost hint is harmless."""
    global _hint_pool
    if _hint_pool is None:
        _hint_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="appproxy-hint")
    _hint_pool.submit(_post_hint, authority, url, secret, revision)


def hint_worker(worker_id) -> None:
    """After the current transaction commits, tell the worker to sync now."""
    def push():
        row = Worker.objects.filter(pk=worker_id).values("authority", "hint_url", "secret", "revision").first()
        if row and row["hint_url"]:
            send_hint(row["authority"], row["hint_url"], row["secret"], row["revision"])

    transaction.on_commit(push)


# --- revisions and occupancy -----------------------------------------------------------------

def _next_revision(worker_id) -> int:
    """Take the worker's next revision number (the UPDATE also locks its row until commit)."""
    Worker.objects.filter(pk=worker_id).update(revision=F("revision") + 1)
    return Worker.objects.filter(pk=worker_id).values_list("revision", flat=True).get()


def recompute_occupancy(worker_ids) -> None:
    """Occupancy is counted from the circuits, never decremented (one statement)."""
    count = (Circuit.objects.filter(worker=OuterRef("pk")).order_by().values("worker")
             .annotate(n=Count("pk")).values("n"))
    Worker.objects.filter(pk__in=list(worker_ids)).update(occupancy=Coalesce(Subquery(count), 0))


# --- registration, heartbeat, table ----------------------------------------------------------

def _get_worker(authority: str) -> Worker:
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
                worker.status, worker.status_changed, worker.lost_at = WorkerStatus.ALIVE, now, None
            worker.last_heartbeat = now
            worker.save()
            if moved:
                _relocate(worker, list(worker.circuits.all()), reason="worker-reconfigured")
        _touch_token(token, now)
        recompute_occupancy([worker.pk])
        worker.refresh_from_db()
    return {"worker": worker_json(worker), "secret": worker.secret, "revision": worker.revision,
            "permit_ttl": permit_ttl(), "heartbeat_timeout": heartbeat_timeout()}


def heartbeat(token: WorkerToken, authority: str, data: dict) -> dict:
    """Liveness plus last-access reports; revives a LOST worker; removes circuits of
    ended sessions on the way, so routes converge even without the periodic sweep."""
    check_token_allows(token, authority)
    now = timezone.now()
    worker = _get_worker(authority)
    failed = sorted({int(p) for p in data.get("failed_ports") or []})
    changes = {"last_heartbeat": now}
    if worker.status != WorkerStatus.ALIVE:
        log.info("proxy worker %s is back (was %s)", authority, worker.status)
        changes.update(status=WorkerStatus.ALIVE, status_changed=now, lost_at=None)
    if failed != list(worker.failed_ports or []):
        changes["failed_ports"] = failed
    Worker.objects.filter(pk=worker.pk).update(**changes)
    if failed and failed != list(worker.failed_ports or []):
        log.warning("proxy worker %s cannot listen on ports %s: moving their circuits", authority, failed)
        with transaction.atomic():
            locked = Worker.objects.select_for_update().get(pk=worker.pk)
            _relocate(locked, list(locked.circuits.filter(port__in=failed)), reason="port-unavailable")
    record_access(worker, data.get("circuits") or {})
    remove_circuits(Circuit.objects.filter(worker=worker).exclude(session__status__in=LIVE_SESSION),
                    reason="session-ended")
    _touch_token(token, now)
    revision = Worker.objects.filter(pk=worker.pk).values_list("revision", flat=True).get()
    return {"status": WorkerStatus.ALIVE, "revision": revision, "heartbeat_timeout": heartbeat_timeout()}


def _parse_when(value) -> datetime | None:
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), tz=dt_timezone.utc)
        parsed = datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt_timezone.utc)


def record_access(worker: Worker, reports: dict) -> int:
    """``{circuit_id: time}`` from a worker: move circuits' and their sessions'
    ``last_access`` forward (never back), which feeds the idle checks."""
    now = timezone.now()
    when_by_id = {}
    for circuit_id, value in list(reports.items())[:MAX_ACCESS_REPORTS]:
        when = _parse_when(value)
        try:
            key = str(uuid.UUID(str(circuit_id)))
        except ValueError:
            log.info("proxy worker %s reported access to %r, which is not a circuit id", worker.authority,
                     circuit_id)
            continue
        if when is not None:
            when_by_id[key] = min(when, now)
    if not when_by_id:
        return 0
    sessions = dict(Circuit.objects.filter(worker=worker, pk__in=list(when_by_id)).values_list("pk", "session_id"))
    latest_by_session: dict = {}
    for circuit_id, session_id in sessions.items():
        when = when_by_id[str(circuit_id)]
        Circuit.objects.filter(pk=circuit_id).filter(Q(last_access__isnull=True) | Q(last_access__lt=when)).update(
            last_access=when)
        latest_by_session[session_id] = max(when, latest_by_session.get(session_id, when))
    from sessions import services as session_services

    for session_id, when in latest_by_session.items():
        session_services.touch_session(session_id, when)
    return len(sessions)


def circuit_table(token: WorkerToken, authority: str, since: int | None = None) -> dict:
    """The worker's circuits: all of them (``full``) without ``since`` or when ``since``
    is outside what the tombstones cover, else what changed and what was removed after it."""
    check_token_allows(token, authority)
    worker = _get_worker(authority)
    revision = worker.revision  # read first: anything committed later comes again next time
    if since is None or since > revision or since < worker.horizon:
        return {"revision": revision, "full": True, "removed": [],
                "circuits": [circuit_json(c) for c in worker.circuits.order_by("revision")]}
    changed = [circuit_json(c) for c in worker.circuits.filter(revision__gt=since).order_by("revision")]
    removed = [str(cid) for cid in worker.tombstones.filter(revision__gt=since).values_list("circuit_id", flat=True)]
    return {"revision": revision, "full": False, "circuits": changed, "removed": removed}


def redeem_setup_token(token: WorkerToken, authority: str, raw: str) -> dict:
    """A worker redeems a setup link: the claims of a valid link issued for this worker,
    used for the first time now; :class:`SetupTokenUsed` when it was used before (by any
    worker, before any restart), :class:`SetupTokenInvalid` when it is forged, expired or
    unknown.  One guarded ``UPDATE`` marks it used, so two redemptions can't both win."""
    check_token_allows(token, authority)
    worker = _get_worker(authority)
    try:
        claims = tokens.verify(worker.secret, "setup", raw)
    except tokens.TokenError as exc:
        raise SetupTokenInvalid(f"This app link is not valid ({exc})") from None
    now = timezone.now()
    digest = tokens.token_digest(raw)
    won = SetupToken.objects.filter(token_hash=digest, worker=worker, used_at__isnull=True,
                                    expires_at__gt=now).update(used_at=now)
    if not won:
        row = SetupToken.objects.filter(token_hash=digest, worker=worker).only("used_at").first()
        if row is not None and row.used_at is not None:
            log.warning("proxy worker %s: setup link for circuit %s replayed (used at %s)", authority,
                        claims.circuit, row.used_at.isoformat())
            raise SetupTokenUsed("This app link was already used. Open the app again from the session page.")
        raise SetupTokenInvalid("This app link is not known (it expired or its app was closed)")
    _touch_token(token, now)
    return {"circuit": claims.circuit, "user": claims.user, "expires": claims.expires, "redirect": claims.redirect}


def shutdown(token: WorkerToken, authority: str) -> None:
    check_token_allows(token, authority)
    now = timezone.now()
    if Worker.objects.filter(authority=authority).update(status=WorkerStatus.TERMINATED, status_changed=now):
        log.info("proxy worker %s shut down cleanly (its circuits stay for its return)", authority)


def mark_lost_workers(timeout_seconds: float | None = None) -> int:
    """ALIVE workers silent for longer than the heartbeat timeout become LOST: no new circuits go there."""
    timeout = timedelta(seconds=timeout_seconds if timeout_seconds is not None else heartbeat_timeout())
    now = timezone.now()
    silent = Worker.objects.filter(status=WorkerStatus.ALIVE).filter(
        Q(last_heartbeat__lt=now - timeout) | Q(last_heartbeat__isnull=True))
    names = list(silent.values_list("authority", flat=True))
    count = Worker.objects.filter(authority__in=names, status=WorkerStatus.ALIVE).update(
        status=WorkerStatus.LOST, status_changed=now, lost_at=now)
    for name in names:
        log.warning("proxy worker %s is LOST (no heartbeat for %s s)", name, timeout.total_seconds())
    return count


def set_schedulable(workers, schedulable: bool) -> int:
    return Worker.objects.filter(pk__in=[w.pk for w in workers]).update(schedulable=schedulable)


def rotate_secret(worker: Worker) -> None:
    """A new secret: every permit and setup token of the worker stops working at its next registration."""
    Worker.objects.filter(pk=worker.pk).update(secret=secrets.token_urlsafe(32))
    log.warning("proxy worker %s: secret rotated; it must re-register (restart it)", worker.authority)


# --- worker selection and frontend slots -----------------------------------------------------

def pick_worker(protocol: str, scaling_group_id: str | None = None, exclude=()) -> Worker:
    """Reference §8: ALIVE, schedulable workers carrying the protocol with a free slot;
    wildcard workers first (fewest circuits), then port workers (most free ports)."""
    query = (Worker.objects.filter(status=WorkerStatus.ALIVE, schedulable=True)
             .filter(Q(scaling_group__isnull=True) | Q(scaling_group_id=scaling_group_id))
             .exclude(pk__in=list(exclude)).annotate(used=Count("circuits")))
    wildcard, port = [], []
    for worker in query:
        if protocol not in (worker.protocols or []):
            continue
        capacity = worker.effective_capacity
        if worker.frontend_mode == FrontendMode.WILDCARD:
            if protocol == Protocol.HTTP and (capacity is None or worker.used < capacity):
                wildcard.append(worker)
        else:
            free = capacity - worker.used - len(_failed_in_range(worker))
            if free > 0:
                worker.free = free
                port.append(worker)
    wildcard.sort(key=lambda w: (w.used, w.authority))
    port.sort(key=lambda w: (-w.free, w.authority))
    chosen = (wildcard + port)[:1]
    if not chosen:
        raise WorkerNotAvailable(f"No app proxy worker can take a new {protocol} app right now"
                                 f"{f' for scaling group {scaling_group_id}' if scaling_group_id else ''}")
    return chosen[0]


def _failed_in_range(worker: Worker) -> set[int]:
    if worker.port_range_start is None:
        return set()
    return {p for p in worker.failed_ports or [] if worker.port_range_start <= p <= worker.port_range_end}


def allocate_port(worker: Worker, also_avoid=()) -> int | None:
    """The lowest port of the worker's range that no circuit uses and the worker can listen on."""
    used = set(Circuit.objects.filter(worker=worker, port__isnull=False).values_list("port", flat=True))
    used |= set(worker.failed_ports or []) | set(also_avoid)
    for port in range(worker.port_range_start, worker.port_range_end + 1):
        if port not in used:
            return port
    return None


def _subdomain(worker: Worker, session_id, app: str, circuit_id) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", app.lower()).strip("-")[:40] or "app"
    candidate = f"{base}-{session_id.hex[:12]}"
    if Circuit.objects.filter(worker=worker, subdomain=candidate).exclude(pk=circuit_id).exists():
        candidate = f"{base}-{circuit_id.hex[:16]}"
    return candidate


def _slot_for(worker: Worker, circuit: Circuit, protocol: str) -> dict:
    if worker.frontend_mode == FrontendMode.WILDCARD:
        if protocol != Protocol.HTTP:
            raise WorkerNotAvailable(f"Worker {worker.authority} carries only HTTP apps")
        return {"port": None, "subdomain": _subdomain(worker, circuit.session_id, circuit.app, circuit.pk)}
    port = allocate_port(worker)
    if port is None:
        raise WorkerNotAvailable(f"Worker {worker.authority} has no free port")
    return {"port": port, "subdomain": ""}


def _relocate(worker: Worker, circuits: list[Circuit], reason: str) -> None:
    """Give circuits a new slot on the same worker (range or mode changed, port unusable);
    circuits that no longer fit are removed.  Runs inside the caller's transaction."""
    if not circuits:
        return
    revision = _next_revision(worker.pk)
    gone = []
    for circuit in circuits:
        slot = None
        if worker.frontend_mode == FrontendMode.PORT:
            inside = circuit.port is not None and worker.port_range_start <= circuit.port <= worker.port_range_end
            if inside and circuit.port not in (worker.failed_ports or []):
                continue
            Circuit.objects.filter(pk=circuit.pk).update(port=None)
            port = allocate_port(worker)
            slot = {"port": port, "subdomain": ""} if port is not None else None
        elif circuit.protocol == Protocol.HTTP:
            if circuit.subdomain:
                continue
            slot = {"port": None, "subdomain": _subdomain(worker, circuit.session_id, circuit.app, circuit.pk)}
        if slot is None:
            gone.append(circuit.pk)
            continue
        Circuit.objects.filter(pk=circuit.pk).update(revision=revision, **slot)
        log.info("circuit %s (session %s, app %s) moved on worker %s to %s (%s)", circuit.pk, circuit.session_id,
                 circuit.app, worker.authority, slot["port"] or slot["subdomain"], reason)
    if gone:
        CircuitTombstone.objects.bulk_create([CircuitTombstone(worker=worker, circuit_id=pk, revision=revision,
                                                               reason=reason) for pk in gone])
        Circuit.objects.filter(pk__in=gone).delete()
        log.warning("worker %s: removed circuits %s (no slot left: %s)", worker.authority, gone, reason)
    recompute_occupancy([worker.pk])
    hint_worker(worker.pk)


# --- circuits --------------------------------------------------------------------------------

def normalize_ips(values) -> list[str]:
    """``["10.0.0.0/8", "127.0.0.1"]`` or a comma string -> canonical networks; 400 on a bad entry."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [v for v in (part.strip() for part in values.split(",")) if v]
    if not isinstance(values, (list, tuple)):
        raise errors.InvalidAPIParameters("allowed_client_ips: expected a list of IP addresses or CIDR networks")
    result = []
    for value in values:
        try:
            result.append(str(ipaddress.ip_network(str(value).strip(), strict=False)))
        except ValueError:
            raise errors.InvalidAPIParameters(
                f"allowed_client_ips: {value!r} is not an IP address or CIDR network") from None
    return list(dict.fromkeys(result))


def main_kernel(session: Session) -> Kernel | None:
    return (session.kernels.filter(cluster_role="main").select_related("agent").first()
            or session.kernels.select_related("agent").order_by("cluster_idx").first())


def kernel_host(kernel: Kernel) -> str:
    """Where the kernel's published ports are reachable from the proxy."""
    if kernel.kernel_host:
        return kernel.kernel_host
    if kernel.agent_id and kernel.agent and kernel.agent.addr:
        return kernel.agent.addr
    return kernel.agent_addr or "127.0.0.1"


def service_target(kernel: Kernel, app: str, container_port: int | None = None) -> tuple[str, str, int, int]:
    """(circuit protocol, host, host port, container port) of ``app`` in the kernel."""
    ports = kernel.service_ports or []
    entry = next((p for p in ports if p.get("name") == app), None)
    if entry is None:
        names = ", ".join(p.get("name", "?") for p in ports if p.get("protocol") in PROTOCOL_MAP) or "none"
        raise errors.object_not_found("app", f"The session has no app {app!r} (apps: {names})")
    protocol = PROTOCOL_MAP.get(entry.get("protocol"))
    if protocol is None:
        raise errors.InvalidAPIParameters(f"App {app!r} is a {entry.get('protocol')} port and cannot be proxied")
    container_ports = list(entry.get("container_ports") or [])
    host_ports = list(entry.get("host_ports") or [])
    index = 0
    if container_port is not None:
        if container_port not in container_ports:
            raise errors.InvalidAPIParameters(
                f"port: app {app!r} listens on {', '.join(map(str, container_ports))}, not {container_port}")
        index = container_ports.index(container_port)
    if index >= len(host_ports) or not host_ports[index]:
        raise AppNotReady(f"App {app!r} has no published port yet; try again in a moment")
    return protocol, kernel_host(kernel), int(host_ports[index]), int(container_ports[index])


@transaction.atomic
def create_circuit(*, session: Session, app: str, protocol: str, target_host: str, target_port: int, owner=None,
                   kernel: Kernel | None = None, container_port: int | None = None, open_to_public: bool = False,
                   allowed_client_ips=None, envs: dict | None = None, arguments: dict | None = None,
                   worker: Worker | None = None) -> Circuit:
    """A new circuit on ``worker`` (or the one ``pick_worker`` chooses), with a fresh port or subdomain."""
    worker = worker or pick_worker(protocol, session.scaling_group_id)
    worker = Worker.objects.select_for_update().get(pk=worker.pk)
    circuit = Circuit(session=session, kernel=kernel, app=app, protocol=protocol, target_host=target_host,
                      target_port=target_port, container_port=container_port, worker=worker,
                      owner=owner or session.user, open_to_public=open_to_public,
                      allowed_client_ips=normalize_ips(allowed_client_ips), envs=envs or {},
                      arguments=arguments or {})
    slot = _slot_for(worker, circuit, protocol)
    circuit.port, circuit.subdomain = slot["port"], slot["subdomain"]
    circuit.revision = _next_revision(worker.pk)
    circuit.save(force_insert=True)
    recompute_occupancy([worker.pk])
    hint_worker(worker.pk)
    log.info("circuit %s: app %s (%s) of session %s -> %s:%s via worker %s at %s", circuit.pk, app, protocol,
             session.pk, target_host, target_port, worker.authority, circuit.port or circuit.subdomain)
    return circuit


EDITABLE = ("open_to_public", "allowed_client_ips", "granted_users", "target_host", "target_port", "worker")


@transaction.atomic
def update_circuit(circuit: Circuit, **changes) -> Circuit:
    """Change a circuit (admin edits, start-service options).  Moving it to another worker
    gives it a slot there and leaves a tombstone on the old one."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    current = Circuit.objects.select_for_update().select_related("worker").get(pk=circuit.pk)
    if "allowed_client_ips" in changes:
        changes["allowed_client_ips"] = normalize_ips(changes["allowed_client_ips"])
    if "granted_users" in changes:
        changes["granted_users"] = sorted({str(u) for u in changes["granted_users"] or []})
    new_worker = changes.pop("worker", None)
    fields = {k: v for k, v in changes.items() if getattr(current, k) != v}
    if new_worker is not None and new_worker.pk != current.worker_id:
        old = current.worker
        target = Worker.objects.select_for_update().get(pk=new_worker.pk)
        if current.protocol not in (target.protocols or []):
            raise errors.InvalidAPIParameters(f"Worker {target.authority} does not carry {current.protocol} apps")
        CircuitTombstone.objects.create(worker=old, circuit_id=current.pk, revision=_next_revision(old.pk),
                                        reason="moved")
        current.worker = target
        slot = _slot_for(target, current, current.protocol)
        fields.update(worker=target, **slot)
        hint_worker(old.pk)
        log.info("circuit %s moved from worker %s to %s", current.pk, old.authority, target.authority)
    if not fields:
        return current
    fields["revision"] = _next_revision(fields.get("worker", current.worker).pk)
    Circuit.objects.filter(pk=current.pk).update(updated_at=timezone.now(), **fields)
    recompute_occupancy({current.worker_id, fields.get("worker", current.worker).pk})
    hint_worker(fields.get("worker", current.worker).pk)
    log.info("circuit %s (session %s, app %s) changed: %s", current.pk, current.session_id, current.app,
             ", ".join(sorted(fields)))
    current.refresh_from_db()
    return current


def remove_circuits(circuits, reason: str) -> int:
    """Remove circuits (a queryset or an iterable of circuits/ids): tombstones tell their
    workers at the next sync; a hint makes that now."""
    if hasattr(circuits, "values_list"):
        rows = list(circuits.values_list("pk", "worker_id"))
    else:
        ids = [getattr(c, "pk", c) for c in circuits]
        rows = list(Circuit.objects.filter(pk__in=ids).values_list("pk", "worker_id"))
    if not rows:
        return 0
    by_worker: dict = {}
    for pk, worker_id in rows:
        by_worker.setdefault(worker_id, []).append(pk)
    removed = 0
    for worker_id, ids in by_worker.items():
        with transaction.atomic():
            revision = _next_revision(worker_id)
            ids = list(Circuit.objects.filter(pk__in=ids, worker_id=worker_id).values_list("pk", flat=True))
            CircuitTombstone.objects.bulk_create([CircuitTombstone(worker_id=worker_id, circuit_id=pk,
                                                                   revision=revision, reason=reason[:64])
                                                  for pk in ids])
            removed += Circuit.objects.filter(pk__in=ids).delete()[1].get(Circuit._meta.label, 0)
            recompute_occupancy([worker_id])
            hint_worker(worker_id)
        log.info("removed circuits %s from worker %s (%s)", [str(i) for i in ids], worker_id, reason)
    return removed


def remove_session_circuits(session, reason: str = "session-ended") -> int:
    """Call when a session ends: its circuits go (the sweep does it anyway, later)."""
    return remove_circuits(Circuit.objects.filter(session_id=getattr(session, "pk", session)), reason)


def retarget_circuits() -> int:
    """Follow kernels whose service ports moved (a restart republished them): one revision each."""
    changed = 0
    query = (Circuit.objects.filter(session__status__in=LIVE_SESSION, container_port__isnull=False,
                                    kernel__isnull=False).select_related("kernel", "kernel__agent"))
    for circuit in query:
        try:
            _, host, port, _ = service_target(circuit.kernel, circuit.app, circuit.container_port)
        except errors.BackendAIError:
            continue  # not published right now: keep the old target until it is
        if (host, port) != (circuit.target_host, circuit.target_port):
            update_circuit(circuit, target_host=host, target_port=port)
            changed += 1
    return changed


def collect_idle_circuits(timeout_seconds: float | None = None, now=None) -> int:
    """Non-public circuits unused for longer than the timeout (0 disables) are removed."""
    timeout = idle_timeout() if timeout_seconds is None else timeout_seconds
    if not timeout:
        return 0
    now = now or timezone.now()
    idle = (Circuit.objects.filter(open_to_public=False).annotate(seen=Coalesce("last_access", "created_at"))
            .filter(seen__lt=now - timedelta(seconds=timeout)))
    return remove_circuits(idle, reason="idle")


def prune_tombstones(retention_seconds: float | None = None, now=None) -> int:
    """Forget old tombstones; a worker whose last sync is older gets the full table."""
    retention = tombstone_retention() if retention_seconds is None else retention_seconds
    now = now or timezone.now()
    old = CircuitTombstone.objects.filter(removed_at__lt=now - timedelta(seconds=retention))
    pruned = 0
    for worker_id in set(old.values_list("worker_id", flat=True)):
        with transaction.atomic():
            mine = old.filter(worker_id=worker_id)
            horizon = max(mine.values_list("revision", flat=True), default=0)
            Worker.objects.filter(pk=worker_id, horizon__lt=horizon).update(horizon=horizon)
            pruned += mine.delete()[0]
    return pruned


def prune_setup_tokens(now=None) -> int:
    """Forget setup links that expired (used or not): their signature refuses them anyway."""
    return SetupToken.objects.filter(expires_at__lt=now or timezone.now()).delete()[0]


def sweep_circuits(now=None) -> dict:
    """The periodic convergence pass: circuits of ended sessions, moved targets, idle circuits, old tombstones,
    expired setup links."""
    return {
        "ended": remove_circuits(Circuit.objects.exclude(session__status__in=LIVE_SESSION), reason="session-ended"),
        "retargeted": retarget_circuits(),
        "idle": collect_idle_circuits(now=now),
        "tombstones": prune_tombstones(now=now),
        "setup_tokens": prune_setup_tokens(now=now),
    }


# --- launching apps --------------------------------------------------------------------------

def issue_setup(circuit: Circuit, user, redirect: str = "/") -> dict:
    """A one-time setup URL for ``user`` on the circuit's worker (valid for a short while)."""
    worker = circuit.worker
    issued = timezone.now()
    ttl = setup_token_ttl()
    token = tokens.make_setup_token(worker.secret, str(circuit.pk), str(user.pk), ttl, redirect,
                                    now=issued.timestamp())
    # the row is the link's memory: a worker redeems it once (redeem_setup_token), whatever restarts
    SetupToken.objects.create(token_hash=tokens.token_digest(token), worker=worker, circuit=circuit,
                              user_id=str(user.pk), expires_at=issued + timedelta(seconds=ttl + 1))
    api = worker.api_endpoint.rstrip("/")
    return {"token": token, "wsproxy_addr": api, "url": f"{api}/setup?token={token}",
            "circuit_id": str(circuit.pk), "app": circuit.app, "protocol": circuit.protocol,
            "app_url": frontend_url(circuit, worker)}


def start_service(user, session: Session, app_name: str, *, port: int | None = None, envs: dict | None = None,
                  arguments: dict | None = None, open_to_public: bool | None = None, allowed_client_ips=None,
                  redirect: str = "/") -> dict:
    """Open ``app_name`` of ``session`` for ``user`` (its owner or an admin who may see it):
    reuse the session's circuit for the app or create one, and return
    ``{"token", "wsproxy_addr", "url", "circuit_id", "app", "protocol", "app_url"}``
    where ``url`` is the one-time setup URL to send the browser to."""
    if session.status not in SERVICE_READY:
        raise SessionNotRunning(f"Session {session.name} is {session.status}; apps open only while it is RUNNING")
    problem = tokens.redirect_problem(redirect)
    if problem:
        raise errors.InvalidAPIParameters(f"redirect: {problem}")
    kernel = main_kernel(session)
    if kernel is None:
        raise SessionNotRunning(f"Session {session.name} has no kernel")
    protocol, host, target_port, container_port = service_target(kernel, app_name, port)
    ips = normalize_ips(allowed_client_ips) if allowed_client_ips is not None else None
    for attempt in range(3):
        try:
            with transaction.atomic():
                circuit = (Circuit.objects.select_for_update().select_related("worker")
                           .filter(session=session, app=app_name).first())
                if circuit is not None and circuit.worker.status != WorkerStatus.ALIVE:
                    log.info("circuit %s of session %s: worker %s is %s, opening %s elsewhere", circuit.pk,
                             session.pk, circuit.worker.authority, circuit.worker.status, app_name)
                    replacement = pick_worker(protocol, session.scaling_group_id, exclude=[circuit.worker_id])
                    circuit = update_circuit(circuit, worker=replacement)
                if circuit is None:
                    circuit = create_circuit(
                        session=session, app=app_name, protocol=protocol, target_host=host, target_port=target_port,
                        kernel=kernel, container_port=container_port, owner=session.user,
                        open_to_public=bool(open_to_public), allowed_client_ips=ips or [], envs=envs,
                        arguments=arguments)
                changes = {}
                if (circuit.target_host, circuit.target_port) != (host, target_port):
                    changes.update(target_host=host, target_port=target_port)
                if open_to_public is not None and circuit.open_to_public != open_to_public:
                    changes["open_to_public"] = open_to_public
                if ips is not None and list(circuit.allowed_client_ips or []) != ips:
                    changes["allowed_client_ips"] = ips
                if user.pk != circuit.owner_id and str(user.pk) not in (circuit.granted_users or []):
                    changes["granted_users"] = [*(circuit.granted_users or []), str(user.pk)]
                if changes:
                    circuit = update_circuit(circuit, **changes)
                circuit = Circuit.objects.select_related("worker").get(pk=circuit.pk)
            break
        except IntegrityError:
            if attempt == 2:
                raise
            log.info("start-service race on session %s app %s; retrying", session.pk, app_name)
    return issue_setup(circuit, user, redirect)


def form_targets() -> list[str]:
    """Where the web UI's Open button ends up: each alive worker's setup endpoint, which then
    redirects to the app (``host:*`` in port mode, ``*.domain[:port]`` in wildcard mode).  The
    session page lists them in its CSP ``form-action``: browsers check every redirect of a
    form submission against it."""
    targets = []
    for worker in Worker.objects.filter(status=WorkerStatus.ALIVE):
        targets.append(worker.api_endpoint)
        if worker.frontend_mode == FrontendMode.WILDCARD and worker.wildcard_domain:
            port = f":{worker.wildcard_port}" if worker.wildcard_port else ""
            targets.append(f"{worker.scheme}://*.{worker.wildcard_domain}{port}")
        elif worker.advertised_host:
            targets.append(f"{worker.scheme}://{worker.advertised_host}:*")
    return targets
