"""Before a session is queued: could it ever start, would it start now, and how
much may a user ask for?  Part of the sessions service layer, read only.

The web launcher (``sessions.views.session_create`` and its live hint) asks
three questions, and every answer comes from the scheduler's own code, run in
memory on the current state, so the launcher never says something the
scheduler would not do:

``bounds(...)``
    per slot, the least the image needs and the most a request may hold: the
    image's maximum, the largest ALIVE agent of the resource group and the
    owner's policy and remaining quota (``SlotBound.text``: "up to 6 cores
    (largest agent: 8, your policy: 6)").
``assess(actor, keypair, req)``
    the request resolved as ``enqueue`` resolves it (project, resource group,
    image, per-kernel slots), then

    1. *refused* when it can never run here: bigger than every agent of the
       group, or failing one of the owner's limits that only ending sessions or
       a new policy could change (the scheduler's predicates: concurrency,
       pending limits, keypair/user/project/domain resource limits) checked
       against the current usage alone;
    2. otherwise the scheduler's public read-only ``preview_request`` (its own
       snapshot and ``decide``, ``sessions.scheduler.preview``) runs with the
       request appended as a hypothetical pending session: *start* (on which
       agent(s)) when the pass would place it, *wait* with the scheduler's own
       reason when it would not (no agent with enough free capacity, sessions
       queued ahead, a reserved start time).

Nothing is written: the snapshot is read, ``decide`` works in memory, and no
folder is touched (mounts do not change where a session can start).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from decimal import Decimal

from django.utils import timezone

from accounts.models import Keypair, User
from agents import services as agent_services
from agents.models import Agent, AgentStatus, ScalingGroup
from backendai import services as manager_services
from backendai.slots import ResourceSlot, SlotError, humanize_binary_size, parse_binary_size, slot_type_of
from sessions import enqueue as enqueue_service
from sessions import scheduler, validation
from sessions.models import ClusterMode
from sessions.scheduler.slotspace import SlotSpace, fits

log = logging.getLogger(__name__)

START, WAIT, REFUSE = "start", "wait", "refuse"
#: Predicates whose failure, checked against the current usage alone, means the
#: request cannot start until the owner ends sessions or gets a new policy.
REFUSING_PREDICATES = {
    "concurrency": None,  # shown above the form
    "pending_session_count_limit": None,
    "pending_session_resource_limit": "preset",
    "keypair_resource_limit": "preset",
    "user_resource_limit": "preset",
    "user_group_resource_limit": "preset",
    "domain_resource_limit": "preset",
}
UNITS = {"cpu": ("core", "cores"), "cuda.device": ("GPU", "GPUs"), "cuda.shares": ("GPU share", "GPU shares")}


# --- bounds --------------------------------------------------------------------------------------

@dataclass
class SlotBound:
    """What one slot of one kernel may be: ``minimum``/``maximum`` (None: no bound)."""

    slot: str
    kind: str  # "count" or "bytes"
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    #: (what, amount) that make the maximum, e.g. ("largest agent", 8), in the order shown
    limits: list = field(default_factory=list)

    def shown(self, amount) -> str:
        amount = Decimal(amount)
        if self.kind == "bytes":
            return humanize_binary_size(max(amount, Decimal(0)))
        text = format(amount.normalize(), "f") if amount != amount.to_integral() else str(int(amount))
        return text

    def with_unit(self, amount) -> str:
        text = self.shown(amount)
        if self.kind == "bytes":
            return text
        one, many = UNITS.get(self.slot, ("", ""))
        if not one:
            return text
        return f"{text} {one if Decimal(amount) == 1 else many}"

    @property
    def input_min(self) -> str:
        """The ``min`` attribute of a count input ("" when the image asks for nothing)."""
        return self.shown(self.minimum) if self.minimum is not None and self.kind != "bytes" else ""

    @property
    def input_max(self) -> str:
        return self.shown(self.maximum) if self.maximum is not None and self.kind != "bytes" else ""

    @property
    def text(self) -> str:
        """"at least 1 core, up to 6 cores (largest agent: 8, your policy: 6)" for people."""
        parts = []
        if self.minimum is not None and self.minimum > 0:
            parts.append(f"at least {self.with_unit(self.minimum)}")
        if self.maximum is not None:
            why = ", ".join(f"{what}: {self.shown(amount) if amount is not None else 'none'}"
                            for what, amount in self.limits)
            parts.append(f"up to {self.with_unit(self.maximum)}" + (f" ({why})" if why else ""))
        return ", ".join(parts) if parts else "no limit known"


def largest_agent(group_name: str | None) -> tuple[int, dict]:
    """(number of ALIVE schedulable agents, per slot the largest capacity among them) in a group (one query)."""
    if not group_name:
        return 0, {}
    count, largest = 0, {}
    for available in Agent.objects.filter(scaling_group_id=group_name, status=AgentStatus.ALIVE,
                                          schedulable=True).values_list("available_slots", flat=True):
        count += 1
        for slot, amount in ResourceSlot.from_json(available or {}).items():
            if amount > largest.get(slot, Decimal(-1)):
                largest[slot] = amount
    return count, largest


def bounds(slots: list[str], slot_types: dict, *, image=None, group_name: str | None = None,
           policy_limits: dict | None = None, remaining: dict | None = None, cluster_size: int = 1,
           cluster_mode: str = ClusterMode.SINGLE_NODE) -> dict[str, SlotBound]:
    """Per slot the bounds of one kernel's request.  ``policy_limits``/``remaining`` are
    ``check_presets``' keypair limits and remaining quota (JSON slot maps); the quota is
    shared by the ``cluster_size`` kernels, and so is one agent in single-node mode."""
    size = max(int(cluster_size or 1), 1)
    agents, largest = largest_agent(group_name)
    image_limits = (image.resources or {}) if image is not None else {}
    result = {}
    for slot in slots:
        kind = slot_type_of(slot, slot_types)
        bound = SlotBound(slot, kind)
        spec = image_limits.get(slot) or {}
        if spec.get("min") not in (None, ""):
            bound.minimum = Decimal(str(spec["min"]))
        if slot == "mem" and image is not None:  # enqueue's rule: the image's minimum plus shared memory
            bound.minimum = (bound.minimum or Decimal(0)) + _shmem(image)
        candidates = []
        if spec.get("max") not in (None, ""):
            candidates.append(("image", Decimal(str(spec["max"]))))
        if agents:
            per_kernel = largest.get(slot, Decimal(0))
            if cluster_mode != ClusterMode.MULTI_NODE and size > 1:
                per_kernel = per_kernel / size
                candidates.append((f"largest agent / {size} kernels", _floor(per_kernel, kind)))
            else:
                candidates.append(("largest agent", per_kernel))
        for what, mapping in (("your policy", policy_limits), ("left in your quota", remaining)):
            amount = Decimal(str((mapping or {}).get(slot, "Infinity")))
            if amount.is_finite():
                amount = max(amount, Decimal(0))
                candidates.append((what if size == 1 else f"{what} / {size} kernels", _floor(amount / size, kind)))
        finite = [c for c in candidates if c[1] is not None]
        if finite:
            bound.maximum = min(amount for _, amount in finite)
            bound.limits = finite
        result[slot] = bound
    return result


def image_range(image, slot_types: dict) -> str:
    """What an image takes, for people: "cpu 1 to 16 · mem at least 320 MiB (64 MiB of it
    shared memory)" (the minimum memory counts shared memory, as ``enqueue`` does)."""
    parts = []
    limits = image.resources or {}
    for slot in sorted(set(limits) | {"mem"}, key=lambda s: (s not in ("cpu", "mem"), s != "cpu", s)):
        spec = limits.get(slot) or {}
        bound = SlotBound(slot, slot_type_of(slot, slot_types))
        low = Decimal(str(spec["min"])) if spec.get("min") not in (None, "") else None
        if slot == "mem":
            low = (low or Decimal(0)) + _shmem(image)
        high = Decimal(str(spec["max"])) if spec.get("max") not in (None, "") else None
        if low is not None and high is not None:
            text = f"{slot} {bound.shown(low)} to {bound.shown(high)}"
        elif low is not None:
            text = f"{slot} at least {bound.shown(low)}"
        elif high is not None:
            text = f"{slot} at most {bound.shown(high)}"
        else:
            continue
        if slot == "mem":
            text += f" ({bound.shown(_shmem(image))} of it shared memory)"
        parts.append(text)
    return " · ".join(parts)


def _shmem(image) -> Decimal:
    raw = (image.labels or {}).get("ai.backend.resource.preferred.shmem")
    try:
        return parse_binary_size(raw) if raw else enqueue_service.DEFAULT_SHMEM
    except (SlotError, ArithmeticError):
        return enqueue_service.DEFAULT_SHMEM


def _floor(amount: Decimal, kind: str) -> Decimal:
    if kind == "bytes":
        return Decimal(int(amount))
    return amount.quantize(Decimal("0.001"), rounding="ROUND_FLOOR").normalize()


# --- assessing one request ---------------------------------------------------------------------

@dataclass
class Assessment:
    verdict: str  # START, WAIT or REFUSE
    reasons: list[str] = field(default_factory=list)
    #: for REFUSE: [(form field or None, message)]
    refusals: list = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    group: str = ""
    request: str = ""  # the per-session request, for people

    @property
    def text(self) -> str:
        if self.verdict == START:
            return f"This would start now on {', '.join(self.agents)} (resource group {self.group})."
        if self.verdict == WAIT:
            return "This would wait because " + "; ".join(self.reasons) + "."
        return "This cannot start: " + "; ".join(message for _, message in self.refusals)


@dataclass
class Resolved:
    """A create request resolved the way ``enqueue`` resolves it."""

    keypair: Keypair
    owner: User
    project: object
    group: ScalingGroup
    image: object
    per_kernel: ResourceSlot
    total: ResourceSlot
    designated: list
    starts_at: object


@dataclass
class Known:
    """What the caller resolved already in this request, the way ``enqueue`` resolves it
    (the launcher's form): reused only where it is exactly what ``enqueue`` would find.

    ``project``: one of the actor's active projects (``user.projects``, so a member);
    used when the request names it, in the actor's domain, for the actor's own keypair.
    ``image``: ``(reference, architecture, domain name, Image)`` from
    ``agents.services.resolve_image(reference, architecture, domain=...)``; used for the
    same reference, architecture and project domain."""

    slot_types: dict | None = None
    project: object = None
    image: tuple | None = None


def resolve(actor: User, actor_keypair: Keypair | None, req: enqueue_service.EnqueueRequest, *,
            known: Known | None = None) -> Resolved:
    """The project, resource group, image and slots ``enqueue`` would use; raises the same
    ``BackendAIError`` it raises (nothing is written).  ``known``: what the caller already
    resolved in this request (not read again)."""
    known = known or Known()
    req = validation.clean_request(req)
    keypair = enqueue_service.owner_keypair(actor, actor_keypair, req.owner_access_key)
    owner = actor if keypair.user_id == actor.pk else keypair.user  # the actor's own keypair: no second read
    project = known.project
    if not (project is not None and owner is actor and project.is_active and project.name == req.group
            and project.domain_id == req.domain == owner.domain_id):
        project = enqueue_service.choose_project(owner, req.group, req.domain)
    group = enqueue_service.choose_scaling_group(owner, project, req.scaling_group, req.session_type)
    if known.image is not None and known.image[:3] == (req.image, req.architecture, project.domain_id):
        image = known.image[3]
    else:
        image = agent_services.resolve_image(req.image, req.architecture, domain=project.domain)
    agent_services.check_customized_image_owner(image, owner)
    slot_types = known.slot_types if known.slot_types is not None else manager_services.known_slot_types()
    per_kernel, _opts = enqueue_service.compute_request(image, req.resources, req.resource_opts, slot_types)
    starts_at = enqueue_service.parse_starts_at(req.starts_at, timezone.now()) if req.starts_at else None
    designated = ([str(a) for a in req.agent_list] if req.agent_list and actor.is_superadmin
                  else agent_services.committed_image_agents(image, group))
    return Resolved(keypair, owner, project, group, image, per_kernel, per_kernel.scale(req.cluster_size),
                    designated, starts_at)


def assess(actor: User, actor_keypair: Keypair | None, req: enqueue_service.EnqueueRequest, *,
           known: Known | None = None) -> Assessment:
    """Refuse, start or wait (see the module doc); raises ``BackendAIError`` for a request
    ``enqueue`` would refuse outright (unknown image, group not allowed, image minimum...).
    ``known``: the slot types, project and image the caller read already in this request
    (the launcher's form has): they are then not read again."""
    result = _assess(actor, actor_keypair, req, known or Known())
    log.debug("launch check for user %s (image %s, group %s, %s): %s", actor.pk, req.image, result.group,
              result.request, result.text)
    return result


def _assess(actor: User, actor_keypair: Keypair | None, req: enqueue_service.EnqueueRequest,
            known: Known) -> Assessment:
    slot_types = known.slot_types if known.slot_types is not None else manager_services.known_slot_types()
    resolved = resolve(actor, actor_keypair, req, known=dataclasses.replace(known, slot_types=slot_types))
    enqueue_service.check_absolute_limits(resolved.keypair, resolved.project, resolved.total, slot_types)
    group = resolved.group
    # the scheduler's own snapshot and decisions, the request appended last (nothing written)
    seen = scheduler.preview_request(
        group, keypair=resolved.keypair, owner=resolved.owner, project=resolved.project,
        architecture=resolved.image.architecture, per_kernel=resolved.per_kernel.to_json(),
        cluster_size=req.cluster_size, cluster_mode=req.cluster_mode, session_type=req.session_type,
        priority=req.priority, designated=resolved.designated, starts_at=resolved.starts_at, name=req.name or "",
        slot_types=slot_types)
    space = seen.space
    shown = space.describe(space.vector(resolved.total.to_json()))
    result = Assessment(WAIT, group=group.pk, request=shown)

    too_big = _too_big(seen.snapshot.agents, space, resolved, req, group.pk)
    if too_big:
        result.verdict, result.refusals = REFUSE, [("preset", too_big)]
        return result

    # 1. the owner's limits against the current usage alone (no other pending session placed first)
    refusals = [(REFUSING_PREDICATES[p["name"]], p["msg"]) for p in seen.failed_predicates(seen.alone)
                if p.get("name") in REFUSING_PREDICATES]
    if refusals:
        result.verdict, result.refusals = REFUSE, refusals
        return result

    # 2. the real queue: the pass as it would run now, with this request last in
    if seen.scheduled:
        result.verdict = START
        result.agents = seen.agents
        return result
    if not seen.considered:  # not in the top priority band: the pass does not even look at it
        result.reasons = [f"{seen.higher_priority} session(s) of a higher priority are queued in resource group "
                          f"{group.pk}"]
        return result
    failed = seen.failed_predicates(seen.queued)
    reasons = [p.get("msg") or p.get("name") for p in failed]
    if seen.message(seen.queued):
        reasons.append(seen.message(seen.queued))
    if seen.queued_ahead and not failed:
        reasons.append(f"{seen.queued_ahead} session(s) queued ahead in resource group {group.pk} come first")
    result.reasons = reasons or ["the scheduler would not place it now"]
    return result


def _too_big(group_agents: list, space: SlotSpace, resolved: Resolved, req, group_name: str) -> str:
    """Why no ALIVE schedulable agent of the group could ever hold the request ("" if one could,
    or if no agent of the architecture is up: then it waits for one)."""
    arch = resolved.image.architecture
    agents = [(agent_id, space.vector(available or {})) for agent_id, _addr, agent_arch, available, schedulable
              in group_agents if schedulable and agent_arch == arch and isinstance(available, dict)]
    if not agents:
        return ""
    if req.cluster_mode == ClusterMode.MULTI_NODE:
        need = space.vector(resolved.per_kernel.to_json())
        what = "each kernel's"
    else:
        need = space.vector(resolved.total.to_json())
        what = "the"
    if any(fits(need, capacity) for _, capacity in agents):
        return ""
    largest = [max(capacity[d] for _, capacity in agents) for d in range(len(space))]
    over = [d for d, amount in enumerate(need) if amount > largest[d]]
    details = ", ".join(f"{space.names[d]} {space.format_amount(d, need[d])} asked, the largest agent has "
                        f"{space.format_amount(d, largest[d])}" for d in over)
    if not details:
        details = f"no single agent has all of {space.describe(need)}"
    return (f"No agent in resource group {group_name} is big enough for {what} request ({details}); "
            "it would never start, so it is not queued.")


__all__ = ["Assessment", "Known", "REFUSE", "START", "SlotBound", "WAIT", "assess", "bounds", "image_range",
           "largest_agent", "resolve"]
