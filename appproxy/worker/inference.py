"""Inference circuits on the worker: a model-serving endpoint's routes (one per replica),
their health as the worker's own checks find it, the weighted choice of a route per
request, API tokens, and the counters reported to the coordinator.

Hot path: ``Endpoint.pick`` is one ``random()`` and one ``bisect`` over a list rebuilt only
when a route changes (added, removed, drained, re-weighted, flipped); counters are plain ints.
Health state is keyed by route id and survives circuit-table updates; each route has one
checker task, stopped when the route or the circuit goes.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from bisect import bisect_right
from typing import Callable

from appproxy import tokens

from .metrics import DURATION_BUCKETS, Durations

log = logging.getLogger("appproxy.worker.inference")

UNKNOWN, HEALTHY, UNHEALTHY = "unknown", "healthy", "unhealthy"
TOKEN_CACHE_SIZE = 1024
CHECK_HEAD_LIMIT = 16 * 1024
DEFAULT_CHECK = {"path": "/health", "interval": 10.0, "timeout": 5.0, "threshold": 3, "initial_delay": 0.0,
                 "expected_status": 200}


class Route:
    """One replica: its target, weight, drain flag, health and counters."""

    __slots__ = ("id", "session_id", "host", "port", "key", "ratio", "active", "status", "failures", "changed_at",
                 "checked_at", "last_error", "appeared", "requests", "errors", "by_class", "inflight", "task")

    def __init__(self, data: dict):
        self.id = str(data["route_id"])
        self.appeared = time.monotonic()
        self.status = UNKNOWN
        self.failures = 0
        self.changed_at: float | None = None
        self.checked_at: float | None = None
        self.last_error = ""
        self.requests = self.errors = self.inflight = 0
        self.by_class = [0, 0, 0, 0, 0, 0]  # index: status // 100 (0: no answer)
        self.task: asyncio.Task | None = None
        self.update(data)

    def update(self, data: dict) -> bool:
        """Take the coordinator's view of the route; True when the target moved."""
        host, port = str(data["host"]), int(data["port"])
        moved = getattr(self, "key", None) not in (None, (host, port))
        self.session_id = str(data.get("session_id") or "")
        self.host, self.port, self.key = host, port, (host, port)
        self.ratio = max(0.0, float(data.get("traffic_ratio", 1.0)))
        self.active = bool(data.get("active", True))
        return moved

    def report(self) -> dict:
        return {"status": self.status, "changed_at": self.changed_at, "checked_at": self.checked_at,
                "failures": self.failures, "last_error": self.last_error}


class Endpoint:
    """The inference state of one circuit (``circuit.inference``)."""

    def __init__(self, circuit_id: str, on_flip: Callable[[Endpoint, Route], None]):
        self.circuit_id = circuit_id
        self.endpoint_id = ""
        self.on_flip = on_flip
        self.routes: dict[str, Route] = {}
        self.check = dict(DEFAULT_CHECK)
        self.token_secret = ""
        self.open_to_public = False
        self.requests = self.errors = self.inflight = 0
        self.unrouted = [0, 0, 0, 0, 0, 0]  # answers no route gave (503 no-healthy-replica), by class
        self.latency = Durations()
        self.tokens: dict[bytes, float] = {}  # verified token -> expiry: HMAC once per token value
        self._pool: list[Route] = []
        self._weights: list[float] = []
        self._total = 0.0
        self.stopped = False

    # --- configuration ------------------------------------------------------------------------

    def configure(self, circuit) -> tuple[list[Route], list[Route]]:
        """Take the circuit's routes and settings; ``(added, removed)`` routes (the caller starts and
        stops their checkers).  A route that stays keeps its health."""
        if circuit.token_secret != self.token_secret or circuit.endpoint_id != self.endpoint_id:
            self.tokens.clear()
        self.endpoint_id = circuit.endpoint_id
        self.token_secret = circuit.token_secret
        self.open_to_public = circuit.open_to_public
        check = {**DEFAULT_CHECK, **(circuit.health_check or {})}
        self.check = {"path": str(check["path"]), "interval": max(0.05, float(check["interval"])),
                      "timeout": max(0.05, float(check["timeout"])), "threshold": max(1, int(check["threshold"])),
                      "initial_delay": max(0.0, float(check["initial_delay"])),
                      "expected_status": int(check["expected_status"])}
        added, seen = [], set()
        for data in circuit.routes:
            route_id = str(data["route_id"])
            seen.add(route_id)
            route = self.routes.get(route_id)
            if route is None:
                route = self.routes[route_id] = Route(data)
                added.append(route)
            elif route.update(data) and route.task is not None:
                route.task.cancel()  # the replica moved: check the new target now
                route.task = None
                added.append(route)
        removed = [self.routes.pop(rid) for rid in list(self.routes) if rid not in seen]
        self.rebuild()
        return added, removed

    def rebuild(self) -> None:
        """The routes that take new requests: active, weighted above 0, healthy."""
        pool, weights, total = [], [], 0.0
        for route in self.routes.values():
            if route.active and route.ratio > 0 and route.status == HEALTHY:
                total += route.ratio
                pool.append(route)
                weights.append(total)
        self._pool, self._weights, self._total = pool, weights, total

    @property
    def healthy_routes(self) -> int:
        return sum(1 for r in self.routes.values() if r.status == HEALTHY)

    # --- the hot path -------------------------------------------------------------------------

    def pick(self) -> Route | None:
        pool = self._pool
        if not pool:
            return None
        if len(pool) == 1:
            return pool[0]
        index = bisect_right(self._weights, random.random() * self._total)
        return pool[min(index, len(pool) - 1)]

    def admits(self, authorization: bytes, now: float) -> str | None:
        """Why the ``Authorization`` value is refused (None: admitted)."""
        if self.open_to_public:
            return None
        if not authorization:
            return "This endpoint needs an API token: Authorization: BackendAI <token> (or Bearer <token>)."
        expires = self.tokens.get(authorization)
        if expires is None:
            scheme, _, value = authorization.partition(b" ")
            if scheme.lower() not in (b"backendai", b"bearer") or not value.strip():
                return "Use Authorization: BackendAI <token> (or Bearer <token>)."
            try:
                claims = tokens.verify_endpoint_token(self.token_secret, self.endpoint_id,
                                                      value.strip().decode("ascii", "replace"), now)
            except tokens.TokenError as exc:
                return f"The API token is not valid for this endpoint ({exc})."
            if len(self.tokens) >= TOKEN_CACHE_SIZE:
                self.tokens.clear()
            expires = self.tokens[authorization] = claims.expires
        if expires < now:
            self.tokens.pop(authorization, None)
            return "The API token is not valid for this endpoint (expired)."
        return None

    def count(self, route: Route | None, status: int) -> None:
        """One answer with ``status`` (0: none, the client went away) from ``route`` (None: the worker's own)."""
        index = status // 100 if 100 <= status < 600 else 0
        error = status >= 500
        self.requests += 1
        if error:
            self.errors += 1
        if route is None:
            self.unrouted[index] += 1
        else:
            route.requests += 1
            route.by_class[index] += 1
            if error:
                route.errors += 1

    # --- health -------------------------------------------------------------------------------

    def passed(self, route: Route, now: float) -> None:
        route.checked_at = now
        route.failures = 0
        route.last_error = ""
        if route.status != HEALTHY:
            self._flip(route, HEALTHY, now)

    def failed(self, route: Route, error: str, now: float, at_once: bool = False) -> None:
        """A failed check (or, ``at_once``, a connect failure while proxying: unhealthy now)."""
        route.checked_at = now
        route.last_error = error[:500]
        if not at_once and time.monotonic() - route.appeared < self.check["initial_delay"]:
            return  # still starting: failures do not count yet
        route.failures += 1
        if route.status != UNHEALTHY and (at_once or route.failures >= self.check["threshold"]):
            self._flip(route, UNHEALTHY, now)

    def _flip(self, route: Route, status: str, now: float) -> None:
        previous = route.status
        route.status = status
        route.changed_at = now
        self.rebuild()
        log.info("endpoint %s: route %s (session %s, %s:%s) is %s (was %s)%s", self.endpoint_id, route.id,
                 route.session_id, route.host, route.port, status, previous,
                 f": {route.last_error}" if route.last_error else "")
        if not self.stopped:
            self.on_flip(self, route)

    def health_report(self) -> dict:
        return {rid: route.report() for rid, route in self.routes.items()}

    def counters(self) -> dict:
        cumulative, buckets = 0, {}
        for bound, count in zip([*map(str, DURATION_BUCKETS), "+Inf"], self.latency.counts):
            cumulative += count
            buckets[bound] = cumulative
        return {"requests_total": self.requests, "errors_total": self.errors, "inflight": self.inflight,
                "latency_sum": self.latency.sum, "latency_count": cumulative, "latency_buckets": buckets,
                "healthy_routes": self.healthy_routes,
                "routes": {rid: {"requests": r.requests, "errors": r.errors} for rid, r in self.routes.items()}}


async def check_once(route: Route, check: dict) -> str | None:
    """One health check: ``GET path`` on the route's target; why it failed (None: it passed)."""
    writer = None
    try:
        async with asyncio.timeout(check["timeout"]):
            reader, writer = await asyncio.open_connection(route.host, route.port, limit=CHECK_HEAD_LIMIT)
            writer.write(f"GET {check['path']} HTTP/1.1\r\nHost: {route.host}:{route.port}\r\n"
                         "User-Agent: appproxy-health-check\r\nConnection: close\r\n\r\n".encode())
            line = await reader.readline()
    except TimeoutError:
        return f"no answer within {check['timeout']:g} s"
    except (OSError, asyncio.LimitOverrunError, ValueError) as exc:
        return f"{exc.__class__.__name__}: {exc}"[:200]
    finally:
        if writer is not None:
            writer.close()
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return "not an HTTP answer"
    status = int(parts[1])
    if status != check["expected_status"]:
        return f"HTTP {status} (expected {check['expected_status']})"
    return None


async def check_forever(endpoint: Endpoint, route: Route) -> None:
    """The route's checker: at once, then every ``interval``, until cancelled."""
    while True:
        check = endpoint.check
        started = time.monotonic()
        problem = await check_once(route, check)
        now = time.time()
        if problem is None:
            endpoint.passed(route, now)
        else:
            endpoint.failed(route, problem, now)
        await asyncio.sleep(max(0.0, check["interval"] - (time.monotonic() - started)))


class Inference:
    """The worker's inference circuits: their ``Endpoint`` states and checker tasks."""

    def __init__(self, on_flip: Callable[[Endpoint, Route], None]):
        self.on_flip = on_flip
        self.endpoints: dict[str, Endpoint] = {}  # circuit id -> state

    def attach(self, circuit) -> None:
        """A new or changed inference circuit: keep its state, take its routes, start/stop checkers."""
        endpoint = circuit.inference or self.endpoints.get(circuit.id)
        if endpoint is None:
            endpoint = Endpoint(circuit.id, self.on_flip)
        circuit.inference = self.endpoints[circuit.id] = endpoint
        added, removed = endpoint.configure(circuit)
        for route in removed:
            _stop(route)
        for route in added:
            route.task = asyncio.get_running_loop().create_task(check_forever(endpoint, route),
                                                                name=f"health-{route.id}")

    def detach(self, circuit) -> None:
        endpoint = self.endpoints.pop(circuit.id, None)
        if endpoint is None:
            return
        endpoint.stopped = True
        for route in endpoint.routes.values():
            _stop(route)

    def stop(self) -> None:
        for endpoint in list(self.endpoints.values()):
            endpoint.stopped = True
            for route in endpoint.routes.values():
                _stop(route)
        self.endpoints.clear()


def _stop(route: Route) -> None:
    if route.task is not None:
        route.task.cancel()
        route.task = None
