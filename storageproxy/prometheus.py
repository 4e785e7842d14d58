"""The storage proxy's own Prometheus metrics, served at ``/metrics`` on a listener of their own
(``--metrics-listen``, default ``127.0.0.1:6023``; no authentication, so keep it on a private
address).

* ``backendai_storage_volume_stats_observe_total{volume,result}`` and
  ``backendai_storage_volume_stats_observe_duration_seconds{volume}``: each measurement of a volume
  (``statvfs`` and, on a block device, its I/O rates), by the periodic observer
  (``--metrics-interval``) or a ``GET /volume/performance-metric``.
* ``backendai_storage_volume_metric_last_updated_timestamp{volume}`` and the last figures of each
  volume: ``backendai_storage_volume_{capacity,used,available}_bytes``,
  ``backendai_storage_volume_inodes_{total,used}`` and, where the kernel keeps I/O counters,
  ``backendai_storage_volume_{iops,throughput_bytes,latency_usec}_{read,write}``.
* ``backendai_storage_api_request_count{api,method,endpoint,status_code}`` and
  ``backendai_storage_api_request_duration_sec{api,method,endpoint}``: every request of the manager
  and client APIs, ``endpoint`` being the route pattern (``/folder/file/upload``) or ``unmatched``,
  never the raw path.

Each :class:`ProxyMetrics` has its own registry (a test may run several proxies in one process)."""
from __future__ import annotations

import logging
import threading
import time

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("storageproxy")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# a volume's figure (storageproxy.metrics.measure_volume) -> the family that exports it
VOLUME_FIGURES = {
    "capacity_bytes": "backendai_storage_volume_capacity_bytes",
    "used_bytes": "backendai_storage_volume_used_bytes",
    "available_bytes": "backendai_storage_volume_available_bytes",
    "inodes_total": "backendai_storage_volume_inodes_total",
    "inodes_used": "backendai_storage_volume_inodes_used",
    "iops_read": "backendai_storage_volume_iops_read",
    "iops_write": "backendai_storage_volume_iops_write",
    "io_bytes_read": "backendai_storage_volume_throughput_bytes_read",
    "io_bytes_write": "backendai_storage_volume_throughput_bytes_write",
    "io_usec_read": "backendai_storage_volume_latency_usec_read",
    "io_usec_write": "backendai_storage_volume_latency_usec_write",
}
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _VolumeFigures:
    """The last measurement of each volume, read at scrape time."""

    def __init__(self, metrics: ProxyMetrics):
        self.metrics = metrics

    def collect(self):
        with self.metrics.lock:
            last = dict(self.metrics.volumes)
        updated = GaugeMetricFamily("backendai_storage_volume_metric_last_updated_timestamp",
                                    "When the volume was last measured (Unix time)", labels=["volume"])
        families = {key: GaugeMetricFamily(name, f"The volume's {key.replace('_', ' ')} at its last measurement",
                                           labels=["volume"]) for key, name in VOLUME_FIGURES.items()}
        for volume, (when, figures) in sorted(last.items()):
            updated.add_metric([volume], when)
            for key, value in figures.items():
                if key in families:
                    families[key].add_metric([volume], value)
        yield updated
        yield from families.values()


class ProxyMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.lock = threading.Lock()
        self.volumes: dict[str, tuple[float, dict[str, float]]] = {}
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.observe_count = Counter("backendai_storage_volume_stats_observe",
                                     "Measurements of a volume (statvfs and I/O rates)", ("volume", "result"),
                                     registry=r)
        self.observe_duration = Histogram("backendai_storage_volume_stats_observe_duration_seconds",
                                          "Seconds a measurement of a volume took", ("volume",), registry=r,
                                          buckets=_DURATION_BUCKETS)
        self.request_count = Counter("backendai_storage_api_request_count", "Requests of the proxy's APIs",
                                     ("api", "method", "endpoint", "status_code"), registry=r)
        self.request_duration = Histogram("backendai_storage_api_request_duration_sec",
                                          "Seconds a request of the proxy's APIs took", ("api", "method", "endpoint"),
                                          registry=r, buckets=_DURATION_BUCKETS)
        r.register(_VolumeFigures(self))

    def measured(self, volume: str, seconds: float, figures: dict | None) -> None:
        """Record one measurement of ``volume`` (``figures`` None: it failed).  Never raises."""
        try:
            self.observe_count.labels(volume, "success" if figures is not None else "failure").inc()
            self.observe_duration.labels(volume).observe(seconds)
            if figures is not None:
                clean = {k: float(v) for k, v in figures.items() if isinstance(v, (int, float))}
                with self.lock:
                    self.volumes[volume] = (time.time(), clean)
        except Exception:  # a metrics failure must not fail the measurement
            log.debug("recording the measurement of %s failed", volume, exc_info=True)

    def request_done(self, request: web.Request, api: str, status: int, seconds: float) -> None:
        """Count one request of ``api`` by its route pattern.  Never raises."""
        try:
            method = request.method if request.method in METHODS else "other"
            endpoint = route_pattern(request)
            self.request_count.labels(api, method, endpoint, str(status)).inc()
            self.request_duration.labels(api, method, endpoint).observe(seconds)
        except Exception:  # nor a request
            log.debug("recording a request failed", exc_info=True)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_pattern(request: web.Request) -> str:
    """The pattern of the route that matched (``/folder/file/upload``), or ``unmatched``."""
    match_info = getattr(request, "match_info", None)
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None or getattr(match_info, "http_exception", None) is not None:
        return "unmatched"
    return resource.canonical[:128]


def build_metrics_app(metrics: ProxyMetrics) -> web.Application:
    """``GET``/``HEAD /metrics`` and nothing else: other paths 404, other methods 405."""
    async def serve(request: web.Request) -> web.Response:
        try:
            body = metrics.exposition()
        except Exception:  # a broken scrape must not end the listener
            log.exception("the metrics scrape failed")
            return web.Response(status=503, text="metrics are unavailable right now\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=1024)
    app.router.add_get("/metrics", serve)
    return app
