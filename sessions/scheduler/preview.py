"""What the scheduler would decide now for one more request, read only.

``preview_request(group, keypair=..., owner=..., project=..., ...) -> Preview`` reads the
group's snapshot exactly as a pass reads it (``snapshot.load``), adds the
request's owner (keypair policy, user/project/domain limits, current usage and
live-session counts, pending sessions elsewhere when a pending limit applies)
and the request itself as a hypothetical PENDING session, last in the queue,
then runs the pass's own ``dispatcher.decide`` twice, in memory:

``Preview.alone``
    the request checked against the current usage only (no other pending
    session placed first): a predicate that fails here can only pass once the
    owner ends sessions or gets a new policy;
``Preview.queued``
    the pass as it would run now, with the request last (round-robin state as
    the pass would read it).

Nothing is written (no session, no occupancy, no round-robin state), and no lock
is taken.  The web launcher's "would start now / would wait / cannot start"
(``sessions.launch_check``) is built on it, so it cannot disagree with the pass.
Statements: the pass's snapshot (``snapshot.load``; the agents and occupancy
are read even without pending sessions), plus the owner's usage (one), plus
pending sessions elsewhere only when the owner's policy sets a pending limit.
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from django.db.models import Q
from django.utils import timezone

from backendai.services import known_slot_types
from backendai.slots import ResourceSlot
from sessions.lifecycle import CONCURRENCY_SESSION, OCCUPYING_SESSION, KernelStatus
from sessions.models import ClusterMode, Session
from sessions.scheduler import dispatcher, snapshot
from sessions.scheduler.slotspace import SlotSpace


@dataclass
class Preview:
    """The pass's view of one hypothetical request (see the module doc)."""

    snapshot: snapshot.RawSnapshot  # the group's snapshot, the request last in ``pending``
    candidate: snapshot.PendingSession
    space: SlotSpace
    alone: dispatcher.Decisions
    queued: dispatcher.Decisions

    @property
    def scheduled(self) -> bool:
        """The pass would place the request now."""
        return self.candidate.id in self.queued.scheduled

    @property
    def agents(self) -> list[str]:
        """The agents the pass would place the request's kernels on (main first), if scheduled."""
        return list(dict.fromkeys(k.agent_id for k in self.queued.kernels if k.session_id == self.candidate.id))

    @property
    def considered(self) -> bool:
        """False when the request is below the top priority band: the pass would not look at it."""
        return self._change(self.queued) is not None

    @property
    def higher_priority(self) -> int:
        """Pending sessions of the group with a higher priority than the request."""
        return sum(1 for s in self.snapshot.pending if s.priority > self.candidate.priority)

    @property
    def queued_ahead(self) -> int:
        """Pending sessions of the group before the request."""
        return len(self.snapshot.pending) - 1

    def failed_predicates(self, decisions: dispatcher.Decisions) -> list[dict]:
        """The predicates the request failed in ``decisions`` (``alone`` or ``queued``):
        ``[{"name": ..., "msg": ...}]`` as the pass writes them into ``status_data``."""
        return [p for p in self._block(decisions).get("failed_predicates") or [] if isinstance(p, dict)]

    def message(self, decisions: dispatcher.Decisions) -> str:
        """The pass's own message for the request (no agent with room, starts later...), or ""."""
        return str(self._block(decisions).get("msg") or "")

    def _change(self, decisions):
        return next((c for c in decisions.sessions if c.id == self.candidate.id), None)

    def _block(self, decisions) -> dict:
        change = self._change(decisions)
        return ((change.status_data or {}).get("scheduler") or {}) if change is not None else {}


def preview_request(group, *, keypair, owner, project, architecture: str, per_kernel: dict, cluster_size: int = 1,
            cluster_mode: str = ClusterMode.SINGLE_NODE, session_type: str = "interactive", priority: int = 10,
            designated=(), starts_at=None, name: str = "", slot_types: dict | None = None, now=None) -> Preview:
    """What a pass of ``group`` (a ``ScalingGroup``) would decide now for a request of
    ``cluster_size`` kernels of ``per_kernel`` slots each (a JSON slot map) by ``keypair``
    (its ``resource_policy`` loaded or loadable) of ``owner`` in ``project``.  ``slot_types``:
    the known slot types when the caller has read them already (saves a statement)."""
    now = now or timezone.now()
    slot_types = slot_types if slot_types is not None else known_slot_types()
    raw = snapshot.load(group.pk, with_group_usage=group.scheduler == "drf", slot_types=slot_types)
    if not raw.pending:  # ``load`` stops early without pending sessions: read the agents too
        raw.agents = snapshot.alive_agents(group.pk)
        raw.occupancy = snapshot._agent_occupancy(group.pk)
        raw.slot_types = slot_types
    _add_owner(raw, group.pk, keypair, owner, project)
    size = max(int(cluster_size or 1), 1)
    kernels = []
    for idx in range(size):
        role = "main" if idx == 0 else "sub"
        kernels.append(snapshot.PendingKernel(
            uuid.uuid4(), role, idx + 1 if role == "main" else idx, f"{role}{1 if role == 'main' else idx}",
            architecture, KernelStatus.PENDING, dict(per_kernel)))
    candidate = snapshot.PendingSession(
        id=uuid.uuid4(), name=name or "(new session)", created_at=now, priority=priority, session_type=session_type,
        cluster_mode=cluster_mode, designated=[str(a) for a in designated], access_key=keypair.access_key,
        user_id=owner.pk, project_id=project.pk, domain_id=project.domain_id, architecture=architecture,
        starts_at=starts_at, status_data={}, requested_raw=ResourceSlot.from_json(per_kernel).scale(size).to_json(),
        kernels=kernels)
    raw.pending.append(candidate)
    space = dispatcher.build_space(raw)
    alone = dispatcher.decide(dataclasses.replace(raw, pending=[candidate]), group_name=group.pk,
                              scheduler=group.scheduler, opts=group.opts, now=now)
    queued = dispatcher.decide(raw, group_name=group.pk, scheduler=group.scheduler, opts=group.opts, now=now,
                               rr_next=dispatcher._load_rr(group.pk, {a[2] for a in raw.agents}))
    return Preview(raw, candidate, space, alone, queued)


def _add_owner(raw: snapshot.RawSnapshot, group_name: str, keypair, owner, project) -> None:
    """The request owner's policies, usage and session counts, as the pass would read them."""
    policy = keypair.resource_policy
    raw.keypair_policies[keypair.access_key] = snapshot.KeypairPolicy(
        name=policy.name, total_resource_slots=policy.total_resource_slots or {},
        unlimited_for_unspecified=policy.default_for_unspecified != "LIMITED",
        max_concurrent_sessions=policy.max_concurrent_sessions,
        max_concurrent_sftp_sessions=policy.max_concurrent_sftp_sessions,
        max_pending_session_count=policy.max_pending_session_count,
        max_pending_session_resource_slots=policy.max_pending_session_resource_slots or None)
    main = keypair if owner.main_keypair_id == keypair.access_key else owner.main_keypair
    main_policy = main.resource_policy if main is not None else None
    raw.user_limits[owner.pk] = ((main_policy.total_resource_slots or {},
                                  main_policy.default_for_unspecified != "LIMITED")
                                 if main_policy is not None else ({}, True))
    raw.project_limits[project.pk] = project.total_resource_slots or {}
    raw.domain_limits[project.domain_id] = project.domain.total_resource_slots or {}
    usage, concurrency = _owner_usage(keypair.access_key, owner.pk, project.pk, project.domain_id)
    raw.usage.update(usage)
    raw.concurrency[keypair.access_key] = concurrency
    if policy.max_pending_session_count is not None or policy.max_pending_session_resource_slots:
        known = {row[0] for row in raw.pending_elsewhere}
        raw.pending_elsewhere.extend(row for row in snapshot._pending_elsewhere(group_name, {
            keypair.access_key: raw.keypair_policies[keypair.access_key]}) if row[0] not in known)


def _owner_usage(access_key: str, user_id, project_id, domain_id: str) -> tuple[dict, list]:
    """The slots held by the keypair, user, project and domain, and the keypair's live
    session counts ([regular, private]), as ``snapshot`` counts them (one statement)."""
    occupying = {str(s) for s in OCCUPYING_SESSION}
    totals = {("k", access_key): ResourceSlot(), ("u", user_id): ResourceSlot(),
              ("p", project_id): ResourceSlot(), ("d", domain_id): ResourceSlot()}
    counts = [0, 0]
    rows = (Session.objects.filter(status__in=[str(s) for s in CONCURRENCY_SESSION])
            .filter(Q(access_key_id=access_key) | Q(user_id=user_id) | Q(project_id=project_id)
                    | Q(domain_id=domain_id))
            .order_by().values_list("access_key_id", "user_id", "project_id", "domain_id", "session_type", "status",
                                    "requested_slots"))
    for row_key, row_user, row_project, row_domain, session_type, status, requested in rows:
        if row_key == access_key:
            counts[1 if session_type in snapshot.PRIVATE_SESSION_TYPES else 0] += 1
        if str(status) not in occupying or not isinstance(requested, dict):
            continue
        slots = ResourceSlot.from_json(requested)
        for key, matches in ((("k", access_key), row_key == access_key), (("u", user_id), row_user == user_id),
                             (("p", project_id), row_project == project_id),
                             (("d", domain_id), row_domain == domain_id)):
            if matches:
                totals[key] = totals[key] + slots
    return {key: dict(total.items()) for key, total in totals.items()}, counts


__all__ = ["Preview", "preview_request"]
