"""Circuits: their targets in a session's kernel, and creating, changing and removing
them.  Every change takes the worker's next revision; removals leave tombstones."""
from __future__ import annotations

import ipaddress
import logging

from django.db import transaction
from django.utils import timezone

from appproxy.models import Circuit, CircuitTombstone, Protocol, Worker
from appproxy.services.exceptions import AppNotReady
from appproxy.services.placement import pick_worker, slot_for
from appproxy.services.revisions import next_revision, recompute_occupancy
from appproxy.services.worker_hints import hint_worker
from backendai.api import errors
from sessions import lifecycle
from sessions.models import Kernel, Session

log = logging.getLogger(__name__)


# Sessions whose circuits stay; any other status removes them.
LIVE_SESSION = lifecycle.LIVE_SESSION


# Service-port protocols and the circuit protocol carrying them (reference §8).
PROTOCOL_MAP = {"http": Protocol.HTTP, "preopen": Protocol.HTTP, "tcp": Protocol.TCP, "vnc": Protocol.TCP,
                "rdp": Protocol.TCP}


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
    slot = slot_for(worker, circuit, protocol)
    circuit.port, circuit.subdomain = slot["port"], slot["subdomain"]
    circuit.revision = next_revision(worker.pk)
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
        CircuitTombstone.objects.create(worker=old, circuit_id=current.pk, revision=next_revision(old.pk),
                                        reason="moved")
        current.worker = target
        slot = slot_for(target, current, current.protocol)
        fields.update(worker=target, **slot)
        hint_worker(old.pk)
        log.info("circuit %s moved from worker %s to %s", current.pk, old.authority, target.authority)
    if not fields:
        return current
    fields["revision"] = next_revision(fields.get("worker", current.worker).pk)
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
            revision = next_revision(worker_id)
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
