"""What the operators' pages of the web UI do (superadmins only): the agents with their
capacity and usage, bulk actions on agents (terminate their sessions, drain, mark
schedulable), the image catalogue, maintenance (recalculate usage, clear stuck sessions
after showing the reconciler's findings) and usage statistics over time.

Every function takes the acting user first and refuses anyone but a superadmin; the
changes go through the owning services (``agents.services``, ``sessions.services``,
``sessions.usage``, ``sessions.scheduler``).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from accounts.models import User
from accounts.services import require_superadmin
from agents import services as agent_services
from agents.models import Agent, Image, ImageType
from backendai.actions import audited
from backendai.api import errors
from backendai.slots import ResourceSlot, SlotError
from sessions import scheduler, services, usage, usage_buckets
from sessions.forms import format_amount, ordered_slots
from sessions.lifecycle import AGENT_OCCUPYING_KERNEL, DEAD_SESSION
from sessions.models import Kernel, Session

log = logging.getLogger(__name__)

MAX_AGENTS_PER_ACTION = 200
MAX_DAYS = 92


def _slots(value) -> ResourceSlot:
    try:
        return ResourceSlot.from_json(value or {})
    except SlotError:
        return ResourceSlot()


@dataclass(frozen=True)
class Gauge:
    slot: str
    used: str
    total: str
    used_value: float
    total_value: float
    over: bool

    @property
    def percent(self) -> int:
        return round(100 * self.used_value / self.total_value) if self.total_value else 0


def gauges(capacity: ResourceSlot, occupied: ResourceSlot) -> list[Gauge]:
    """One gauge per slot the agent offers or holds, cpu and mem first."""
    rows = []
    for slot in ordered_slots(dict.fromkeys([*capacity, *(k for k in occupied if k not in capacity)])):
        total, used = capacity.get(slot, Decimal(0)), occupied.get(slot, Decimal(0))
        if (total == 0 and used == 0) or total.is_infinite():
            continue
        rows.append(Gauge(slot, format_amount(slot, used), format_amount(slot, total), float(used), float(total),
                          used > total))
    return rows


@dataclass
class AgentRow:
    agent: Agent
    gauges: list[Gauge]
    kernels: int
    heartbeat_age: float | None


def agent_rows(actor, now=None) -> list[AgentRow]:
    """Every agent with its capacity/occupancy gauges and live kernel count (two queries)."""
    require_superadmin(actor, "see the agents")
    now = now or timezone.now()
    agents = list(Agent.objects.order_by("scaling_group_id", "id").only(
        "id", "status", "scaling_group_id", "schedulable", "available_slots", "occupied_slots", "architecture",
        "backend", "last_heartbeat", "addr", "version", "live_stat"))
    kernels = dict(Kernel.objects.filter(status__in=AGENT_OCCUPYING_KERNEL, agent__isnull=False)
                   .values_list("agent_id").annotate(n=Count("id")).values_list("agent_id", "n"))
    return [AgentRow(agent, gauges(_slots(agent.available_slots), _slots(agent.occupied_slots)),
                     kernels.get(agent.pk, 0),
                     (now - agent.last_heartbeat).total_seconds() if agent.last_heartbeat else None)
            for agent in agents]


AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _agents(agent_ids) -> list[Agent]:
    ids = [str(a) for a in agent_ids or [] if str(a).strip()]
    if not ids:
        raise errors.InvalidAPIParameters("Select at least one agent.")
    if len(ids) > MAX_AGENTS_PER_ACTION:
        raise errors.InvalidAPIParameters(f"Select at most {MAX_AGENTS_PER_ACTION} agents at once.")
    bad = [a for a in ids if not AGENT_ID.fullmatch(a)]
    if bad:
        raise errors.InvalidAPIParameters(f"{bad[0][:64]!r} is not an agent id.")
    agents = list(Agent.objects.filter(pk__in=ids))
    missing = sorted(set(ids) - {a.pk for a in agents})
    if missing:
        raise errors.object_not_found("agent", f"No agent {', '.join(missing[:5])}")
    return agents


def sessions_on(agent_ids) -> list[Session]:
    """The sessions with a kernel holding resources on one of the agents."""
    return list(Session.objects.filter(
        pk__in=Kernel.objects.filter(agent_id__in=list(agent_ids), status__in=AGENT_OCCUPYING_KERNEL)
        .values("session_id")).exclude(status__in=DEAD_SESSION).order_by("created_at"))


@audited("agent", "set-schedulable", "agent_ids")
def set_schedulable(actor, agent_ids, schedulable: bool) -> int:
    """Mark agents schedulable (or not: no new session is placed there)."""
    require_superadmin(actor, "change agents")
    agents = _agents(agent_ids)
    count = agent_services.set_schedulable(agents, schedulable)
    log.info("%s marked agent(s) %s %s", actor, ", ".join(a.pk for a in agents),
             "schedulable" if schedulable else "unschedulable")
    return count


@audited("agent", "drain", "agent_ids")
def drain(actor, agent_ids) -> dict:
    """Drain agents: no new session is placed there and the running ones finish in their own time."""
    require_superadmin(actor, "drain agents")
    agents = _agents(agent_ids)
    agent_services.set_schedulable(agents, False)
    running = len(sessions_on([a.pk for a in agents]))
    log.info("%s drains agent(s) %s (%d session(s) left to finish)", actor, ", ".join(a.pk for a in agents), running)
    return {"agents": len(agents), "sessions": running}


@audited("agent", "terminate-sessions", "agent_ids")
def terminate_sessions_on(actor, agent_ids, forced: bool = False) -> int:
    """Destroy every session that has a kernel on one of the agents (through ``services.destroy``)."""
    require_superadmin(actor, "terminate sessions on agents")
    agents = _agents(agent_ids)
    targets = sessions_on([a.pk for a in agents])
    for session in targets:
        services.destroy(actor, session, forced=forced)
    log.info("%s terminated %d session(s) on agent(s) %s%s", actor, len(targets), ", ".join(a.pk for a in agents),
             " (forced)" if forced else "")
    return len(targets)


# --- images ---------------------------------------------------------------------------------------

@dataclass
class ImageRow:
    image: Image
    limits: list[tuple[str, str, str]]  # (slot, min, max)


def image_rows(actor) -> list[ImageRow]:
    """Every compute image with the resource limits its labels give (one query)."""
    require_superadmin(actor, "see the image catalogue")
    rows = []
    for image in Image.objects.filter(type=ImageType.COMPUTE).order_by("name", "architecture"):
        limits = []
        resources = image.resources if isinstance(image.resources, dict) else {}
        for slot in ordered_slots(dict.fromkeys(resources)):
            spec = resources.get(slot) if isinstance(resources.get(slot), dict) else {}
            limits.append((slot, _limit(slot, spec.get("min")), _limit(slot, spec.get("max"))))
        rows.append(ImageRow(image, limits))
    return rows


def _limit(slot: str, value) -> str:
    if value in (None, ""):
        return "—"
    try:
        return format_amount(slot, _slots({slot: value}).get(slot, Decimal(0)))
    except (ArithmeticError, ValueError):
        return str(value)[:32]


@audited("image", "rescan")
def start_rescan(actor) -> str:
    """Rescan every registry as a background task; its id (``ui:task`` shows the progress)."""
    return agent_services.start_rescan(actor)


# --- maintenance ----------------------------------------------------------------------------------

def _timeouts() -> dict:
    return {"scheduled_timeout": settings.SESSION_SCHEDULED_TIMEOUT,
            "preparing_timeout": settings.SESSION_PREPARING_TIMEOUT,
            "terminating_timeout": settings.SESSION_TERMINATING_TIMEOUT,
            "lost_grace": settings.AGENT_LOST_GRACE}


KIND_TEXT = {
    "rescheduled": "goes back to the queue (its agent is lost before it started)",
    "failed_to_start": "is cancelled: it failed to start",
    "forced": "is ended: it hangs while terminating",
    "agent_lost": "goes to ERROR: its agent is lost",
}


def stuck_findings(actor, now=None) -> list[tuple[scheduler.Finding, str, str]]:
    """What the reconciler would do now, with the deployment's timeouts (nothing changes):
    (finding, what clearing does in words, the owner's email)."""
    require_superadmin(actor, "see stuck sessions")
    findings = scheduler.find_stuck(**_timeouts(), now=now)
    emails = dict(User.objects.filter(pk__in={f.session.user_id for f in findings}).values_list("pk", "email"))
    return [(f, KIND_TEXT.get(f.kind, f.kind), emails.get(f.session.user_id, "")) for f in findings]


@audited("session", "clear-stuck")
def clear_stuck(actor, now=None) -> scheduler.ReconcileResult:
    """Run the reconciler now (what the beat runs periodically)."""
    require_superadmin(actor, "clear stuck sessions")
    result = scheduler.reconcile_stuck(**_timeouts(), now=now)
    log.info("%s ran the reconciler: %s", actor, {k: len(v) for k, v in result.as_dict().items()
                                                  if isinstance(v, list)})
    return result


@audited("agent", "recalculate-usage")
def recalculate_usage(actor) -> dict:
    return usage.recalculate_usage(actor)


# --- usage statistics -----------------------------------------------------------------------------

UsageSeries = usage_buckets.UsageSeries
UsageReport = usage_buckets.UsageReport


def parse_period(start_text, end_text, today: date) -> tuple[date, date]:
    """The report's days (both included); empty: the last 14 days.  Refused: bad dates, end
    before start, more than ``MAX_DAYS`` days."""
    start, end = today - timedelta(days=13), today
    try:
        if start_text:
            start = date.fromisoformat(str(start_text)[:10])
        if end_text:
            end = date.fromisoformat(str(end_text)[:10])
    except ValueError:
        raise errors.InvalidAPIParameters("Give dates as YYYY-MM-DD.") from None
    if end < start:
        raise errors.InvalidAPIParameters("The end date is before the start date.")
    if (end - start).days + 1 > MAX_DAYS:
        raise errors.InvalidAPIParameters(f"Give at most {MAX_DAYS} days.")
    return start, end


def usage_statistics(actor, start: date, end: date, by: str = "user", now=None) -> UsageReport:
    """CPU core-hours per UTC day per user (or project, or resource group) over [start, end],
    from the daily usage buckets (``sessions.usage_buckets``): each kernel's allocation times
    the hours it held it within each day."""
    require_superadmin(actor, "see the usage statistics")
    return usage_buckets.usage_report(usage_buckets.scope_for(actor), start, end, by, now=now)


@dataclass(frozen=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    label: str
    value: float


CHART_HEIGHT = 160
BAR_WIDTH = 24
BAR_GAP = 8


def chart_bars(report: UsageReport) -> list[Bar]:
    """The chart's bars (SVG coordinates): one per day, its height the day's core-hours."""
    peak = report.peak or 1.0
    bars = []
    label = "%Y-%m" if getattr(report, "granularity", "day") == "month" else "%m-%d"
    for i, (day, value) in enumerate(zip(report.days, report.day_totals)):
        height = round(CHART_HEIGHT * value / peak) if value else 0
        bars.append(Bar(i * (BAR_WIDTH + BAR_GAP), CHART_HEIGHT - height, BAR_WIDTH, height,
                        day.strftime(label), value))
    return bars
