"""What the sessions app adds to a user's dashboard and settings (registered in
``SessionsConfig.ready`` through ``accounts.hooks``; accounts never imports sessions).

``dashboard_parts(user)`` gives, in a fixed number of queries whatever the user owns:

* ``running``: the user's live sessions (newest first, at most ``RUNNING_LIMIT``), each with
  ``.usage``, its ``sessions.live_usage.LiveUsage``, and ``running_total``;
* ``quota``: ``Gauge`` rows of the main keypair's limits: concurrent sessions, each slot of its
  policy (in use by its occupying sessions), and the user's folders against ``max_vfolder_count``;
* ``capacity``: per resource group (every active one for a superadmin, else the ones the user
  may use) the free and total CPU, memory and GPU of its alive, schedulable agents;
* ``events``: the latest ``EVENT_LIMIT`` status changes of the user's sessions, newest first.

``user_choices(user)`` names the presets and resource groups the user may pick as defaults."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from accounts.services.dashboard import Gauge, slot_gauge, slot_order
from agents import services as agent_services
from agents.models import ScalingGroup
from backendai import services as manager_services
from backendai.slots import INFINITY, ResourceSlot, SlotError
from sessions import live_usage
from sessions import presets as presets_module
from sessions.lifecycle import CONCURRENCY_SESSION, LIVE_SESSION, OCCUPYING_SESSION, SessionStatus
from sessions.models import Session
from vfolders.models import OwnershipType, VFolder, VFolderStatus

log = logging.getLogger(__name__)

RUNNING_LIMIT = 20
EVENT_LIMIT = 10
#: The sessions whose histories feed the events list: the ones that changed most recently.
EVENT_SESSIONS = 20
GPU_SLOTS = ("cuda.device", "cuda.shares", "rocm.device", "tpu.device")

S = SessionStatus
EVENT_TEXT = {
    S.PENDING: "queued", S.SCHEDULED: "scheduled on an agent", S.PULLING: "pulling its image",
    S.PREPARING: "preparing", S.RUNNING: "started", S.RESTARTING: "restarting",
    S.RUNNING_DEGRADED: "running degraded", S.TERMINATING: "terminating", S.TERMINATED: "ended",
    S.CANCELLED: "cancelled", S.ERROR: "failed",
}
ENDING = frozenset({S.TERMINATING, S.TERMINATED, S.CANCELLED, S.ERROR})


@dataclass(frozen=True)
class SessionEvent:
    when: datetime
    session_id: object
    session_name: str
    status: str
    text: str  # what happened, for people ("started", "ended: idle-timeout")


@dataclass(frozen=True)
class GroupCapacity:
    name: str
    agents: int
    gauges: tuple[Gauge, ...]  # used (occupied) against total; free = total - used


def _running(user) -> tuple[list[Session], int]:
    query = Session.objects.filter(user=user, status__in=LIVE_SESSION)
    rows = list(query.order_by("-created_at").only(
        "id", "name", "status", "session_type", "image", "scaling_group_id", "created_at", "occupying_slots")
        [:RUNNING_LIMIT + 1])
    total = len(rows) if len(rows) <= RUNNING_LIMIT else query.count()
    rows = rows[:RUNNING_LIMIT]
    usage = live_usage.session_usage([s.pk for s in rows])
    for session in rows:
        session.usage = usage.get(session.pk, live_usage.EMPTY)
    return rows, total


def _slots_in_use(access_key: str, slot_types: dict) -> ResourceSlot:
    total = ResourceSlot()
    for slots in Session.objects.filter(access_key_id=access_key, status__in=OCCUPYING_SESSION).values_list(
            "occupying_slots", "requested_slots"):
        try:
            total = total + ResourceSlot.from_json(slots[0] or slots[1], slot_types)
        except SlotError as exc:
            log.warning("dashboard: malformed slots of a session of %s: %s", access_key, exc)
    return total


def _quota(user, slot_types: dict) -> list[Gauge]:
    gauges = []
    keypair = user.main_keypair
    policy = keypair.resource_policy if keypair else None
    if policy is not None:
        concurrent = Session.objects.filter(access_key_id=keypair.pk, status__in=CONCURRENCY_SESSION).count()
        gauges.append(Gauge("sessions", "Concurrent sessions", concurrent, policy.max_concurrent_sessions))
        try:
            limits = ResourceSlot.from_policy(policy.total_resource_slots, policy.default_for_unspecified, slot_types)
        except SlotError as exc:
            log.warning("dashboard: keypair policy %s has malformed slots: %s", policy.name, exc)
            limits = ResourceSlot()
        using = _slots_in_use(keypair.pk, slot_types)
        shown = {n for n in limits if not limits[n].is_infinite() or n in ("cpu", "mem")} | set(using)
        for name in slot_order(shown):
            gauges.append(slot_gauge(name, using.get(name, Decimal(0)), limits.get(name, INFINITY), slot_types))
    folders = VFolder.objects.filter(user_id=user.pk, ownership_type=OwnershipType.USER).exclude(
        status=VFolderStatus.DELETE_COMPLETE).count()
    max_folders = user.resource_policy.max_vfolder_count if user.resource_policy_id else 0
    gauges.append(Gauge("folders", "Folders", folders, max_folders or None))
    return gauges


def _capacity(user, slot_types: dict) -> list[GroupCapacity]:
    if user.is_superadmin:
        groups = list(ScalingGroup.objects.filter(is_active=True).order_by("name"))
    else:
        groups = sorted(agent_services.allowed_scaling_groups(user), key=lambda g: g.name)
    shown = []
    for row in agent_services.group_capacity(groups):
        capacity, occupied = row["capacity"], row["occupied"]
        gauges = [slot_gauge(name, occupied.get(name, Decimal(0)), capacity.get(name, Decimal(0)), slot_types)
                  for name in ("cpu", "mem")]
        gauges += [slot_gauge(name, occupied.get(name, Decimal(0)), capacity[name], slot_types)
                   for name in GPU_SLOTS if capacity.get(name)]
        shown.append(GroupCapacity(row["group"].name, row["agents"], tuple(gauges)))
    return shown


def _events(user) -> list[SessionEvent]:
    sessions = Session.objects.filter(user=user, status_changed__isnull=False).order_by("-status_changed").only(
        "id", "name", "status", "status_info", "status_history")[:EVENT_SESSIONS]
    events = []
    for session in sessions:
        history = session.status_history or []
        for index, entry in enumerate(history):
            try:
                when = datetime.fromisoformat(entry["timestamp"])
                status = str(entry["status"])
            except (KeyError, TypeError, ValueError):
                continue
            text = EVENT_TEXT.get(status, status)
            last = index == len(history) - 1
            if last and session.status_info and status in ENDING:
                text = f"{text}: {session.status_info}"
            events.append((when, index, SessionEvent(when, session.pk, session.name, status, text)))
    events.sort(key=lambda e: (e[0], e[1]), reverse=True)  # newest first; a session's later step first on a tie
    return [event for _, _, event in events[:EVENT_LIMIT]]


def dashboard_parts(user) -> dict:
    slot_types = manager_services.known_slot_types()
    running, running_total = _running(user)
    return {
        "running": running,
        "running_total": running_total,
        "running_limit": RUNNING_LIMIT,
        "quota": _quota(user, slot_types),
        "capacity": _capacity(user, slot_types),
        "capacity_scope": "cluster" if user.is_superadmin else "groups",
        "events": _events(user),
    }


def user_choices(user) -> dict[str, list[str]]:
    """The presets the user sees (``sessions.presets.visible_presets``) and the resource
    groups the user may use (``agents.services.allowed_scaling_groups``)."""
    groups = agent_services.allowed_scaling_groups(user).order_by("name").values_list("name", flat=True)
    presets = presets_module.visible_presets(user).values_list("name", flat=True)
    return {"presets": list(presets), "resource_groups": list(groups)}
