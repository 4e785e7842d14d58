"""The periodic convergence pass: circuits follow their sessions and kernels, idle
circuits go, old tombstones and expired setup links are forgotten."""
from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from appproxy.models import AppMode, Circuit, CircuitTombstone, SetupToken, Worker
from appproxy.services.circuits import LIVE_SESSION, remove_circuits, service_target, update_circuit
from appproxy.services.inference import prune_samples, retarget_endpoints
from appproxy.services.timeouts import idle_timeout, tombstone_retention
from backendai.api import errors


def ended_session_circuits(circuits):
    """The interactive circuits among ``circuits`` whose session ended (inference circuits have
    no session: their endpoint removes them)."""
    return circuits.filter(app_mode=AppMode.INTERACTIVE).exclude(session__status__in=LIVE_SESSION)


def retarget_circuits() -> int:
    """Follow kernels whose service ports moved (a restart republished them): one revision each."""
    changed = 0
    query = (Circuit.objects.filter(app_mode=AppMode.INTERACTIVE, session__status__in=LIVE_SESSION,
                                    container_port__isnull=False,
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
    """Non-public interactive circuits unused for longer than the timeout (0 disables) are removed
    (an endpoint's circuit lives as long as the endpoint)."""
    timeout = idle_timeout() if timeout_seconds is None else timeout_seconds
    if not timeout:
        return 0
    now = now or timezone.now()
    idle = (Circuit.objects.filter(open_to_public=False, app_mode=AppMode.INTERACTIVE)
            .annotate(seen=Coalesce("last_access", "created_at"))
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
    expired setup links; inference circuits follow their replicas' ports, and old samples go."""
    return {
        "ended": remove_circuits(ended_session_circuits(Circuit.objects.all()), reason="session-ended"),
        "retargeted": retarget_circuits(),
        "endpoints": retarget_endpoints(),
        "samples": prune_samples(now=now),
        "idle": collect_idle_circuits(now=now),
        "tombstones": prune_tombstones(now=now),
        "setup_tokens": prune_setup_tokens(now=now),
    }
