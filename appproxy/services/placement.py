"""Where circuits go: choosing a worker, and a port or subdomain on it (moving circuits
within a worker whose range or mode changed)."""
from __future__ import annotations

import logging
import re

from django.db.models import Count, Q

from appproxy.models import Circuit, CircuitTombstone, FrontendMode, Protocol, Worker, WorkerStatus
from appproxy.services.exceptions import WorkerNotAvailable
from appproxy.services.revisions import next_revision, recompute_occupancy
from appproxy.services.worker_hints import hint_worker

log = logging.getLogger(__name__)


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


def _subdomain(worker: Worker, owner_id, app: str, circuit_id) -> str:
    """``<app>-<12 hex of the session (or, for inference circuits, the endpoint)>``."""
    base = re.sub(r"[^a-z0-9-]+", "-", app.lower()).strip("-")[:40] or "app"
    candidate = f"{base}-{(owner_id or circuit_id).hex[:12]}"
    if Circuit.objects.filter(worker=worker, subdomain=candidate).exclude(pk=circuit_id).exists():
        candidate = f"{base}-{circuit_id.hex[:16]}"
    return candidate


def slot_for(worker: Worker, circuit: Circuit, protocol: str) -> dict:
    if worker.frontend_mode == FrontendMode.WILDCARD:
        if protocol != Protocol.HTTP:
            raise WorkerNotAvailable(f"Worker {worker.authority} carries only HTTP apps")
        return {"port": None, "subdomain": _subdomain(worker, circuit.session_id or circuit.endpoint_id, circuit.app,
                                                      circuit.pk)}
    port = allocate_port(worker)
    if port is None:
        raise WorkerNotAvailable(f"Worker {worker.authority} has no free port")
    return {"port": port, "subdomain": ""}


def relocate(worker: Worker, circuits: list[Circuit], reason: str) -> None:
    """Give circuits a new slot on the same worker (range or mode changed, port unusable);
    circuits that no longer fit are removed.  Runs inside the caller's transaction."""
    if not circuits:
        return
    revision = next_revision(worker.pk)
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
            slot = {"port": None, "subdomain": _subdomain(worker, circuit.session_id or circuit.endpoint_id,
                                                          circuit.app, circuit.pk)}
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
