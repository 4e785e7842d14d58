"""The endpoint's event log: what its owner reads under "Events" (scaling decisions,
replicas started, replaced and drained, errors).  Every service that decides
something about an endpoint records it here, with the ids in ``data``."""
from __future__ import annotations

import logging

from serving.models import Endpoint, EndpointEvent, EventKind

log = logging.getLogger(__name__)

MAX_MESSAGE = 2000
#: events kept per endpoint (older ones are pruned by ``prune``)
KEEP_PER_ENDPOINT = 500


def record(endpoint: Endpoint, kind: str, message: str, data: dict | None = None) -> EndpointEvent:
    """Write one event (and log it with the endpoint's id)."""
    kind = EventKind(kind)
    level = logging.WARNING if kind == EventKind.ERROR else logging.INFO
    log.log(level, "endpoint %s (%s) %s: %s", endpoint.pk, endpoint.name, kind.value, message)
    return EndpointEvent.objects.create(endpoint=endpoint, kind=kind, message=str(message)[:MAX_MESSAGE],
                                        data=dict(data or {}))


def recent(endpoint: Endpoint, limit: int = 50, kinds=None) -> list[EndpointEvent]:
    query = EndpointEvent.objects.filter(endpoint=endpoint)
    if kinds:
        query = query.filter(kind__in=list(kinds))
    return list(query.order_by("-at", "-id")[:max(1, min(int(limit), KEEP_PER_ENDPOINT))])


def prune(keep: int = KEEP_PER_ENDPOINT) -> int:
    """Drop all but the newest ``keep`` events of each endpoint (one statement per endpoint with more)."""
    from django.db.models import Count

    removed = 0
    crowded = (EndpointEvent.objects.values("endpoint_id").annotate(n=Count("id")).filter(n__gt=keep))
    for row in crowded:
        cutoff = (EndpointEvent.objects.filter(endpoint_id=row["endpoint_id"]).order_by("-at", "-id")
                  .values_list("id", flat=True)[keep:keep + 1])
        last = list(cutoff)
        if last:
            removed += EndpointEvent.objects.filter(endpoint_id=row["endpoint_id"], id__lte=last[0]).delete()[0]
    return removed
