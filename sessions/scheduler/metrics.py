"""Prometheus metrics of the scheduler (reference §12 names).

* ``backendai_scheduler_operation_count{operation,result}``: passes and
  reconciler runs; ``result`` is ``success``, ``skipped`` (another pass holds
  the scaling group's lock) or ``failure``.
* ``backendai_scheduler_operation_duration_sec{operation}``: their duration.
* ``backendai_scheduler_decision_count{outcome}``: per-session decisions:
  ``scheduled``, ``predicate_failed``, ``no_agent``, ``cancelled``, ``error``
  (plus, from reconcilers, ``rescheduled``, ``failed_to_start``, ``forced``,
  ``agent_lost``).

They live in prometheus_client's default registry; whoever serves ``/metrics``
exposes them with everything else.
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

OPERATION_COUNT = Counter(
    "backendai_scheduler_operation_count",
    "Scheduler operations (passes, reconcilers) by result",
    ["operation", "result"],
)
OPERATION_DURATION = Histogram(
    "backendai_scheduler_operation_duration_sec",
    "Duration of scheduler operations in seconds",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DECISION_COUNT = Counter(
    "backendai_scheduler_decision_count",
    "Per-session scheduler decisions by outcome",
    ["outcome"],
)


def record(operation: str, result: str, duration: float | None = None) -> None:
    OPERATION_COUNT.labels(operation=operation, result=result).inc()
    if duration is not None:
        OPERATION_DURATION.labels(operation=operation).observe(duration)


def decisions(counts: dict[str, int]) -> None:
    for outcome, n in counts.items():
        if n:
            DECISION_COUNT.labels(outcome=outcome).inc(n)
