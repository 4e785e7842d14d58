"""Prometheus metrics of a worker (reference §12 ``appproxy_*`` names).

Each :class:`Metrics` has its own registry, so several workers can live in one
process (tests).  Per-circuit figures (labels ``circuit``, ``app``) are plain
numbers bumped by the event loop (no locks, no label lookups on the hot path)
and turned into metric families when Prometheus scrapes; they go with their
circuit.
"""
from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LABELS = ("circuit", "app")
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                    300, 3600)


class Count:
    """A lock-free counter/gauge for the event loop thread (read at scrape time)."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0

    def inc(self, amount=1):
        self.value += amount

    def dec(self, amount=1):
        self.value -= amount


class Durations:
    """A lock-free histogram with ``DURATION_BUCKETS``."""

    __slots__ = ("counts", "sum")

    def __init__(self):
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, value)] += 1
        self.sum += value


COUNTERS = {  # attribute -> (metric name, help)
    "requests": ("appproxy_requests_received_http", "HTTP requests received"),
    "responses": ("appproxy_responses_sent_http", "HTTP responses sent to clients"),
    "upstream_requests": ("appproxy_upstream_request_sent_http", "HTTP requests sent to apps"),
    "upstream_responses": ("appproxy_upstream_response_received_http", "HTTP responses received from apps"),
    "request_bytes": ("appproxy_request_body_size_http", "Request body bytes relayed"),
    "response_bytes": ("appproxy_response_body_size_http", "Response body bytes relayed"),
    "ws_established": ("appproxy_connections_established_ws", "websocket connections established"),
    "ws_closed": ("appproxy_connections_closed_ws", "websocket connections closed"),
    "ws_traffic": ("appproxy_connection_total_traffics_ws", "Bytes relayed over websocket connections"),
    "tcp_established": ("appproxy_connections_established_tcp", "raw TCP connections established"),
    "tcp_closed": ("appproxy_connections_closed_tcp", "raw TCP connections closed"),
    "tcp_traffic": ("appproxy_connection_total_traffics_tcp", "Bytes relayed over raw TCP connections"),
}
GAUGES = {
    "pending": ("appproxy_pending_requests_http", "HTTP requests in flight"),
    "ws_pending": ("appproxy_pending_connections_ws", "websocket connections open"),
    "tcp_pending": ("appproxy_pending_connections_tcp", "raw TCP connections open"),
}
HISTOGRAMS = {
    "duration": ("appproxy_proxy_request_iteration_duration_http", "Seconds from request head to response end"),
    "ws_duration": ("appproxy_proxy_request_iteration_duration_ws", "Seconds a websocket connection lasted"),
    "tcp_duration": ("appproxy_proxy_request_iteration_duration_tcp", "Seconds a raw TCP connection lasted"),
}


class CircuitMetrics:
    """The figures of one circuit: plain numbers bumped on the hot path, exported at scrape time."""

    __slots__ = tuple(COUNTERS) + tuple(GAUGES) + tuple(HISTOGRAMS)

    def __init__(self):
        for name in (*COUNTERS, *GAUGES):
            setattr(self, name, Count())
        for name in HISTOGRAMS:
            setattr(self, name, Durations())


class _CircuitCollector:
    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def collect(self):
        live = list(self.metrics.circuits.items())
        for attr, (name, text) in COUNTERS.items():
            family = CounterMetricFamily(name, text, labels=LABELS)
            for (cid, app), m in live:
                family.add_metric([cid, app], getattr(m, attr).value)
            yield family
        for attr, (name, text) in GAUGES.items():
            family = GaugeMetricFamily(name, text, labels=LABELS)
            for (cid, app), m in live:
                family.add_metric([cid, app], getattr(m, attr).value)
            yield family
        for attr, (name, text) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, text, labels=LABELS)
            for (cid, app), m in live:
                hist = getattr(m, attr)
                cumulative, buckets = 0, []
                for bound, count in zip([*map(str, DURATION_BUCKETS), "+Inf"], hist.counts):
                    cumulative += count
                    buckets.append((bound, cumulative))
                family.add_metric([cid, app], buckets, hist.sum)
            yield family


STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


class _InferenceCollector:
    """``appproxy_inference_*``: per endpoint (and route) figures of the inference circuits,
    read from their ``Endpoint`` states (``appproxy.worker.inference``) at scrape time."""

    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def collect(self):
        endpoints = list(self.metrics.endpoints.values())
        requests = CounterMetricFamily("appproxy_inference_requests", "Requests answered per endpoint, route and "
                                       "status class (route '': the worker's own answer)",
                                       labels=("endpoint", "route", "status_class"))
        errors = CounterMetricFamily("appproxy_inference_errors", "5xx answers and failed exchanges",
                                     labels=("endpoint", "route"))
        durations = HistogramMetricFamily("appproxy_inference_request_duration_seconds",
                                          "Seconds from request head to response end", labels=("endpoint",))
        inflight = GaugeMetricFamily("appproxy_inference_inflight", "Requests in flight", labels=("endpoint",))
        healthy = GaugeMetricFamily("appproxy_inference_healthy_routes", "Routes the health checks find healthy",
                                    labels=("endpoint",))
        for e in endpoints:
            unrouted_errors = e.errors - sum(r.errors for r in e.routes.values())
            for index, count in enumerate(e.unrouted):
                if count:
                    requests.add_metric([e.endpoint_id, "", STATUS_CLASSES[index]], count)
            errors.add_metric([e.endpoint_id, ""], max(0, unrouted_errors))
            for route in list(e.routes.values()):
                for index, count in enumerate(route.by_class):
                    if count or index == 2:
                        requests.add_metric([e.endpoint_id, route.id, STATUS_CLASSES[index]], count)
                errors.add_metric([e.endpoint_id, route.id], route.errors)
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, DURATION_BUCKETS), "+Inf"], e.latency.counts):
                cumulative += count
                buckets.append((bound, cumulative))
            durations.add_metric([e.endpoint_id], buckets, e.latency.sum)
            inflight.add_metric([e.endpoint_id], e.inflight)
            healthy.add_metric([e.endpoint_id], e.healthy_routes)
        yield from (requests, errors, durations, inflight, healthy)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.circuits: dict[tuple[str, str], CircuitMetrics] = {}
        self.endpoints: dict = {}  # circuit id -> inference Endpoint (the worker's Inference.endpoints)
        r.register(_CircuitCollector(self))
        r.register(_InferenceCollector(self))
        self.circuits_created = Counter("appproxy_circuits_created", "Circuits added to this worker's table",
                                        registry=r)
        self.alive_circuits = Gauge("appproxy_alive_circuits", "Circuits in this worker's table", registry=r)
        self.refused = Counter("appproxy_requests_refused", "Requests refused by the worker", ("reason",),
                               registry=r)

    def for_circuit(self, circuit) -> CircuitMetrics:
        if circuit.metrics is None:
            circuit.metrics = self.circuits.setdefault((circuit.id, circuit.app), CircuitMetrics())
        return circuit.metrics

    def forget(self, circuit) -> None:
        self.circuits.pop((circuit.id, circuit.app), None)
        circuit.metrics = None

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
