"""``/metrics`` for Prometheus: request metrics (django-prometheus), the
scheduler's counters and histograms (recorded in whichever process ran a pass;
shared through ``PROMETHEUS_MULTIPROC_DIR`` when set), and gauges read from the
database at scrape time (sessions and agents by status, background tasks by name
and status; ``backendai.bgtasks`` records the tasks' finished counter and durations;
``serving.metrics``: model-serving endpoints' replicas, routes and scaling decisions)."""
from __future__ import annotations

import os

from django.db.models import Count
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

from agents.models import Agent
from backendai.models import BackgroundTask
from serving.metrics import EndpointCollector
from sessions.models import Session


class DatabaseCollector:
    """Counts that are truths in the database, read when Prometheus scrapes."""

    def collect(self):
        sessions = GaugeMetricFamily("backendai_session_count", "Sessions by status", labels=["status"])
        for row in Session.objects.values("status").annotate(n=Count("id")).order_by():
            sessions.add_metric([row["status"]], row["n"])
        yield sessions
        agents = GaugeMetricFamily("backendai_agent_count", "Agents by status", labels=["status"])
        for row in Agent.objects.values("status").annotate(n=Count("id")).order_by():
            agents.add_metric([row["status"]], row["n"])
        yield agents
        tasks = GaugeMetricFamily("backendai_bgtask_count", "Background tasks by name and status",
                                  labels=["name", "status"])
        for row in BackgroundTask.objects.values("name", "status").annotate(n=Count("id")).order_by():
            tasks.add_metric([row["name"], row["status"]], row["n"])
        yield tasks


def metrics_view(request):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    local = CollectorRegistry()
    local.register(DatabaseCollector())
    local.register(EndpointCollector())  # model serving: replicas and routes per endpoint
    body = generate_latest(registry) + generate_latest(local)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
