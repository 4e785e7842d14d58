"""Prometheus metrics of model serving, on the manager's ``/metrics``.

* ``backendai_endpoint_replicas{endpoint}``: the replicas each live endpoint should have (its
  ``replicas``), and ``backendai_endpoint_routes{endpoint,status}``: its routes by status.
  Both are read from the database when Prometheus scrapes (``EndpointCollector``, registered by
  ``backendai.metrics``), so they are right whichever process changed what, and after restarts.
* ``backendai_endpoint_scaling_decisions_total{endpoint,kind,direction}``: every change of
  ``replicas`` made through ``serving.services.endpoints.apply_replicas``; ``kind`` is ``scale``
  (by hand) or ``autoscale`` (by a rule), ``direction`` ``up``, ``down`` or ``none`` (asked for the
  count it already had).  A counter of the process that decided (the autoscaler runs in Celery):
  it is shared with the web process through ``PROMETHEUS_MULTIPROC_DIR`` as the scheduler's are,
  and starts again from zero when that directory is emptied (Prometheus' ``rate``/``increase``
  handle the reset).  The endpoint's event log keeps the decisions themselves.

The ``endpoint`` label is the endpoint's id (names are only unique per owner).
"""
from __future__ import annotations

from django.db.models import Count
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from serving.models import Endpoint, LifecycleStage, Routing

SCALING_DECISIONS = Counter(
    "backendai_endpoint_scaling_decisions",  # exposed with the _total suffix
    "Changes of an endpoint's replicas, by hand (scale) or by an autoscaling rule (autoscale)",
    ["endpoint", "kind", "direction"],
)


def count_scaling(endpoint_id, kind: str, before: int, after: int) -> None:
    direction = "up" if after > before else "down" if after < before else "none"
    SCALING_DECISIONS.labels(endpoint=str(endpoint_id), kind=str(kind), direction=direction).inc()


class EndpointCollector:
    """Desired replicas and routes by status of the live endpoints, read at scrape time."""

    def collect(self):
        replicas = GaugeMetricFamily("backendai_endpoint_replicas", "Replicas a live endpoint should have",
                                     labels=["endpoint"])
        live = Endpoint.objects.filter(lifecycle_stage=LifecycleStage.CREATED)
        for endpoint_id, count in live.values_list("id", "replicas").order_by():
            replicas.add_metric([str(endpoint_id)], count)
        yield replicas
        routes = GaugeMetricFamily("backendai_endpoint_routes", "Routes of an endpoint by status",
                                   labels=["endpoint", "status"])
        rows = (Routing.objects.exclude(endpoint__lifecycle_stage=LifecycleStage.DESTROYED)
                .values("endpoint_id", "status").annotate(n=Count("id")).order_by())
        for row in rows:
            routes.add_metric([str(row["endpoint_id"]), row["status"]], row["n"])
        yield routes
