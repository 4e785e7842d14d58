"""The agent's own ``/metrics`` (``--metrics-listen``, default ``127.0.0.1:6003``; reference §12
agent names): its stat collection (``backendai_stat_task_*``), its syncs with the manager
(``backendai_sync_container_lifecycle_*``) and the utilization of each running kernel
(``backendai_container_utilization``, from the statistics a sync reports).

The address it listens on is reported in every sync (``metrics_address``), so the manager's
``/metrics/service_discovery`` lists it.  Each :class:`AgentMetrics` has its own registry (several
agents may live in one test process)."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from backendai.metrics_http import MetricsHTTPServer

log = logging.getLogger(__name__)

UTILIZATION_LABELS = ("container_metric_name", "agent_id", "kernel_id", "session_id", "user_id", "project_id",
                      "value_type")
# a kernel's statistics (docs/agent-protocol.md, a kernel's "stats") -> container_metric_name
KERNEL_STATS = {"cpu_util": "cpu_util", "mem_used": "mem", "cuda_util": "cuda_util", "cuda_mem": "cuda_mem"}


class _Utilization:
    def __init__(self, metrics: "AgentMetrics"):
        self.metrics = metrics

    def collect(self):
        family = GaugeMetricFamily("backendai_container_utilization",
                                   "Resource use of each running kernel, as of the agent's last sync",
                                   labels=UTILIZATION_LABELS)
        for (kernel_id, session_id), stats in list(self.metrics.kernels.items()):
            for key, value in stats.items():
                family.add_metric([key, self.metrics.agent_id, kernel_id, session_id, "", "", "current"], value)
        yield family


class AgentMetrics:
    def __init__(self, agent_id: str):
        self.agent_id = agent_id
        r = self.registry = CollectorRegistry()
        self.kernels: dict[tuple[str, str], dict[str, float]] = {}
        self.stat_trigger = Counter("backendai_stat_task_trigger_count", "Statistics collections started",
                                    ("stat_scope",), registry=r)
        self.stat_success = Counter("backendai_stat_task_success_count", "Statistics collections that succeeded",
                                    ("stat_scope",), registry=r)
        self.stat_failure = Counter("backendai_stat_task_failure_count", "Statistics collections that failed",
                                    ("stat_scope", "exception"), registry=r)
        self.stat_duration = Histogram("backendai_stat_task_duration_sec", "Seconds a statistics collection took",
                                       ("stat_scope",), registry=r,
                                       buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.sync_trigger = Counter("backendai_sync_container_lifecycle_trigger_count",
                                    "Syncs of the kernels' lifecycle with the manager started", registry=r)
        self.sync_success = Counter("backendai_sync_container_lifecycle_success_count",
                                    "Syncs answered and applied", registry=r)
        self.sync_failure = Counter("backendai_sync_container_lifecycle_failure_count",
                                    "Syncs that failed (manager unreachable, refused, or the kernels unreadable)",
                                    ("exception",), registry=r)
        r.register(_Utilization(self))

    @contextmanager
    def stat_task(self, scope: str):
        """Count and time one statistics collection of ``scope`` (``node``, ``container``, ``device``);
        the exception passes through."""
        self.stat_trigger.labels(scope).inc()
        started = time.monotonic()
        try:
            yield
        except Exception as exc:
            self.stat_failure.labels(scope, type(exc).__name__).inc()
            raise
        else:
            self.stat_success.labels(scope).inc()
        finally:
            self.stat_duration.labels(scope).observe(time.monotonic() - started)

    def record_kernels(self, kernels: dict[str, Any]) -> None:
        """Replace the utilization figures with those of the running kernels just collected
        (``{kernel_id: KernelState}``): a kernel that is gone drops out of the next scrape."""
        fresh: dict[tuple[str, str], dict[str, float]] = {}
        for kernel_id, state in kernels.items():
            stats = getattr(state, "stats", None)
            if not stats:
                continue
            values = {}
            for key, name in KERNEL_STATS.items():
                try:
                    values[name] = float(stats[key])
                except (KeyError, TypeError, ValueError):
                    continue
            if values:
                fresh[(kernel_id, state.session_id or "")] = values
        self.kernels = fresh

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class AgentMetricsServer(MetricsHTTPServer):
    """The agent's own ``/metrics`` (``--metrics-listen``)."""

    label = "agent metrics"

    def __init__(self, listen: tuple[str, int], metrics: AgentMetrics):
        self.metrics = metrics
        super().__init__(listen)

    def routes(self):
        return {"/metrics": lambda: (self.metrics.exposition(), CONTENT_TYPE_LATEST)}

