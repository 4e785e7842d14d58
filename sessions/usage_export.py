"""The ``usage-buckets`` CSV report (``POST /export/usage-buckets/csv``, ``backend.ai admin
export``): the daily usage buckets of ``sessions.usage_buckets``, one row per UTC day, user,
project and resource group, for superadmins (everything) and domain admins (their domain).

The ``period`` filter (``{"after": ..., "before": ...}``) picks the days (default: the last
30 days; days after today hold nothing, days before the first kernel are skipped); the other
filters narrow the kernels counted.  The period is walked in windows of ``WINDOW_DAYS``
days, one query each, and each window's buckets are written out before the next is read:
memory holds one window's buckets, whatever the length of the period.
"""
from __future__ import annotations

from datetime import timedelta
from datetime import timezone as dt_timezone

from django.db.models import Min, Q
from django.utils import timezone

from accounts.services import is_admin_like
from backendai.exports.registry import Column, Report, picked
from backendai.exports.request import Range, Text, UUIDs
from sessions import usage_buckets
from sessions.models import Kernel

WINDOW_DAYS = 31

_GPU = (".device", ".shares")


def _gpu_hours(bucket) -> float:
    return round(float(sum(amount for slot, amount in bucket.usage.items() if slot.endswith(_GPU))), 4)


_GETTERS = {
    "period": lambda b: b.period.isoformat(),
    "domain_name": lambda b: b.domain_name,
    "project_id": lambda b: b.project_id,
    "project_name": lambda b: b.project_name,
    "user_id": lambda b: b.user_id,
    "user_email": lambda b: b.user_email,
    "resource_group": lambda b: b.resource_group,
    "sessions": lambda b: len(b.session_ids),
    "kernels": lambda b: b.kernels,
    "cpu_hours": lambda b: b.as_dict()["usage"].get("cpu", 0.0),
    "mem_gib_hours": lambda b: b.as_dict()["usage"].get("mem", 0.0),
    "gpu_hours": _gpu_hours,
    "usage": lambda b: b.as_dict()["usage"],
}


def _rows(user, export):
    return rows(user, export)


def rows(user, export, *, mine: bool = False):
    """The buckets of the asked days, computed and written one window of ``WINDOW_DAYS`` at a
    time (one query each), so memory holds one window's buckets whatever the period.
    ``mine``: only ``user``'s own sessions (the web UI's "My usage" download), whatever their role."""
    today = timezone.now().astimezone(dt_timezone.utc).date()
    first, last = today - timedelta(days=29), today
    period = export.conditions.get("period")
    if period is not None:
        last = min(period.before.astimezone(dt_timezone.utc).date(), today) if period.before is not None else today
        first = period.after.astimezone(dt_timezone.utc).date() if period.after is not None else last - timedelta(days=29)
    filters = Q()
    for name, condition in export.conditions.items():
        if name != "period":
            filters &= condition.q()
    scope = usage_buckets.scope_for(user, mine=mine)
    if first < last - timedelta(days=WINDOW_DAYS):  # no need to walk the years before the first kernel
        earliest = Kernel.objects.filter(scope, filters).aggregate(first=Min("created_at"))["first"]
        first = max(first, earliest.astimezone(dt_timezone.utc).date()) if earliest else last
    descending = any(key == "period" and down for key, down in export.order)
    return picked(_GETTERS, export, _windows(scope, filters, first, last, descending))


def _windows(scope, filters, first, last, descending):
    starts = [first + timedelta(days=offset) for offset in range(0, max((last - first).days + 1, 0), WINDOW_DAYS)]
    for start in reversed(starts) if descending else starts:
        buckets = usage_buckets.compute(scope, start, min(start + timedelta(days=WINDOW_DAYS - 1), last),
                                        filters=filters)
        if descending:
            buckets.sort(key=lambda b: b.period, reverse=True)
        yield from buckets


USAGE_BUCKETS = Report(
    key="usage-buckets",
    name="Usage buckets",
    description=("Resource usage per UTC day, user, project and resource group in slot-hours, computed from kernel "
                 "lifetimes (running kernels count up to now)."),
    columns=(
        Column("period", "Day", "The UTC day (YYYY-MM-DD).", "string"),
        Column("domain_name", "Domain", "The project's domain.", "string"),
        Column("project_id", "Project ID", "The project's id.", "uuid"),
        Column("project_name", "Project", "The project's name.", "string"),
        Column("user_id", "User ID", "The session owner's id.", "uuid"),
        Column("user_email", "User Email", "The session owner's e-mail address.", "string"),
        Column("resource_group", "Resource Group", "The resource group the sessions ran in.", "string"),
        Column("sessions", "Sessions", "Sessions that held resources that day.", "integer"),
        Column("kernels", "Kernels", "Kernels that held resources that day.", "integer"),
        Column("cpu_hours", "CPU core-hours", "Cores held times hours.", "string"),
        Column("mem_gib_hours", "Memory GiB-hours", "GiB of memory held times hours.", "string"),
        Column("gpu_hours", "GPU hours", "cuda.device and cuda.shares held times hours.", "string"),
        Column("usage", "Usage", "Every slot's slot-hours (mem in GiB-hours).", "json"),
    ),
    filters={
        "period": Range(),
        "domain_name": Text("session__domain__name"),
        "project_id": UUIDs("session__project_id"),
        "user_id": UUIDs("session__user_id"),
        "user_email": Text("session__user__email"),
        "resource_group": Text("session__scaling_group__name"),
    },
    orders={"period": "period"},
    rows=_rows,
    allowed=is_admin_like,
    default_order=(("period", False),),
)

REPORTS = (USAGE_BUCKETS,)
