"""Usage statistics: slot-hours per UTC day (or month), per user, project and resource group,
computed from kernel lifetimes (docs/observability.md, "Usage statistics").

A kernel counts from the moment it was placed on an agent (the ``SCHEDULED`` entry of its
status history, else its creation) until it ended (``terminated_at``), or until *now*
while it still holds its resources; the same rule as the month and period reports
(``sessions.usage``).  For every UTC day it overlaps, its occupied slots (else its
requested ones) times the hours of the overlap are added to the bucket of
(day, user, project, resource group): ``cpu`` in core-hours, ``mem`` (and any ``*.mem``
slot) in GiB-hours, every other slot (``cuda.device``, ``cuda.shares``, ...) in
amount-hours.  A kernel that spans midnight is split at midnight.

The buckets are computed on the fly, never stored: one query reads the kernels that held
resources in the asked period (through a server-side cursor, ``CHUNK_ROWS`` at a time)
and Python splits their lifetimes, so a running kernel is always counted up to the
moment of the request and nothing needs reconciling.  The query count is constant
whatever the number of kernels or days; the work is linear in (kernels × days they span
inside the period), and a period is at most ``MAX_DAYS`` days.

Who sees what: a user their own kernels (whatever the project), a domain admin those of
their domain's sessions, a superadmin everything (``scope_for``).
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from typing import Iterable, Iterator

from django.db.models import Q
from django.utils import timezone

from accounts.services import is_admin_like
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError, slot_type_of
from sessions.lifecycle import KernelStatus
from sessions.models import Kernel

MAX_DAYS = 400  # a period longer than this is refused (a year and a bit, for month views)
MAX_IDS = 200
CHUNK_ROWS = 2000
GIB = Decimal(2**30)
SECONDS_PER_HOUR = Decimal(3600)
GROUP_KEYS = ("user", "project", "resource_group", "domain")
CHART_KEYS = ("user", "project", "resource_group")
GRANULARITIES = ("day", "month")
_DATE_RE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_ROUND = Decimal("0.0001")


# --- parameters -----------------------------------------------------------------------------------

def parse_day(value, name: str) -> date:
    """``YYYY-MM-DD`` or ``YYYYMMDD``."""
    if not isinstance(value, str) or len(value) > 32:
        raise errors.InvalidAPIParameters(f"{name}: give a date as YYYY-MM-DD")
    match = _DATE_RE.fullmatch(value.strip())
    try:
        if not match:
            raise ValueError
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise errors.InvalidAPIParameters(f"{name}: {value.strip()[:16]!r} is not a date (YYYY-MM-DD)") from None
    if not 1970 <= day.year <= 9998:
        raise errors.InvalidAPIParameters(f"{name}: the year must be between 1970 and 9998")
    return day


def parse_range(start_value, end_value, today: date, default_days: int = 30) -> tuple[date, date]:
    """The period's first and last day (both included); empty: the last ``default_days`` days."""
    end = parse_day(end_value, "end") if end_value not in (None, "") else today
    start = parse_day(start_value, "start") if start_value not in (None, "") else end - timedelta(days=default_days - 1)
    if end < start:
        raise errors.InvalidAPIParameters("end must not be before start")
    if (end - start).days + 1 > MAX_DAYS:
        raise errors.InvalidAPIParameters(f"Give at most {MAX_DAYS} days (asked for {(end - start).days + 1})")
    return start, end


def parse_choices(value, name: str, allowed: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    if value in (None, ""):
        return default
    if not isinstance(value, str) or len(value) > 200:
        raise errors.InvalidAPIParameters(f"{name}: one or more of {', '.join(allowed)}, comma-separated")
    chosen = []
    for item in (part.strip() for part in value.split(",")):
        if item not in allowed:
            raise errors.InvalidAPIParameters(f"{name}: {item[:20]!r} is not one of {', '.join(allowed)}")
        if item not in chosen:
            chosen.append(item)
    return tuple(chosen)


def parse_ids(value, name: str) -> list[uuid.UUID]:
    if value in (None, ""):
        return []
    if not isinstance(value, str) or len(value) > MAX_IDS * 40:
        raise errors.InvalidAPIParameters(f"{name}: comma-separated UUIDs")
    found = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        try:
            found.append(uuid.UUID(part))
        except ValueError:
            raise errors.InvalidAPIParameters(f"{name}: {part[:40]!r} is not a UUID") from None
    if len(found) > MAX_IDS:
        raise errors.InvalidAPIParameters(f"{name}: at most {MAX_IDS} ids")
    return found


# --- scope ----------------------------------------------------------------------------------------

def scope_for(actor, *, mine: bool = False) -> Q:
    """The kernels ``actor`` may count: their own; a domain admin's domain; everything for a
    superadmin.  ``mine``: only the actor's own, whatever their role."""
    if mine or not is_admin_like(actor):
        return Q(session__user_id=actor.pk)
    if actor.is_superadmin:
        return Q()
    return Q(session__domain_id=actor.domain_id)


# --- buckets --------------------------------------------------------------------------------------

@dataclass
class Bucket:
    period: date  # the day, or the month's first day
    user_id: str | None = None
    user_email: str | None = None
    project_id: str | None = None
    project_name: str | None = None
    domain_name: str | None = None
    resource_group: str | None = None
    usage: dict = field(default_factory=dict)  # slot -> slot-hours (Decimal; mem in GiB-hours)
    session_ids: set = field(default_factory=set)
    kernels: int = 0

    def as_dict(self, granularity: str = "day") -> dict:
        answer = {"period": self.period.isoformat()[:7] if granularity == "month" else self.period.isoformat()}
        for key in ("user_id", "user_email", "project_id", "project_name", "domain_name", "resource_group"):
            value = getattr(self, key)
            if value is not None:
                answer[key] = value
        answer["sessions"] = len(self.session_ids)
        answer["kernels"] = self.kernels
        answer["usage"] = {slot: float(amount.quantize(_ROUND)) for slot, amount in sorted(self.usage.items())}
        return answer


def unit_of(slot: str) -> str:
    if slot == "cpu":
        return "core-hours"
    if slot_type_of(slot) == "bytes":
        return "GiB-hours"
    return "hours"


def _aware_utc(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=dt_timezone.utc)


def _scheduled_at(history) -> datetime | None:
    for entry in history if isinstance(history, list) else ():
        if isinstance(entry, dict) and entry.get("status") == KernelStatus.SCHEDULED:
            try:
                when = datetime.fromisoformat(str(entry.get("timestamp")))
            except ValueError:
                return None
            return when if timezone.is_aware(when) else when.replace(tzinfo=dt_timezone.utc)
    return None


def _per_hour(occupied, requested) -> dict[str, Decimal]:
    """The kernel's slots as amounts per hour of holding (mem in GiB)."""
    for raw in (occupied, requested):
        if not raw:
            continue
        try:
            slots = ResourceSlot.from_json(raw)
        except (SlotError, TypeError, ValueError, AttributeError):
            continue
        amounts = {}
        for name, amount in slots.items():
            if not amount.is_finite() or amount <= 0:
                continue
            amounts[name] = amount / GIB if slot_type_of(name) == "bytes" else amount
        return amounts
    return {}


_COLUMNS = ("session_id", "session__user_id", "session__user__email", "session__project_id",
            "session__project__name", "session__domain_id", "session__scaling_group_id",
            "occupied_slots", "requested_slots", "created_at", "terminated_at", "status_history")


def _held_rows(scope: Q, start: datetime, end: datetime, filters: Q) -> Iterator[tuple]:
    placed = Q(agent__isnull=False) | ~Q(agent_addr="")
    query = (Kernel.objects.filter(scope, filters, placed, created_at__lt=end)
             .exclude(status=KernelStatus.PENDING)
             .filter(Q(terminated_at__isnull=True) | Q(terminated_at__gt=start))
             .order_by().values_list(*_COLUMNS))
    return query.iterator(chunk_size=CHUNK_ROWS)


def _month_of(day: date) -> date:
    return day.replace(day=1)


def compute(scope: Q, first: date, last: date, *, group_by: Iterable[str] = CHART_KEYS, granularity: str = "day",
            filters: Q | None = None, now: datetime | None = None) -> list[Bucket]:
    """The buckets of [first, last] (UTC days, both included), one per period and group that
    held something, ordered by period then group.  One query."""
    group_by = tuple(group_by)
    now = now or timezone.now()
    start, end = _aware_utc(first), _aware_utc(last + timedelta(days=1))
    found: dict[tuple, Bucket] = {}
    for (session_id, user_id, email, project_id, project_name, domain, group, occupied, requested,
         created_at, terminated_at, history) in _held_rows(scope, start, end, filters or Q()):
        since = max(_scheduled_at(history) or created_at, start)
        until = min(terminated_at or now, end)
        if until <= since:
            continue
        rates = _per_hour(occupied, requested)
        keys = {}
        if "user" in group_by:
            keys.update(user_id=str(user_id), user_email=email)
        if "project" in group_by:
            keys.update(project_id=str(project_id), project_name=project_name, domain_name=domain)
        if "resource_group" in group_by:
            keys.update(resource_group=group or "")
        if "domain" in group_by:
            keys.update(domain_name=domain)
        identity = tuple(keys.values())
        day = since.astimezone(dt_timezone.utc).date()
        while True:
            day_start = _aware_utc(day)
            day_end = day_start + timedelta(days=1)
            piece_start, piece_end = max(since, day_start), min(until, day_end)
            if piece_end > piece_start:
                period = _month_of(day) if granularity == "month" else day
                bucket = found.get((period, identity))
                if bucket is None:
                    bucket = found[(period, identity)] = Bucket(period, **keys)
                hours = Decimal((piece_end - piece_start).total_seconds()) / SECONDS_PER_HOUR
                for slot, rate in rates.items():
                    bucket.usage[slot] = bucket.usage.get(slot, Decimal(0)) + rate * hours
                bucket.session_ids.add(session_id)
                bucket.kernels += 1
            if day_end >= until:
                break
            day += timedelta(days=1)
    return sorted(found.values(), key=lambda b: (b.period, b.domain_name or "", b.project_name or "",
                                                 b.user_email or "", b.resource_group or ""))


def totals(buckets: Iterable[Bucket]) -> dict[str, float]:
    summed: dict[str, Decimal] = {}
    for bucket in buckets:
        for slot, amount in bucket.usage.items():
            summed[slot] = summed.get(slot, Decimal(0)) + amount
    return {slot: float(amount.quantize(_ROUND)) for slot, amount in sorted(summed.items())}


# --- what the API answers -------------------------------------------------------------------------

def statistics(actor, params: dict, now: datetime | None = None) -> dict:
    """``GET /resource/stats``: the buckets the actor may see over a period.

    ``start``/``end`` (YYYY-MM-DD, default the last 30 days), ``granularity`` (day|month),
    ``group_by`` (any of user, project, resource_group, domain; default the first three), ``mine``
    (``true``: only the actor's own usage, for admins), ``project_id`` / ``user_id``
    (comma-separated UUIDs) and ``resource_group`` to narrow it."""
    now = now or timezone.now()
    start, end = parse_range(params.get("start"), params.get("end"), now.astimezone(dt_timezone.utc).date())
    granularity = parse_choices(params.get("granularity"), "granularity", GRANULARITIES, ("day",))
    if len(granularity) != 1:
        raise errors.InvalidAPIParameters("granularity: one of day, month")
    group_by = parse_choices(params.get("group_by"), "group_by", GROUP_KEYS, CHART_KEYS)
    mine = str(params.get("mine") or "").lower()
    if mine not in ("", "true", "false", "1", "0"):
        raise errors.InvalidAPIParameters("mine: true or false")
    filters = Q()
    projects = parse_ids(params.get("project_id"), "project_id")
    if projects:
        filters &= Q(session__project_id__in=projects)
    users = parse_ids(params.get("user_id"), "user_id")
    if users:
        filters &= Q(session__user_id__in=users)
    group = params.get("resource_group")
    if group not in (None, ""):
        if not isinstance(group, str) or len(group) > 64 or any(ord(c) < 32 or c == "\x7f" for c in group):
            raise errors.InvalidAPIParameters("resource_group: a resource group's name")
        filters &= Q(session__scaling_group_id=group)
    buckets = compute(scope_for(actor, mine=mine in ("true", "1")), start, end, group_by=group_by,
                      granularity=granularity[0], filters=filters, now=now)
    slots = sorted({slot for bucket in buckets for slot in bucket.usage})
    return {"start": start.isoformat(), "end": end.isoformat(), "granularity": granularity[0],
            "group_by": list(group_by), "timezone": "UTC", "units": {slot: unit_of(slot) for slot in slots},
            "buckets": [bucket.as_dict(granularity[0]) for bucket in buckets], "totals": totals(buckets)}


def monthly_series(actor, *, admin: bool, now: datetime | None = None) -> list[dict]:
    """``GET /resource/stats/user/month`` and ``/resource/stats/admin/month``: the last 30 UTC
    days, one entry per day, in the client's stats shape (``date`` a UNIX timestamp of the
    day's start, each figure ``{"value", "unit_hint"}``).  ``cpu_allocated``,
    ``mem_allocated`` and ``gpu_allocated`` are the day's time-weighted mean allocation
    (slot-hours / 24); ``usage`` has the slot-hours themselves."""
    now = now or timezone.now()
    if admin and not is_admin_like(actor):
        raise errors.InsufficientPrivilege("Only superadmins and domain admins read the admin statistics")
    last = now.astimezone(dt_timezone.utc).date()
    first = last - timedelta(days=29)
    buckets = compute(scope_for(actor, mine=not admin), first, last, group_by=(), now=now)
    by_day = {bucket.period: bucket for bucket in buckets}
    series = []
    for offset in range(30):
        day = first + timedelta(days=offset)
        bucket = by_day.get(day) or Bucket(day)
        usage = {slot: float(amount.quantize(_ROUND)) for slot, amount in sorted(bucket.usage.items())}
        gpu = sum((amount for slot, amount in bucket.usage.items() if slot.endswith((".device", ".shares"))),
                  Decimal(0))
        series.append({
            "date": int(_aware_utc(day).timestamp()),
            "num_sessions": {"value": len(bucket.session_ids), "unit_hint": "count"},
            "cpu_allocated": {"value": round(usage.get("cpu", 0.0) / 24, 4), "unit_hint": "count"},
            "mem_allocated": {"value": int(bucket.usage.get("mem", Decimal(0)) * GIB / 24), "unit_hint": "bytes"},
            "gpu_allocated": {"value": float((gpu / 24).quantize(_ROUND)), "unit_hint": "count"},
            "usage": usage,
        })
    return series


# --- the web UI's charts ---------------------------------------------------------------------------

@dataclass
class UsageSeries:
    name: str  # the user's e-mail, the project's domain/name or the resource group
    per_day: list[float]  # CPU core-hours per period (a day, or a month)
    gpu_hours: float = 0.0
    mem_gib_hours: float = 0.0
    sessions: int = 0

    @property
    def total(self) -> float:
        return round(sum(self.per_day), 2)


@dataclass
class UsageReport:
    start: date
    end: date  # included
    by: str  # "user", "project" or "resource_group"
    days: list[date]  # the periods: days, or the months' first days
    granularity: str = "day"
    series: list[UsageSeries] = field(default_factory=list)

    @property
    def day_totals(self) -> list[float]:
        return [round(sum(s.per_day[i] for s in self.series), 2) for i in range(len(self.days))]

    @property
    def peak(self) -> float:
        return max(self.day_totals, default=0.0)


def _periods(start: date, end: date, granularity: str) -> list[date]:
    if granularity == "month":
        months, month = [], _month_of(start)
        while month <= end:
            months.append(month)
            month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        return months
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _series_name(bucket: Bucket, by: str) -> str:
    if by == "user":
        return bucket.user_email or ""
    if by == "project":
        return f"{bucket.domain_name}/{bucket.project_name}"
    return bucket.resource_group or "(none)"


def usage_report(scope: Q, start: date, end: date, by: str = "user", granularity: str = "day",
                 now: datetime | None = None) -> UsageReport:
    """CPU core-hours (and GPU-hours, memory GiB-hours, sessions) per period and per ``by``
    over [start, end], from the buckets: what the web UI's tables and charts show."""
    if by not in CHART_KEYS:
        raise errors.InvalidAPIParameters("Group by user, project or resource_group.")
    if granularity not in GRANULARITIES:
        raise errors.InvalidAPIParameters("Show days or months.")
    periods = _periods(start, end, granularity)
    index = {period: i for i, period in enumerate(periods)}
    report = UsageReport(start, end, by, periods, granularity)
    series: dict[str, UsageSeries] = {}
    sessions: dict[str, set] = {}
    for bucket in compute(scope, start, end, group_by=(by,), granularity=granularity, now=now):
        name = _series_name(bucket, by)
        row = series.setdefault(name, UsageSeries(name, [0.0] * len(periods)))
        row.per_day[index[bucket.period]] += float(bucket.usage.get("cpu", Decimal(0)))
        row.gpu_hours += float(sum((a for s, a in bucket.usage.items() if s.endswith((".device", ".shares"))),
                                   Decimal(0)))
        row.mem_gib_hours += float(bucket.usage.get("mem", Decimal(0)))
        sessions.setdefault(name, set()).update(bucket.session_ids)
    for name, row in series.items():
        row.per_day = [round(v, 2) for v in row.per_day]
        row.gpu_hours, row.mem_gib_hours = round(row.gpu_hours, 2), round(row.mem_gib_hours, 2)
        row.sessions = len(sessions[name])
    report.series = sorted(series.values(), key=lambda s: (-s.total, s.name))
    return report
