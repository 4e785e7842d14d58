"""Usage reports of projects (groups) over a month or a period, and the recalculation of
the usage counters: ``GET /resource/usage/month``, ``GET /resource/usage/period`` and
``POST /resource/recalculate-usage`` (docs/scheduler.md, "Usage reports").

Reports are computed from the kernel rows, never from counters: a kernel counts when it
was placed on an agent (it held resources there) and the time it held them overlaps the
period.  It held them from its placement (the ``SCHEDULED`` entry of its history, else its
creation) until it ended (``terminated_at``), or until now while it still runs.

* ``usage_per_month`` answers what Backend.AI's month report answers: one entry per
  project with ``g_*`` totals and ``c_infos``, one record per kernel (container);
* ``usage_per_period`` one entry per project with ``total_usage`` and ``sessions``, one
  record per session (its kernels summed).

Who may ask: superadmins about any project, domain admins about their domain's projects;
anyone else is refused.  Every parameter is checked before anything is read: a month is
``YYYYMM``, dates ``YYYYMMDD`` (the end date included), a period at most
``MAX_PERIOD_DAYS`` days, group ids UUIDs of projects the caller administers (an unknown
one, or one the caller may not see, is a bad parameter, answered the same way).

``recalculate_usage`` rewrites the agents' occupied slots from the live kernels with
``sessions.occupancy`` (the reconcilers' code); keypairs' concurrency is never stored, it
is counted from the sessions on every read (``services.concurrency_by_keypair``, which
``accounts.hooks.concurrency_used`` asks), so the recalculation only reports it.
"""
from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone

from accounts import hooks as account_hooks
from accounts import services as account_services
from accounts.models import Keypair, Project
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError, parse_binary_size
from sessions import occupancy
from sessions.lifecycle import KernelStatus
from sessions.models import Kernel

log = logging.getLogger(__name__)

MAX_PERIOD_DAYS = 100  # as the real manager: a longer period is refused
MAX_GROUP_IDS = 1000
MAX_PARAM_LENGTH = 64 * 1000
MIN_YEAR, MAX_YEAR = 1970, 9998  # instants stay representable in every time zone
_MONTH_RE = re.compile(r"\d{6}")
_DATE_RE = re.compile(r"\d{8}")
_BASE_SLOTS = frozenset({"cpu", "mem"})


# --- parameters -----------------------------------------------------------------------------------

def _text(value, field: str) -> str:
    if not isinstance(value, str):
        raise errors.InvalidAPIParameters(f"{field}: must be a string")
    if len(value) > MAX_PARAM_LENGTH:
        raise errors.InvalidAPIParameters(f"{field}: too long")
    return value.strip()


def parse_month(value) -> tuple[datetime, datetime]:
    """``YYYYMM`` -> (the month's first instant, the next month's), in the server's time zone."""
    if value is None:
        raise errors.InvalidAPIParameters("month: required (YYYYMM)")
    text = _text(value, "month")
    if not _MONTH_RE.fullmatch(text) or not 1 <= int(text[4:]) <= 12:
        raise errors.InvalidAPIParameters(f"month: {text[:16]!r} is not a month (YYYYMM)")
    year, month = int(text[:4]), int(text[4:])
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise errors.InvalidAPIParameters(f"month: the year must be between {MIN_YEAR} and {MAX_YEAR}")
    first = date(year, month, 1)
    following = date(year + month // 12, month % 12 + 1, 1)
    return _at_midnight(first), _at_midnight(following)


def _parse_date(value, field: str) -> date:
    if value is None:
        raise errors.InvalidAPIParameters(f"{field}: required (YYYYMMDD)")
    text = _text(value, field)
    try:
        if not _DATE_RE.fullmatch(text):
            raise ValueError
        day = datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise errors.InvalidAPIParameters(f"{field}: {text[:16]!r} is not a date (YYYYMMDD)") from None
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise errors.InvalidAPIParameters(f"{field}: the year must be between {MIN_YEAR} and {MAX_YEAR}")
    return day


def parse_period(start_value, end_value) -> tuple[datetime, datetime]:
    """``YYYYMMDD`` to ``YYYYMMDD``, the end date included -> (start, end) instants, at most
    ``MAX_PERIOD_DAYS`` days apart."""
    start = _parse_date(start_value, "start_date")
    end = _parse_date(end_value, "end_date")
    if end < start:
        raise errors.InvalidAPIParameters("end_date must not be before start_date")
    days = (end - start).days + 1
    if days > MAX_PERIOD_DAYS:
        raise errors.InvalidAPIParameters(f"Cannot query more than {MAX_PERIOD_DAYS} days (asked for {days})")
    return _at_midnight(start), _at_midnight(end + timedelta(days=1))


def _at_midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def parse_group_ids(value, field: str = "group_ids") -> list[uuid.UUID]:
    """A list of ids, or one text of comma-separated ids (what 26.09 clients put in the query
    string); empty entries are skipped.  Each must be a UUID."""
    if value is None:
        return []
    if isinstance(value, str):
        items = _text(value, field).split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise errors.InvalidAPIParameters(f"{field}: must be a list of group ids")
    if len(items) > MAX_GROUP_IDS:
        raise errors.InvalidAPIParameters(f"{field}: at most {MAX_GROUP_IDS} groups")
    found = []
    for item in items:
        text = _text(item, field)
        if not text:
            continue
        try:
            key = uuid.UUID(text)
        except ValueError:
            raise errors.InvalidAPIParameters(f"{field}: {text[:40]!r} is not a group id") from None
        if key not in found:
            found.append(key)
    return found


def _require_admin(actor) -> None:
    if not account_services.is_admin_like(actor):
        raise errors.InsufficientPrivilege("Only superadmins and domain admins read usage reports")


def reported_projects(actor, group_ids: list[uuid.UUID]) -> list[Project]:
    """The projects a report covers: those named (each must be one the actor administers),
    or every project the actor administers when none is named."""
    _require_admin(actor)
    visible = account_services.visible_projects(actor)
    if not group_ids:
        return list(visible.order_by("domain_id", "name"))
    projects = {p.pk: p for p in visible.filter(pk__in=group_ids)}
    missing = [str(key) for key in group_ids if key not in projects]
    if missing:
        raise errors.InvalidAPIParameters(f"No such group(s): {', '.join(missing[:10])}")
    return [projects[key] for key in group_ids]


# --- records ------------------------------------------------------------------------------------

@dataclass
class _Held:
    kernel: Kernel
    since: datetime
    until: datetime | None  # None: still holding


def _history_time(history, status: str) -> datetime | None:
    for entry in history or []:
        if isinstance(entry, dict) and entry.get("status") == status:
            try:
                when = datetime.fromisoformat(str(entry.get("timestamp")))
            except ValueError:
                return None
            return when if timezone.is_aware(when) else timezone.make_aware(when, timezone.utc)
    return None


def _held_kernels(projects: list[Project], start: datetime, end: datetime) -> list[_Held]:
    """The kernels of ``projects`` placed on an agent whose holding overlaps [start, end)."""
    if not projects:
        return []
    placed = Q(agent__isnull=False) | ~Q(agent_addr="")
    query = (Kernel.objects.filter(placed, session__project__in=projects, created_at__lt=end)
             .exclude(status=KernelStatus.PENDING)
             .filter(Q(terminated_at__isnull=True) | Q(terminated_at__gte=start))
             .select_related("session", "session__project", "session__user", "session__domain")
             .order_by("created_at", "session_id", "cluster_idx"))
    held = []
    for kernel in query:
        since = _history_time(kernel.status_history, KernelStatus.SCHEDULED) or kernel.created_at
        until = kernel.terminated_at
        if since >= end or (until is not None and until < start):
            continue
        held.append(_Held(kernel, since, until))
    return held


def _number(value: Decimal, whole: bool = False):
    if value.is_infinite() or value.is_nan():
        return 0
    return int(value) if whole else float(value)


def _slots_of(kernel: Kernel) -> ResourceSlot:
    try:
        return ResourceSlot.from_json(kernel.occupied_slots or kernel.requested_slots or {})
    except (SlotError, TypeError, ValueError, AttributeError):
        return ResourceSlot()


def _shared_memory(kernel: Kernel) -> int:
    raw = (kernel.resource_opts or {}).get("shmem") if isinstance(kernel.resource_opts, dict) else None
    try:
        return _number(parse_binary_size(raw), whole=True) if raw not in (None, "") else 0
    except (SlotError, TypeError, ValueError):
        return 0


def _stat(kernel: Kernel, key: str) -> Decimal:
    stat = kernel.last_stat if isinstance(kernel.last_stat, dict) else {}
    try:
        value = Decimal(str(stat.get(key, 0) or 0))
    except ArithmeticError:
        return Decimal(0)
    return value if value.is_finite() and value >= 0 else Decimal(0)


def _duration(delta: timedelta) -> str:
    """``2 days, 3:04:05`` (whole seconds)."""
    return str(timedelta(seconds=max(int(delta.total_seconds()), 0)))


def _days_within(since: datetime, until: datetime, start: datetime, end: datetime) -> int:
    """The calendar days (server time zone) of [start, end) on which [since, until] held resources."""
    first, last = max(since, start), min(until, end)
    if last < first:
        return 0
    if last > first:
        last -= timedelta(microseconds=1)  # held until that instant, not on the day it begins
    zone = timezone.get_current_timezone()
    return (timezone.localtime(last, zone).date() - timezone.localtime(first, zone).date()).days + 1


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _devices(slots: ResourceSlot) -> list[str]:
    return sorted(name for name, amount in slots.items() if name not in _BASE_SLOTS and amount > 0)


def _gpu_allocated(slots: ResourceSlot) -> float:
    return float(sum((amount for name, amount in slots.items()
                      if name.endswith((".device", ".shares")) and amount.is_finite()), Decimal(0)))


def _nfs(kernel: Kernel) -> list[str]:
    mounts = kernel.session.vfolder_mounts if isinstance(kernel.session.vfolder_mounts, list) else []
    return sorted({str(m.get("name")) for m in mounts if isinstance(m, dict) and m.get("name")})


def kernel_record(held: _Held, start: datetime, end: datetime, now: datetime) -> dict:
    """One container's usage in Backend.AI's ``c_infos`` shape."""
    kernel, session = held.kernel, held.kernel.session
    slots = _slots_of(kernel)
    until = held.until or now
    cpu = slots.get("cpu", Decimal(0))
    return {
        "id": str(kernel.pk),
        "session_id": str(session.pk),
        "container_id": kernel.container_id or None,
        "domain_name": session.domain_id,
        "group_id": str(session.project_id),
        "group_name": session.project.name,
        "name": session.name,
        "access_key": session.access_key_id,
        "user_id": str(session.user_id),
        "email": session.user.email,
        "full_name": session.user.full_name,
        "agent": kernel.agent_id or None,
        "cpu_allocated": _number(cpu),
        "cpu_used": 0.0,  # agents report utilisation, not CPU seconds
        "mem_allocated": _number(slots.get("mem", Decimal(0)), whole=True),
        "mem_used": _number(_stat(kernel, "mem_used"), whole=True),
        "shared_memory": _shared_memory(kernel),
        "disk_allocated": 0,
        "disk_used": 0,
        "io_read": 0,
        "io_write": 0,
        "gpu_allocated": _gpu_allocated(slots),
        "gpu_mem_allocated": 0,
        "used_time": _duration(until - held.since),
        "used_days": _days_within(held.since, until, start, end),
        "device_type": _devices(slots),
        "smp": _number(cpu),
        "nfs": _nfs(kernel),
        "image_id": kernel.image,
        "image_name": kernel.image,
        "created_at": _iso(kernel.created_at),
        "terminated_at": _iso(kernel.terminated_at),
        "scheduled_at": _iso(_history_time(kernel.status_history, KernelStatus.SCHEDULED)),
        "status": kernel.status,
        "status_info": kernel.status_info or None,
        "status_changed": _iso(kernel.status_changed),
        "status_history": kernel.status_history or [],
        "cluster_mode": session.cluster_mode,
    }


_TOTALS = ("cpu_allocated", "cpu_used", "mem_allocated", "mem_used", "shared_memory", "disk_allocated",
           "disk_used", "io_read", "io_write", "gpu_allocated", "gpu_mem_allocated", "smp")


def _totals(records: list[dict]) -> dict:
    total = {key: sum(r[key] for r in records) if records else 0 for key in _TOTALS}
    for key in ("cpu_allocated", "cpu_used", "gpu_allocated", "smp"):
        total[key] = float(total[key])
    total["device_type"] = sorted({d for r in records for d in r["device_type"]})
    total["nfs"] = sorted({n for r in records for n in r["nfs"]})
    total["agents"] = sorted({r["agent"] for r in records if r["agent"]})
    return total


def _records_by_project(projects, start, end, now) -> dict:
    """``{project id: [kernel record]}`` for every project, in one query."""
    by_project: dict = {p.pk: [] for p in projects}
    for held in _held_kernels(projects, start, end):
        by_project[held.kernel.session.project_id].append(kernel_record(held, start, end, now))
    return by_project


def _used_projects(actor, ids, start, end, now):
    """(project, kernel records) of the projects ``actor`` asked about that used something."""
    projects = reported_projects(actor, ids)
    by_project = _records_by_project(projects, start, end, now or timezone.now())
    return [(project, by_project[project.pk]) for project in projects if by_project[project.pk]]


def usage_per_month(actor, month, group_ids, now=None) -> list[dict]:
    """Backend.AI's month report: per project with containers in the month, its ``g_*``
    totals and ``c_infos`` (one record per kernel)."""
    _require_admin(actor)
    start, end = parse_month(month)
    answer = []
    for project, records in _used_projects(actor, parse_group_ids(group_ids), start, end, now):
        total = _totals(records)
        answer.append({
            "domain_name": project.domain_id, "g_id": str(project.pk), "g_name": project.name,
            "g_cpu_allocated": total["cpu_allocated"], "g_mem_allocated": total["mem_allocated"],
            "g_gpu_allocated": total["gpu_allocated"], "g_cpu_used": total["cpu_used"],
            "g_mem_used": total["mem_used"], "g_io_read": total["io_read"], "g_io_write": total["io_write"],
            "g_device_type": total["device_type"], "g_smp": total["smp"], "c_infos": records,
        })
    return answer


def _session_entry(records: list[dict]) -> dict:
    first = records[0]
    return {
        "session_id": first["session_id"], "session_name": first["name"], "access_key": first["access_key"],
        "user_id": first["user_id"], "user_email": first["email"], "full_name": first["full_name"],
        "domain_name": first["domain_name"], "project_id": first["group_id"], "project_name": first["group_name"],
        "cluster_mode": first["cluster_mode"], "images": sorted({r["image_name"] for r in records}),
        "agents": sorted({r["agent"] for r in records if r["agent"]}),
        "kernel_ids": [r["id"] for r in records],
        "created_at": min(r["created_at"] for r in records),
        "scheduled_at": min((r["scheduled_at"] for r in records if r["scheduled_at"]), default=""),
        "terminated_at": "" if any(not r["terminated_at"] for r in records) else max(r["terminated_at"] for r in records),
        "used_days": max(r["used_days"] for r in records),
        "used_time": max((r["used_time"] for r in records), key=_seconds),
        "total_usage": _totals(records),
    }


def _seconds(text: str) -> int:
    days, _, clock = text.rpartition(", ")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return (int(days.split()[0]) if days else 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def usage_per_period(actor, start_date, end_date, group_ids, now=None) -> list[dict]:
    """Per project with sessions in the period (the end date included): ``total_usage`` and
    ``sessions`` (one record per session, its kernels summed)."""
    _require_admin(actor)
    start, end = parse_period(start_date, end_date)
    answer = []
    for project, records in _used_projects(actor, parse_group_ids(group_ids, "group_id"), start, end, now):
        sessions: dict[str, list[dict]] = {}
        for record in records:
            sessions.setdefault(record["session_id"], []).append(record)
        answer.append({
            "project_id": str(project.pk), "project_name": project.name, "domain_name": project.domain_id,
            "total_usage": _totals(records),
            "sessions": [_session_entry(kernels) for kernels in sessions.values()],
        })
    return answer


# --- recalculation --------------------------------------------------------------------------------

def recalculate_usage(actor) -> dict:
    """Superadmins: rewrite every agent's occupied slots from its live kernels (what the
    reconcilers do after a lost event) and count each keypair's concurrent sessions anew."""
    account_services.require_superadmin(actor, "recalculate the resource usage")
    changed = occupancy.recompute_agent_occupancy()
    keys = list(Keypair.objects.filter(is_active=True).values_list("access_key", flat=True))
    concurrency = account_hooks.concurrency_used(keys) or {}
    busy = sum(1 for n in concurrency.values() if n)
    log.info("%s recalculated the resource usage: %d agent(s) corrected, %d keypair(s) with sessions",
             actor, changed, busy)
    return {"agents_changed": changed, "keypairs_with_sessions": busy}
