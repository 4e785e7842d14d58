"""The manager's Prometheus metrics and where they are served.

What is served: request metrics (django-prometheus), the scheduler's counters and histograms
and every other ``prometheus_client`` metric recorded in whichever process did the work
(shared through ``PROMETHEUS_MULTIPROC_DIR`` when set), plus gauges read from the database at
scrape time (sessions and agents by status, background tasks by name and status;
``serving.metrics``: model-serving endpoints' replicas, routes and scaling decisions).

Where: the internal metrics listener (``manage.py serve_metrics``, ``METRICS_LISTEN``, default
``127.0.0.1:18080``) answers ``GET /metrics`` and ``GET /metrics/service_discovery`` (Prometheus'
HTTP service discovery: this listener, every live agent's, app-proxy worker's and storage proxy's
``/metrics``, from the database).  The public API port serves ``/metrics`` only with
``METRICS_PUBLIC=true`` (``docs/observability.md``)."""
from __future__ import annotations

import json
import logging
import os
import socket

from django.conf import settings
from django.db import close_old_connections, connections
from django.db.models import Count, Min
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from agents.models import Agent, AgentStatus
from appproxy.models import Worker, WorkerStatus
from backendai import telemetry
from backendai.metrics_http import MetricsHTTPServer
from backendai.models import BackgroundTask
from serving.metrics import EndpointCollector
from sessions.models import Session
from vfolders.models import ProxyStatus, StorageProxy

log = logging.getLogger(__name__)

SD_CONTENT_TYPE = "application/json"
WAITING_STATUSES = ("PENDING", "SCHEDULED", "PULLING", "PREPARING")  # before RUNNING: where sessions get stuck


class DatabaseCollector:
    """Counts that are truths in the database, read when Prometheus scrapes."""

    def collect(self):
        sessions = GaugeMetricFamily("backendai_session_count", "Sessions by status", labels=["status"])
        for row in Session.objects.values("status").annotate(n=Count("id")).order_by():
            sessions.add_metric([row["status"]], row["n"])
        yield sessions
        # how long the longest-waiting session has been in each not-yet-running status (the "stuck" alerts)
        oldest = GaugeMetricFamily("backendai_session_oldest_status_age_seconds",
                                   "Seconds the longest-waiting session has been in its status, for statuses before "
                                   "RUNNING", labels=["status"])
        now = timezone.now()
        rows = (Session.objects.filter(status__in=WAITING_STATUSES).values("status")
                .annotate(since=Min(Coalesce("status_changed", "created_at"))).order_by())
        for row in rows:
            oldest.add_metric([row["status"]], max(0.0, (now - row["since"]).total_seconds()))
        yield oldest
        agents = GaugeMetricFamily("backendai_agent_count", "Agents by status", labels=["status"])
        for row in Agent.objects.values("status").annotate(n=Count("id")).order_by():
            agents.add_metric([row["status"]], row["n"])
        yield agents
        workers = GaugeMetricFamily("backendai_appproxy_worker_count", "App proxy workers by status",
                                    labels=["status"])
        for row in Worker.objects.values("status").annotate(n=Count("id")).order_by():
            workers.add_metric([row["status"]], row["n"])
        yield workers
        proxies = GaugeMetricFamily("backendai_storage_proxy_count", "Storage proxies by status (alive, lost; "
                                    "empty: not checked yet)", labels=["status"])
        for row in StorageProxy.objects.values("status").annotate(n=Count("name")).order_by():
            proxies.add_metric([row["status"]], row["n"])
        yield proxies
        tasks = GaugeMetricFamily("backendai_bgtask_status_count", "Background tasks by name and status",
                                  labels=["name", "status"])
        for row in BackgroundTask.objects.values("name", "status").annotate(n=Count("id")).order_by():
            tasks.add_metric([row["name"], row["status"]], row["n"])
        yield tasks


def exposition() -> bytes:
    """The text Prometheus scrapes: every process's metrics (aggregated over
    ``PROMETHEUS_MULTIPROC_DIR`` when set) and the database's gauges."""
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    local = CollectorRegistry()
    if multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        # every live process's CPU and memory (on REGISTRY it is this process's own)
        local.register(telemetry.process_usage_collector(multiproc_dir))
    else:
        registry = REGISTRY
    local.register(DatabaseCollector())
    local.register(EndpointCollector())  # model serving: replicas and routes per endpoint
    return generate_latest(registry) + generate_latest(local)


def metrics_view(request):
    """``/metrics`` on the public API port: only with ``METRICS_PUBLIC=true`` (else the app's 404)."""
    if not getattr(settings, "METRICS_PUBLIC", False):
        raise Http404("metrics are served by the internal metrics listener")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


# --- service discovery ---------------------------------------------------------------------------

def _format_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def manager_target(listen: tuple[str, int]) -> str:
    """What the service discovery lists for the listener: ``METRICS_ADVERTISE``, else the address
    it listens on (a wildcard host replaced by this machine's name)."""
    advertise = getattr(settings, "METRICS_ADVERTISE", None)
    if advertise:
        return _format_target(*advertise)
    host, port = listen
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return _format_target(host, port)


def service_discovery(manager: str | None) -> list[dict]:
    """Prometheus HTTP SD groups: ``[{"targets": ["host:port"], "labels": {...}}]``: the manager's
    listener (``manager``; None: not listed), each ALIVE agent, each ALIVE app-proxy worker and each
    ALIVE storage proxy that reported a metrics address (LOST and TERMINATED ones are left out)."""
    groups: list[dict] = []
    if manager:
        groups.append({"targets": [manager], "labels": {"service": "manager", "__meta_backendai_service": "manager"}})
    agents = (Agent.objects.filter(status=AgentStatus.ALIVE).exclude(metrics_address="")
              .values_list("id", "metrics_address", "scaling_group_id", "region").order_by("id"))
    for agent_id, address, group, region in agents:
        groups.append({"targets": [address], "labels": {
            "service": "agent", "agent_id": agent_id, "__meta_backendai_service": "agent",
            "__meta_backendai_agent_id": agent_id, "__meta_backendai_scaling_group": group or "",
            "__meta_backendai_region": region or ""}})
    workers = (Worker.objects.filter(status=WorkerStatus.ALIVE).exclude(metrics_address="")
               .values_list("authority", "metrics_address", "frontend_mode").order_by("authority"))
    for authority, address, mode in workers:
        groups.append({"targets": [address], "labels": {
            "service": "appproxy-worker", "worker": authority, "__meta_backendai_service": "appproxy-worker",
            "__meta_backendai_worker": authority, "__meta_backendai_frontend_mode": mode}})
    proxies = (StorageProxy.objects.filter(status=ProxyStatus.ALIVE).exclude(metrics_address="")
               .values_list("name", "metrics_address").order_by("name"))
    for name, address in proxies:
        groups.append({"targets": [address], "labels": {
            "service": "storage-proxy", "storage_proxy": name, "__meta_backendai_service": "storage-proxy",
            "__meta_backendai_storage_proxy": name}})
    return groups


# --- the internal listener (manage.py serve_metrics) ---------------------------------------------

class MetricsServer(MetricsHTTPServer):
    """The internal metrics listener; ``advertised`` is what the service discovery lists for it."""

    def __init__(self, listen: tuple[str, int]):
        super().__init__(listen)
        self.advertised = manager_target((listen[0], self.server_address[1]))

    def routes(self):
        return {"/metrics": lambda: self._with_db(lambda: (exposition(), CONTENT_TYPE_LATEST)),
                "/metrics/service_discovery": lambda: self._with_db(
                    lambda: (json.dumps(service_discovery(self.advertised)).encode(), SD_CONTENT_TYPE))}

    @staticmethod
    def _with_db(answer):
        close_old_connections()
        try:
            return answer()
        finally:
            connections.close_all()  # this thread ends after the request: never leave its connection open
