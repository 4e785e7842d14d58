"""The usage-bucket searches of the 26.09 client (``backend.ai resource-usage domain|project|user
list``): ``POST /fair-share/usage-buckets/{domains,projects,users}/search`` with
``{filter, order, limit, offset}``, answered ``{items, pagination}`` in that client's shapes.

The buckets are this server's daily usage buckets (``sessions.usage_buckets``), one per UTC
day (``decay_unit_days`` is always 1) and domain / project / user within a resource group.
They are computed on the fly, so ``id`` is a name-based UUID of the bucket's key, and
``created_at``/``updated_at`` are the moment the day's usage was last counted (its end, or
now for today).  ``resource_usage`` (and ``average_daily_usage``, the same for a one-day
bucket) holds slot-hours (``mem`` in GiB-hours); ``capacity_snapshot`` the resource group's
capacity now (its live agents' slots); ``usage_capacity_ratio`` the usage over that
capacity held for 24 hours.

The filter's ``period_start`` (``{"after", "before"}`` dates, both included) picks the days,
by default the last 30, at most ``usage_buckets.MAX_DAYS``.  Superadmins search everything,
domain admins their domain; anyone else is refused.
"""
from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone

from accounts.services import is_admin_like
from agents.models import Agent
from backendai.api import errors
from backendai.exports.request import Text, UUIDs
from backendai.slots import ResourceSlot, SlotError, slot_type_of
from sessions import usage_buckets

MAX_LIMIT = 1000
_NAMESPACE = uuid.UUID("6c1f5a52-58c4-4b8e-9a53-0d3f2b1e7c11")
_FILTERS = {
    "domains": {"resource_group": Text("session__scaling_group__name"), "domain_name": Text("session__domain__name")},
    "projects": {"resource_group": Text("session__scaling_group__name"), "project_id": UUIDs("session__project_id"),
                 "domain_name": Text("session__domain__name")},
    "users": {"resource_group": Text("session__scaling_group__name"), "user_uuid": UUIDs("session__user_id"),
              "project_id": UUIDs("session__project_id"), "domain_name": Text("session__domain__name")},
}
_GROUPS = {"domains": ("domain", "resource_group"), "projects": ("project", "resource_group"),
           "users": ("user", "project", "resource_group")}
LEVELS = tuple(_FILTERS)


def _object(label: str, value, allowed) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.InvalidAPIParameters(f"{label}: must be an object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise errors.InvalidAPIParameters(f"{label}: unknown key(s) {', '.join(unknown)[:200]}")
    return value


def _date(label: str, value) -> date | None:
    if value is None:
        return None
    return usage_buckets.parse_day(value, label)


def _integer(label: str, value, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise errors.InvalidAPIParameters(f"{label}: an integer from {low} to {high}")
    return value


def _order(raw) -> bool:
    """True when the newest period comes first (the client's default)."""
    if raw is None:
        return True
    if not isinstance(raw, list) or len(raw) > 4:
        raise errors.InvalidAPIParameters("order: a list of {field, direction}")
    descending = True
    for index, item in enumerate(raw):
        item = _object(f"order[{index}]", item, ("field", "direction"))
        if item.get("field") != "period_start":
            raise errors.InvalidAPIParameters(f"order[{index}].field: only period_start")
        direction = item.get("direction", "desc")
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            raise errors.InvalidAPIParameters(f"order[{index}].direction: asc or desc")
        descending = direction.lower() == "desc"
    return descending


def _entries(amounts: dict) -> dict:
    return {"entries": [{"resource_type": slot, "quantity": format(amount.quantize(Decimal("0.000001")).normalize(),
                                                                   "f")}
                        for slot, amount in sorted(amounts.items())]}


def _capacities(groups: set) -> dict[str, dict[str, Decimal]]:
    """Each resource group's capacity now: its alive agents' available slots (mem in GiB)."""
    found: dict[str, dict[str, Decimal]] = {group: {} for group in groups}
    for group, available in Agent.objects.filter(scaling_group_id__in=groups, status="ALIVE").values_list(
            "scaling_group_id", "available_slots"):
        try:
            slots = ResourceSlot.from_json(available or {})
        except (SlotError, TypeError, ValueError, AttributeError):
            continue
        for slot, amount in slots.items():
            if amount.is_finite() and amount > 0:
                amount = amount / usage_buckets.GIB if slot_type_of(slot) == "bytes" else amount
                found[group][slot] = found[group].get(slot, Decimal(0)) + amount
    return found


def search(actor, level: str, body, now: datetime | None = None) -> dict:
    if level not in LEVELS:
        raise errors.object_not_found("usage bucket level", f"No usage buckets of {level[:20]!r}")
    if not is_admin_like(actor):
        raise errors.InsufficientPrivilege("Only superadmins and domain admins search usage buckets")
    body = _object("body", body if body not in (None, "") else {}, ("filter", "order", "limit", "offset"))
    specs = _FILTERS[level]
    raw_filter = _object("filter", body.get("filter"), (*specs, "period_start"))
    period = _object("filter.period_start", raw_filter.get("period_start"), ("after", "before"))
    filters = Q()
    for name, spec in specs.items():
        if raw_filter.get(name) is not None:
            filters &= spec.parse(f"filter.{name}", raw_filter[name]).q()
    descending = _order(body.get("order"))
    limit = _integer("limit", body.get("limit"), 20, 1, MAX_LIMIT)
    offset = _integer("offset", body.get("offset"), 0, 0, 10**9)
    now = now or timezone.now()
    today = now.astimezone(dt_timezone.utc).date()
    before = _date("filter.period_start.before", period.get("before")) or today
    after = _date("filter.period_start.after", period.get("after")) or before - timedelta(days=29)
    first, last = usage_buckets.parse_range(after.isoformat(), before.isoformat(), today)
    buckets = usage_buckets.compute(usage_buckets.scope_for(actor), first, last, group_by=_GROUPS[level],
                                    filters=filters, now=now)
    buckets.sort(key=lambda b: b.period, reverse=descending)
    page = buckets[offset:offset + limit]
    capacity = _capacities({b.resource_group for b in page})
    items = [_item(level, bucket, capacity.get(bucket.resource_group, {}), now) for bucket in page]
    return {"items": items, "pagination": {"total": len(buckets), "offset": offset, "limit": limit}}


def _item(level: str, bucket, capacity: dict, now: datetime) -> dict:
    end = datetime.combine(bucket.period + timedelta(days=1), datetime.min.time(), tzinfo=dt_timezone.utc)
    counted = min(end, now).isoformat()
    day_capacity = {slot: amount * 24 for slot, amount in capacity.items()}
    ratio = {slot: amount / day_capacity[slot] for slot, amount in bucket.usage.items() if day_capacity.get(slot)}
    key = [level, bucket.period.isoformat(), bucket.resource_group, bucket.domain_name or "",
           bucket.project_id or "", bucket.user_id or ""]
    item = {"id": str(uuid.uuid5(_NAMESPACE, "/".join(key))), "domain_name": bucket.domain_name,
            "resource_group": bucket.resource_group,
            "metadata": {"period_start": bucket.period.isoformat(),
                         "period_end": (bucket.period + timedelta(days=1)).isoformat(), "decay_unit_days": 1,
                         "created_at": counted, "updated_at": counted,
                         "average_daily_usage": _entries(bucket.usage), "usage_capacity_ratio": _entries(ratio)},
            "resource_usage": _entries(bucket.usage), "capacity_snapshot": _entries(capacity)}
    if level in ("projects", "users"):
        item["project_id"] = bucket.project_id
    if level == "users":
        item["user_uuid"] = bucket.user_id
    return item
