"""A worker's circuit-table revisions and its occupancy count."""
from __future__ import annotations

from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce

from appproxy.models import Circuit, Worker


def next_revision(worker_id) -> int:
    """Take the worker's next revision number (the UPDATE also locks its row until commit)."""
    Worker.objects.filter(pk=worker_id).update(revision=F("revision") + 1)
    return Worker.objects.filter(pk=worker_id).values_list("revision", flat=True).get()


def recompute_occupancy(worker_ids) -> None:
    """Occupancy is counted from the circuits, never decremented (one statement)."""
    count = (Circuit.objects.filter(worker=OuterRef("pk")).order_by().values("worker")
             .annotate(n=Count("pk")).values("n"))
    Worker.objects.filter(pk__in=list(worker_ids)).update(occupancy=Coalesce(Subquery(count), 0))
