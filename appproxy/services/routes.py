"""The coordinator's own REST API (``python -m appproxy.coordinator``; docs/appproxy.md,
"The coordinator's REST API"): workers addressed by id, and **routes** — a route is a
circuit seen from the manager: a session's app, the worker carrying it and its port or
subdomain.  Thin wrappers over the same services the in-process coordinator uses, so
both ways of running it make the same rows."""
from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone

from accounts.models import User
from appproxy.models import Circuit, Worker, WorkerStatus, WorkerToken
from appproxy.services.circuits import remove_circuits, remove_session_circuits
from appproxy.services.launch import start_service
from appproxy.services.serialise import circuit_json, frontend_url, worker_json
from appproxy.services.timeouts import heartbeat_timeout
from appproxy.services.worker_tokens import check_token_allows
from appproxy.services.workers import circuit_table, heartbeat, register
from backendai.actions import audited
from backendai.api import errors
from sessions.models import Session


def parse_id(value, what: str) -> uuid.UUID:
    """A UUID given in a path, a query or a body, or 400 naming ``what``."""
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        raise errors.InvalidAPIParameters(f"{what}: expected a UUID, got {str(value)[:80]!r}") from None


def get_worker_by_id(worker_id) -> Worker:
    worker = Worker.objects.filter(pk=parse_id(worker_id, "worker_id")).first()
    if worker is None:
        raise errors.object_not_found("proxy worker", f"No proxy worker {worker_id}")
    return worker


def worker_health(worker: Worker, now=None) -> dict:
    """``worker_json`` plus what an operator asks first: when it was last heard of, and whether it
    takes new routes now (ALIVE, schedulable and heard of within the heartbeat timeout)."""
    now = now or timezone.now()
    age = (now - worker.last_heartbeat).total_seconds() if worker.last_heartbeat else None
    fresh = age is not None and age <= heartbeat_timeout()
    return {**worker_json(worker), "last_heartbeat": worker.last_heartbeat.isoformat() if worker.last_heartbeat else None,
            "heartbeat_age": None if age is None else round(age, 3),
            "healthy": worker.status == WorkerStatus.ALIVE and fresh, "hint_url": worker.hint_url or None}


def register_worker(token: WorkerToken, data: dict) -> dict:
    """``POST /workers/register``: register (idempotent, as ``PUT …/workers/<name>``) and answer
    the worker's id and its whole route table at the answered revision."""
    name = data["name"]
    answer = register(token, name, data)
    table = circuit_table(token, name)
    return {"worker_id": answer["worker"]["id"], **answer, "revision": table["revision"],
            "routes": table["circuits"]}


def heartbeat_worker(token: WorkerToken, worker_id, data: dict) -> dict:
    worker = get_worker_by_id(worker_id)
    return {"worker_id": str(worker.pk), **heartbeat(token, worker.authority, data)}


def list_workers() -> list[dict]:
    now = timezone.now()
    return [worker_health(w, now) for w in Worker.objects.order_by("authority")]


def show_worker(worker_id, token: WorkerToken | None = None) -> dict:
    """One worker with its health; a worker token sees only the worker it may speak for."""
    worker = get_worker_by_id(worker_id)
    if token is not None:
        check_token_allows(token, worker.authority)
    return worker_health(worker)


def route_json(circuit: Circuit) -> dict:
    worker = circuit.worker
    data = circuit_json(circuit)
    data.pop("token_secret", None)  # the worker's business, not the manager's listing
    return {**data, "worker_id": str(worker.pk), "worker": worker.authority,
            "url": frontend_url(circuit, worker), "created_at": circuit.created_at.isoformat(),
            "last_access": circuit.last_access.isoformat() if circuit.last_access else None}


@audited("app-route", "open", "session_id")
def open_route(*, session_id, app: str, user_id=None, port: int | None = None, envs: dict | None = None,
               arguments: dict | None = None, open_to_public: bool | None = None, allowed_client_ips=None,
               redirect: str = "/") -> tuple[dict, bool]:
    """``POST /routes``: the route of ``app`` in the session (reused, or created on the worker
    ``pick_worker`` chooses, which is hinted at once) and a one-time setup link for ``user_id``
    (default: the session's owner).  Returns ``({"route", "setup"}, created)``."""
    session = Session.objects.filter(pk=parse_id(session_id, "session_id")).select_related("user").first()
    if session is None:
        raise errors.object_not_found("session", f"No session {session_id}")
    user = session.user
    if user_id is not None:
        user = User.objects.filter(pk=parse_id(user_id, "user_id")).first()
        if user is None:
            raise errors.object_not_found("user", f"No user {user_id}")
    existed = Circuit.objects.filter(session=session, app=app).exists()
    setup = start_service(user, session, app, port=port, envs=envs, arguments=arguments,
                          open_to_public=open_to_public, allowed_client_ips=allowed_client_ips, redirect=redirect)
    circuit = Circuit.objects.select_related("worker").get(pk=setup["circuit_id"])
    return {"route": route_json(circuit), "setup": setup}, not existed


def get_route(route_id) -> Circuit:
    circuit = Circuit.objects.select_related("worker").filter(pk=parse_id(route_id, "route_id")).first()
    if circuit is None:
        raise errors.object_not_found("route", f"No route {route_id}")
    return circuit


def list_routes(session_id=None, worker_id=None) -> list[dict]:
    query = Circuit.objects.select_related("worker").order_by("created_at")
    if session_id is not None:
        query = query.filter(session_id=parse_id(session_id, "session_id"))
    if worker_id is not None:
        query = query.filter(worker_id=parse_id(worker_id, "worker_id"))
    return [route_json(c) for c in query]


@audited("app-route", "delete", "route_id")
def delete_route(route_id, reason: str = "deleted") -> None:
    """``DELETE /routes/<id>``: gone with a tombstone, its worker hinted; 404 when there is none."""
    circuit = get_route(route_id)
    if not remove_circuits([circuit.pk], reason=reason):
        raise errors.object_not_found("route", f"No route {route_id}")


def delete_session_routes(session_id, reason: str = "session-ended") -> int:
    """``DELETE /routes?session_id=``: every route of the session (0 when it has none)."""
    return remove_session_circuits(parse_id(session_id, "session_id"), reason=reason)


def stale_workers(now=None) -> int:
    """How many ALIVE workers have not been heard of within the heartbeat timeout (``/health``)."""
    limit = (now or timezone.now()) - timedelta(seconds=heartbeat_timeout())
    return Worker.objects.filter(status=WorkerStatus.ALIVE, last_heartbeat__lt=limit).count()
