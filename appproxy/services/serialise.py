"""What workers and users are told about workers and circuits: the JSON a worker
syncs its table from, and the URL users reach a circuit at."""
from __future__ import annotations

from appproxy.models import AppMode, Circuit, FrontendMode, Protocol, Worker


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
    """What the worker carrying the circuit gets.  Inference circuits add their endpoint, the
    routes that have a target, the health check and the secret their API tokens are signed with."""
    data = {
        "id": str(circuit.pk), "app": circuit.app, "protocol": circuit.protocol, "app_mode": circuit.app_mode,
        "session_id": str(circuit.session_id) if circuit.session_id else None,
        "kernel_id": str(circuit.kernel_id) if circuit.kernel_id else None,
        "owner_id": str(circuit.owner_id), "granted_users": [str(u) for u in circuit.granted_users or []],
        "target_host": circuit.target_host, "target_port": circuit.target_port,
        "port": circuit.port, "subdomain": circuit.subdomain or None,
        "open_to_public": circuit.open_to_public, "allowed_client_ips": list(circuit.allowed_client_ips or []),
        "revision": circuit.revision,
    }
    if circuit.app_mode == AppMode.INFERENCE:
        data.update(endpoint_id=str(circuit.endpoint_id), health_check=dict(circuit.health_check or {}),
                    token_secret=circuit.token_secret, routes=[
                        {"route_id": r["route_id"], "session_id": r["session_id"], "host": r["host"],
                         "port": r["port"], "traffic_ratio": r["traffic_ratio"], "active": r["active"]}
                        for r in circuit.routes or [] if r.get("host") and r.get("port")])
    return data


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
