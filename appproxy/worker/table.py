"""The worker's in-memory copy of its circuit table, kept in step by revision."""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from appproxy.tokens import permit_cookie_name

log = logging.getLogger(__name__)

PERMIT_CACHE_SIZE = 256


@dataclass(eq=False)
class Circuit:
    id: str
    app: str
    protocol: str
    session_id: str
    owner_id: str
    target_host: str
    target_port: int
    port: int | None
    subdomain: str | None
    open_to_public: bool
    allowed_client_ips: tuple[str, ...]
    granted_users: frozenset[str]
    revision: int
    networks: tuple = ()
    cookie_name: bytes = b""
    last_access: float = 0.0
    # verified permit values -> (user, expires): HMAC once per cookie value, not per request
    permits: dict = field(default_factory=dict)
    # live websocket/TCP relays (writers), closed when the circuit goes away
    relays: set = field(default_factory=set)
    metrics: object = None
    # inference circuits (app_mode "inference"): the endpoint, its routes with a target, the
    # health check, the secret API tokens are signed with; ``inference`` is the worker's state
    # (appproxy.worker.inference.Endpoint), kept across table updates
    app_mode: str = "interactive"
    endpoint_id: str = ""
    routes: tuple = ()
    health_check: dict = field(default_factory=dict)
    token_secret: str = ""
    inference: object = None

    @classmethod
    def from_json(cls, data: dict) -> Circuit:
        networks = []
        for value in data.get("allowed_client_ips") or []:
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                log.warning("circuit %s: ignoring bad allowed_client_ips entry %r", data.get("id"), value)
        return cls(
            id=str(data["id"]), app=str(data["app"]), protocol=str(data["protocol"]),
            session_id=str(data.get("session_id") or ""), owner_id=str(data["owner_id"]),
            target_host=str(data["target_host"]), target_port=int(data["target_port"]),
            port=int(data["port"]) if data.get("port") else None, subdomain=data.get("subdomain") or None,
            open_to_public=bool(data.get("open_to_public")),
            allowed_client_ips=tuple(data.get("allowed_client_ips") or ()),
            granted_users=frozenset(str(u) for u in data.get("granted_users") or ()),
            revision=int(data.get("revision") or 0), networks=tuple(networks),
            cookie_name=permit_cookie_name(str(data["id"])).encode(),
            **(cls._inference_fields(data) if data.get("app_mode") == "inference" else {}),
        )

    @staticmethod
    def _inference_fields(data: dict) -> dict:
        routes = []
        for item in data.get("routes") or ():
            if item.get("host") and item.get("port"):
                routes.append({"route_id": str(item["route_id"]), "session_id": str(item.get("session_id") or ""),
                               "host": str(item["host"]), "port": int(item["port"]),
                               "traffic_ratio": float(item.get("traffic_ratio", 1.0)),
                               "active": bool(item.get("active", True))})
        return {"app_mode": "inference", "endpoint_id": str(data["endpoint_id"]), "routes": tuple(routes),
                "health_check": dict(data.get("health_check") or {}),
                "token_secret": str(data.get("token_secret") or "")}

    @property
    def is_inference(self) -> bool:
        return self.app_mode == "inference"

    def same_route(self, other: Circuit) -> bool:
        return (self.protocol, self.target_host, self.target_port, self.port, self.subdomain) == (
            other.protocol, other.target_host, other.target_port, other.port, other.subdomain)

    def admits_user(self, user: str) -> bool:
        return user == self.owner_id or user in self.granted_users

    def admits_address(self, address: str) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def remember_permit(self, value: bytes, user: str, expires: float) -> None:
        if len(self.permits) >= PERMIT_CACHE_SIZE:
            self.permits.clear()
        self.permits[value] = (user, expires)


@dataclass
class Changes:
    added: list[Circuit] = field(default_factory=list)
    removed: list[Circuit] = field(default_factory=list)
    changed: list[tuple[Circuit, Circuit]] = field(default_factory=list)  # (old, new)

    def __bool__(self):
        return bool(self.added or self.removed or self.changed)


class CircuitTable:
    def __init__(self):
        self.circuits: dict[str, Circuit] = {}
        self.by_port: dict[int, Circuit] = {}
        self.by_subdomain: dict[str, Circuit] = {}
        self.revision: int | None = None

    def __len__(self):
        return len(self.circuits)

    def get(self, circuit_id: str) -> Circuit | None:
        return self.circuits.get(circuit_id)

    def apply(self, answer: dict) -> Changes:
        """Apply a ``GET .../circuits`` answer: a full table replaces everything;
        an incremental one removes, then upserts."""
        changes = Changes()
        incoming = {}
        for item in answer.get("circuits") or []:
            try:
                circuit = Circuit.from_json(item)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("ignoring malformed circuit %r: %s", item, exc)
                continue
            incoming[circuit.id] = circuit
        if answer.get("full"):
            removed_ids = [cid for cid in self.circuits if cid not in incoming]
        else:
            removed_ids = [cid for cid in answer.get("removed") or [] if cid in self.circuits and cid not in incoming]
        for cid in removed_ids:
            changes.removed.append(self.circuits.pop(cid))
        for cid, circuit in incoming.items():
            old = self.circuits.get(cid)
            if old is None:
                changes.added.append(circuit)
            elif old.revision != circuit.revision:
                circuit.last_access = old.last_access
                if old.open_to_public == circuit.open_to_public and old.granted_users == circuit.granted_users:
                    circuit.permits = old.permits
                circuit.metrics = old.metrics
                circuit.inference = old.inference
                if old.same_route(circuit):
                    circuit.relays = old.relays
                changes.changed.append((old, circuit))
            else:
                continue
            self.circuits[cid] = circuit
        self.revision = int(answer.get("revision") or 0)
        if changes:
            self._reindex()
        return changes

    def _reindex(self) -> None:
        self.by_port = {c.port: c for c in self.circuits.values() if c.port}
        self.by_subdomain = {c.subdomain: c for c in self.circuits.values() if c.subdomain}
