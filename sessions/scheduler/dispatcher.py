"""The scheduling pass of one scaling group (DESIGN §4.2, reference §3.1).

``run_pass(name)``:

1. opens a transaction and takes the group's advisory lock (a concurrent pass
   for the same group returns at once, ``skipped="locked"``);
2. reads the snapshot (``snapshot.load``: a constant number of statements);
3. decides in memory (``decide``): pending timeout, top priority band,
   sequencer, predicates, agent selection and placement, with the in-memory
   state updated after every placement;
4. writes every decision back set-based (``writer.write``: one COPY into a
   temporary table and one guarded ``UPDATE ... FROM``) and recomputes the
   touched agents' occupancy in one more statement;
5. after commit, pokes the agents that received kernels.
"""
from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from agents import services as agent_services
from agents.models import ScalingGroup
from backendai import telemetry
from sessions import occupancy
from sessions.lifecycle import KernelStatus, SessionStatus, history_entry
from sessions.models import Session
from sessions.scheduler import locks, metrics, sequencers, snapshot, writer
from sessions.scheduler.predicates import Limits, PendingQueue, State
from sessions.scheduler.selectors import AgentPool, AgentSlot
from sessions.scheduler.slotspace import DEFAULT_RESOURCE_PRIORITY, SlotSpace, add, sub

log = logging.getLogger(__name__)

LOCK_NAMESPACE = "schedule"
RR_CACHE_KEY = "bai:scheduler:rr:{group}:{arch}"

INFO_PREDICATES = "predicate-checks-failed"
INFO_NO_AGENT = "no-available-instances"
INFO_ERROR = "scheduler-error"
INFO_TIMEOUT = "pending-timeout"
INFO_SCHEDULED = "scheduled"


@dataclass
class PassResult:
    """What one pass did.  Ids are session UUIDs."""

    scaling_group: str
    skipped: str | None = None  # "locked" | "no-such-group" | None
    scheduled: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)  # id -> status_info (still PENDING)
    cancelled: dict = field(default_factory=dict)  # id -> status_info (now CANCELLED)
    lost: list = field(default_factory=list)  # decided, but changed by someone else before the write
    agents: list = field(default_factory=list)  # agents that received kernels
    considered: int = 0  # pending sessions read
    duration: float = 0.0
    statements: int = 0
    stages: dict = field(default_factory=dict)  # seconds per stage: snapshot, decide, write, occupancy

    @property
    def decisions(self) -> int:
        return len(self.scheduled) + len(self.failed) + len(self.cancelled)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["scheduled"] = [str(i) for i in self.scheduled]
        data["failed"] = {str(k): v for k, v in self.failed.items()}
        data["cancelled"] = {str(k): v for k, v in self.cancelled.items()}
        data["lost"] = [str(i) for i in self.lost]
        return data


@dataclass
class Decisions:
    sessions: list = field(default_factory=list)  # writer.SessionChange
    kernels: list = field(default_factory=list)  # writer.KernelChange
    scheduled: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    cancelled: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=lambda: {
        "scheduled": 0, "predicate_failed": 0, "no_agent": 0, "cancelled": 0, "error": 0})
    rr_next: dict = field(default_factory=dict)
    rr_changed: set = field(default_factory=set)


class _StatementCounter:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


# --- entry points -------------------------------------------------------------------------------

def run_pass(scaling_group_name: str, *, now=None) -> PassResult:
    """Schedule the pending sessions of one scaling group; see the module doc."""
    started = time.monotonic()
    counter = _StatementCounter()
    try:
        with connection.execute_wrapper(counter):
            result = _run(scaling_group_name, now or timezone.now())
    except Exception:
        metrics.record("schedule", "failure", time.monotonic() - started)
        log.exception("scheduling pass of %s failed", scaling_group_name)
        raise
    result.duration = time.monotonic() - started
    result.statements = counter.count
    metrics.record("schedule", "skipped" if result.skipped else "success", result.duration)
    if not result.skipped and result.considered:
        log.info("pass %s: %d scheduled, %d waiting, %d cancelled, %d lost in %.3f s (%d statements)",
                 scaling_group_name, len(result.scheduled), len(result.failed), len(result.cancelled),
                 len(result.lost), result.duration, result.statements)
    return result


def run_all_passes(*, now=None) -> list[PassResult]:
    """One pass for every scaling group that has pending sessions."""
    names = sorted(
        Session.objects.filter(status=SessionStatus.PENDING, scaling_group__isnull=False)
        .order_by().values_list("scaling_group_id", flat=True).distinct()
    )
    return [run_pass(name, now=now) for name in names]


def _run(name: str, now) -> PassResult:
    result = PassResult(scaling_group=name)
    with locks.process_lock(LOCK_NAMESPACE, name) as got_process_lock:
        if not got_process_lock:
            result.skipped = "locked"
            return result
        with transaction.atomic():
            if not locks.try_xact_lock(LOCK_NAMESPACE, name):
                result.skipped = "locked"
                return result
            group = ScalingGroup.objects.filter(pk=name).first()
            if group is None:
                result.skipped = "no-such-group"
                return result
            opts = group.opts
            with _gc_paused():
                with _stage(result, "snapshot"):
                    raw = snapshot.load(name, with_group_usage=group.scheduler == "drf")
                result.considered = len(raw.pending)
                if not raw.pending:
                    return result
                rr_next = _load_rr(name, {a[2] for a in raw.agents})
                with _stage(result, "decide"):
                    decided = decide(raw, group_name=name, scheduler=group.scheduler, opts=opts, now=now,
                                     rr_next=rr_next)
                with _stage(result, "write"):
                    written = writer.write(decided.sessions, decided.kernels, now)
            touched = sorted({a for a in written.kernels.values() if a})
            if touched:
                with _stage(result, "occupancy"):
                    occupancy.rewrite_occupancy(touched)
            result.scheduled = [s for s in decided.scheduled if s in written.sessions]
            result.failed = {s: v for s, v in decided.failed.items() if s in written.sessions}
            result.cancelled = {s: v for s, v in decided.cancelled.items() if s in written.sessions}
            result.lost = [c.id for c in decided.sessions if c.id not in written.sessions]
            result.agents = touched
            outcomes = dict(decided.outcomes)
            if result.lost:
                outcomes["lost"] = len(result.lost)
            metrics.decisions(outcomes)
            _save_rr(name, decided)
            if touched:
                transaction.on_commit(lambda: poke_agents(touched))
    return result


def poke_agents(agent_ids: list[str]) -> None:
    """Hint agents to sync now (best effort).  Uses ``agents.services.poke_agents``
    when the agents app offers a batch call; otherwise sends the same
    ``agent.poke`` message ``agents.services.poke_agent`` sends, to every agent's
    group in a single event-loop round trip (one ``async_to_sync`` per agent
    costs ~0.7 ms: 0.7 s for a pass that fills 1 000 agents)."""
    batch = getattr(agent_services, "poke_agents", None)
    if batch is not None:
        batch(agent_ids)
        return

    layer = get_channel_layer()
    if layer is None:
        return

    async def send_all():
        await asyncio.gather(
            *(layer.group_send(agent_services.agent_group(a), {"type": "agent.poke"}) for a in agent_ids),
            return_exceptions=True,
        )

    try:
        async_to_sync(send_all)()
    except Exception as exc:  # noqa: BLE001 - a lost hint is harmless: agents sync on a timer
        log.debug("could not poke agents: %s", exc)


@contextmanager
def _stage(result: PassResult, name: str):
    """A stage of the pass: observed by the telemetry and kept in ``result.stages``."""
    started = time.perf_counter()
    try:
        with telemetry.stage(name):
            yield
    finally:
        result.stages[name] = time.perf_counter() - started


@contextmanager
def _gc_paused():
    """The snapshot and the decisions allocate hundreds of thousands of small,
    acyclic objects; the cyclic collector's full passes over them cost a third
    of the decision time and find nothing.  Reference counting still frees them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _cache_layer() -> str:
    """The cache's layer label for ``backendai_layer_operation_*``: Redis in production, else memory."""
    return "redis" if settings.REDIS_URL else "memory"


def _load_rr(group: str, archs: set) -> dict:
    keys = {RR_CACHE_KEY.format(group=group, arch=a): a for a in archs}
    try:
        with telemetry.layer_operation(_cache_layer(), "cache_get_many"):
            stored = cache.get_many(list(keys))
    except Exception as exc:  # noqa: BLE001 - a lost hint only restarts the rotation
        log.debug("round-robin state unavailable: %s", exc)
        return {}
    return {keys[k]: int(v) for k, v in stored.items()}


def _save_rr(group: str, decided: Decisions) -> None:
    if not decided.rr_changed:
        return
    try:
        with telemetry.layer_operation(_cache_layer(), "cache_set_many"):
            cache.set_many({RR_CACHE_KEY.format(group=group, arch=a): decided.rr_next[a] for a in decided.rr_changed},
                           timeout=None)
    except Exception as exc:  # noqa: BLE001
        log.debug("could not store round-robin state: %s", exc)


# --- deciding -------------------------------------------------------------------------------------

def build_space(raw: snapshot.RawSnapshot) -> SlotSpace:
    names: set = set(raw.slot_types)
    for agent in raw.agents:
        names.update(agent[3] or {})
    for slots in raw.occupancy.values():
        names.update(slots)
    for slots in raw.usage.values():
        names.update(slots)
    for session in raw.pending:
        names.update(session.requested_raw)
        for kernel in session.kernels:
            names.update(kernel.requested_raw)
    for policy in raw.keypair_policies.values():
        names.update(policy.total_resource_slots or {})
        names.update(policy.max_pending_session_resource_slots or {})
    for total, _ in raw.user_limits.values():
        names.update(total or {})
    for total in (*raw.project_limits.values(), *raw.domain_limits.values()):
        names.update(total or {})
    for _id, _ak, _created, requested in raw.pending_elsewhere:
        names.update(requested or {})
    names = {n for n in names if isinstance(n, str)}
    return SlotSpace(names, raw.slot_types)


def _vector_or_none(space: SlotSpace, mapping):
    try:
        return space.vector(mapping if isinstance(mapping, dict) else {})
    except (ValueError, KeyError) as exc:
        log.warning("ignoring malformed slots %r: %s", mapping, exc)
        return None


def decide(raw: snapshot.RawSnapshot, *, group_name: str, scheduler: str, opts: dict, now,
           rr_next: dict | None = None) -> Decisions:
    """All decisions of one pass, in memory (no database access)."""
    space = build_space(raw)
    out = Decisions()
    agents = _agent_slots(space, raw)
    selector_config = opts.get("agent_selector_config") or {}
    priority = selector_config.get("resource_priority") or DEFAULT_RESOURCE_PRIORITY
    pool = AgentPool(space, agents, opts.get("agent_selection_strategy") or "dispersed", priority, rr_next)

    # requests (the snapshot decodes each distinct slot map once, so equal maps are often one object)
    vectors: dict = {}
    for session in raw.pending:
        _prepare_session(space, session, vectors)

    # pending timeout
    timeout = opts.get("pending_timeout") or 0
    live = []
    for session in raw.pending:
        if timeout and (now - session.created_at).total_seconds() >= timeout:
            _cancel(out, session, now, INFO_TIMEOUT,
                    f"pending for more than {timeout:g} s (the scaling group's pending_timeout)")
        else:
            live.append(session)
    if not live:
        return out

    # the top priority band
    top = max(s.priority for s in live)
    band = [s for s in live if s.priority == top]

    state = _build_state(space, raw, live, now)
    capacity = tuple(sum(col) for col in zip(*(a.available for a in agents if a.schedulable))) or space.zero
    sequencer = sequencers.make(
        scheduler, band, num_retries_to_skip=(opts.get("config") or {}).get("num_retries_to_skip", 0),
        usage=_group_usage(space, raw), capacity=capacity,
    )

    for session in sequencer:
        if session.error:
            _wait(out, session, now, INFO_ERROR, passed=[], failed=[], msg=session.error, outcome="error")
            continue
        outcome = state.check(session)
        if outcome.fatal:
            state.left_queue(session)
            _cancel(out, session, now, outcome.fatal, outcome.fatal_msg, passed=outcome.passed,
                    failed=outcome.failed)
            continue
        if not outcome.ok:
            if session.is_private:
                state.left_queue(session)
                _cancel(out, session, now, INFO_PREDICATES, outcome.failed[0]["msg"],
                        passed=outcome.passed, failed=outcome.failed)
            else:
                _wait(out, session, now, INFO_PREDICATES, passed=outcome.passed, failed=outcome.failed,
                      outcome="predicate_failed")
            continue
        placement, msg = _place(session, pool, space, group_name)
        if placement is None:
            _wait(out, session, now, INFO_NO_AGENT, passed=outcome.passed, failed=[], msg=msg, outcome="no_agent")
            continue
        state.placed(session)
        sequencer.placed(session)
        _schedule(out, session, placement, now, outcome.passed, space)
    out.rr_next = pool.rr_next
    out.rr_changed = pool.rr_changed
    return out


def _agent_slots(space: SlotSpace, raw: snapshot.RawSnapshot) -> list[AgentSlot]:
    """The group's agents with their free capacity as vectors (agents with unknown slots left out)."""
    agents = []
    for agent_id, addr, arch, available, schedulable in raw.agents:
        available_vec = _vector_or_none(space, available)
        occupied_vec = _vector_or_none(space, raw.occupancy.get(agent_id, {}))
        if available_vec is None or occupied_vec is None:
            continue
        agents.append(AgentSlot(agent_id, addr or "", arch, available_vec, list(sub(available_vec, occupied_vec)),
                                schedulable=bool(schedulable)))
    return agents


def _group_usage(space: SlotSpace, raw: snapshot.RawSnapshot) -> dict:
    """{scaling group: usage vector} for the fair-share sequencer (DRF)."""
    usage = {}
    for (scope, owner), slots in raw.usage.items():
        if scope == "g":
            vec = _vector_or_none(space, slots)
            if vec is not None:
                usage[owner] = vec
    return usage


def _request_vector(space: SlotSpace, mapping, vectors: dict):
    key = id(mapping)
    hit = vectors.get(key)
    if hit is not None and hit[0] is mapping:
        return hit[1]
    vec = _vector_or_none(space, mapping)
    vectors[key] = (mapping, vec)
    return vec


def _prepare_session(space: SlotSpace, session: snapshot.PendingSession, vectors: dict | None = None) -> None:
    vectors = {} if vectors is None else vectors
    if not session.kernels:
        session.error = "the session has no kernels"
        session.request = _vector_or_none(space, session.requested_raw) or space.zero
        return
    total = None
    for kernel in session.kernels:
        if kernel.status != KernelStatus.PENDING:
            session.error = f"kernel {kernel.hostname} is {kernel.status}, not PENDING"
        vec = _request_vector(space, kernel.requested_raw, vectors)
        if vec is None:
            session.error = f"kernel {kernel.hostname} has malformed requested slots"
            vec = space.zero
        kernel.request = vec
        total = vec if total is None else add(total, vec)
    session.request = total
    if session.cluster_mode != "multi-node" and any(k.architecture != session.architecture for k in session.kernels):
        session.error = "the kernels of a single-node session must share one architecture"


def _build_state(space: SlotSpace, raw: snapshot.RawSnapshot, live: list, now) -> State:
    zero = space.zero
    keypair_limits = {}
    for ak, policy in raw.keypair_policies.items():
        try:
            keypair_limits[ak] = Limits(
                total=space.limit(policy.total_resource_slots, policy.unlimited_for_unspecified),
                max_concurrent=policy.max_concurrent_sessions,
                max_concurrent_private=policy.max_concurrent_sftp_sessions,
                max_pending_count=policy.max_pending_session_count,
                max_pending_slots=(space.limit(policy.max_pending_session_resource_slots, True)
                                   if policy.max_pending_session_resource_slots else None),
            )
        except ValueError as exc:
            log.warning("keypair policy %s has malformed slots: %s", policy.name, exc)
    user_limits, project_limits, domain_limits = {}, {}, {}
    for user_id, (total, unlimited) in raw.user_limits.items():
        user_limits[user_id] = _limit_or_none(space, total, unlimited)
    for project_id, total in raw.project_limits.items():
        project_limits[project_id] = _limit_or_none(space, total, True)
    for domain_id, total in raw.domain_limits.items():
        domain_limits[domain_id] = _limit_or_none(space, total, True)
    usage = {}
    for key, slots in raw.usage.items():
        if key[0] == "g":
            continue
        vec = _vector_or_none(space, slots)
        usage[key] = vec if vec is not None else zero
    # each keypair with a pending limit: its pending sessions everywhere, oldest first
    queues = {}
    limited = {ak for ak, lim in keypair_limits.items()
               if lim.max_pending_count is not None or lim.max_pending_slots is not None}
    if limited:
        entries: dict = {}
        for session in live:
            if session.access_key in limited:
                entries.setdefault(session.access_key, []).append((session.created_at, session.id, session.request))
        for sid, ak, created, requested in raw.pending_elsewhere:
            entries.setdefault(ak, []).append((created, sid, _vector_or_none(space, requested) or zero))
        for ak, rows in entries.items():
            queues[ak] = PendingQueue(rows, len(space), keypair_limits[ak].max_pending_slots is not None)
    return State(space, now, keypair_limits=keypair_limits, user_limits=user_limits, project_limits=project_limits,
                 domain_limits=domain_limits, usage=usage, concurrency=raw.concurrency,
                 dependencies=raw.dependencies, pending_queues=queues)


def _limit_or_none(space: SlotSpace, total, unlimited: bool):
    if not total and unlimited:
        return None  # nothing to check
    try:
        return space.limit(total, unlimited)
    except ValueError as exc:
        log.warning("ignoring malformed resource limit %r: %s", total, exc)
        return None


# --- placement ----------------------------------------------------------------------------------

def _place(session, pool: AgentPool, space: SlotSpace, group: str):
    """[(kernel, agent)] or (None, why)."""
    if session.cluster_mode == "multi-node":
        return _place_multi(session, pool, space, group)
    arch = session.architecture
    if session.designated:
        vec = session.request
        dims = pool.shape(vec).dims
        reasons = []
        for agent_id in session.designated:
            agent = pool.by_id.get(agent_id)
            if agent is None:
                reasons.append(f"{agent_id} is not ALIVE in scaling group '{group}'")
            elif agent.architecture != arch:
                reasons.append(f"{agent_id} is {agent.architecture}, not {arch}")
            elif not agent.fits(vec, dims):
                reasons.append(f"{agent_id} has only {space.describe(_clip(agent.free, dims))} free")
            else:
                pool.allocate(agent, vec)
                return [(k, agent) for k in session.kernels], ""
        return None, f"designated agent(s) cannot take {space.describe(vec)}: " + "; ".join(reasons)
    agent = pool.select(session.request, arch)
    if agent is None:
        return None, _no_agent_msg(pool, space, session.request, arch, group)
    pool.allocate(agent, session.request)
    return [(k, agent) for k in session.kernels], ""


def _place_multi(session, pool: AgentPool, space: SlotSpace, group: str):
    """One agent per kernel, each choice seeing the previous ones; all or nothing."""
    placed: list = []
    try:
        for i, kernel in enumerate(session.kernels):
            dims = pool.shape(kernel.request).dims
            if session.designated:
                agent_id = session.designated[i % len(session.designated)]
                agent = pool.by_id.get(agent_id)
                if agent is None:
                    why = f"designated agent {agent_id} is not ALIVE in scaling group '{group}'"
                elif agent.architecture != kernel.architecture or not agent.fits(kernel.request, dims):
                    why = (f"designated agent {agent_id} ({agent.architecture}) cannot take "
                           f"{space.describe(kernel.request)} for architecture {kernel.architecture}")
                    agent = None
            else:
                # a failure seen while earlier kernels hold capacity is not definite
                pool.tentative = len(placed)
                agent = pool.select(kernel.request, kernel.architecture)
                why = "" if agent else _no_agent_msg(pool, space, kernel.request, kernel.architecture, group)
            if agent is None:
                for k, a in placed:
                    pool.release(a, k.request)
                return None, (f"kernel {kernel.hostname}: {why} "
                              f"({len(placed)} of {len(session.kernels)} kernels could be placed; "
                              f"a multi-node session starts only when all of them can)")
            pool.allocate(agent, kernel.request)
            placed.append((kernel, agent))
    finally:
        pool.tentative = 0
    return placed, ""


def _clip(free, dims):
    out = [0] * len(free)
    for d in dims:
        out[d] = free[d]
    return out


def _no_agent_msg(pool: AgentPool, space: SlotSpace, vec, arch: str, group: str) -> str:
    key = (vec, arch, group)
    msg = pool.messages.get(key)
    if msg is None:
        msg = pool.messages[key] = _no_agent_text(pool, space, vec, arch, group)
    return msg


def _no_agent_text(pool: AgentPool, space: SlotSpace, vec, arch: str, group: str) -> str:
    n = pool.count(arch)
    if not n:
        return f"no ALIVE schedulable agent for architecture {arch} in scaling group '{group}'"
    return (f"no ALIVE agent with {space.describe(vec)} free for architecture {arch} "
            f"in scaling group '{group}' ({n} agent(s) of that architecture)")


# --- recording decisions ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _entry(status: str, now) -> dict:
    """One history entry per status and instant, shared by every row of the pass (only serialised)."""
    return history_entry(status, now)


@functools.lru_cache(maxsize=8)
def _iso(now) -> str:
    return now.isoformat()


@functools.lru_cache(maxsize=256)
def _passed_block(passed: tuple) -> tuple:
    return tuple({"name": n} for n in passed)


def _scheduler_block(session, now, *, retries: int, passed, failed, msg: str | None = None) -> dict:
    data = dict(session.status_data)
    block = {
        "retries": retries,
        "last_try": _iso(now),
        "failed_predicates": list(failed),
        "passed_predicates": list(_passed_block(tuple(passed))),
    }
    if msg:
        block["msg"] = msg
    data["scheduler"] = block
    return data


def _wait(out: Decisions, session, now, info: str, *, passed, failed, msg: str | None = None,
          outcome: str) -> None:
    data = _scheduler_block(session, now, retries=session.retries + 1, passed=passed, failed=failed, msg=msg)
    out.sessions.append(writer.SessionChange(session.id, SessionStatus.PENDING, SessionStatus.PENDING,
                                             status_info=info, status_data=data))
    out.failed[session.id] = info
    out.outcomes[outcome] += 1


def _cancel(out: Decisions, session, now, info: str, msg: str, *, passed=(), failed=()) -> None:
    data = _scheduler_block(session, now, retries=session.retries, passed=passed, failed=failed, msg=msg)
    entry = [_entry(SessionStatus.CANCELLED, now)]
    out.sessions.append(writer.SessionChange(session.id, SessionStatus.PENDING, SessionStatus.CANCELLED,
                                             status_info=info, status_data=data, history=entry, terminated=True))
    for kernel in session.kernels:
        if kernel.status == KernelStatus.PENDING:
            out.kernels.append(writer.KernelChange(
                kernel.id, session.id, KernelStatus.PENDING, KernelStatus.CANCELLED, status_info=info,
                history=[_entry(KernelStatus.CANCELLED, now)], terminated=True))
    out.cancelled[session.id] = info
    out.outcomes["cancelled"] += 1


def _schedule(out: Decisions, session, placement, now, passed, space: SlotSpace) -> None:
    data = _scheduler_block(session, now, retries=session.retries, passed=passed, failed=[])
    agent_ids = list(dict.fromkeys(agent.id for _, agent in placement))
    entry = [_entry(SessionStatus.SCHEDULED, now)]
    out.sessions.append(writer.SessionChange(
        session.id, SessionStatus.PENDING, SessionStatus.SCHEDULED, status_info=INFO_SCHEDULED, status_data=data,
        agent_ids=agent_ids, occupying_slots=_occupying(session, space), history=entry))
    for kernel, agent in placement:
        out.kernels.append(writer.KernelChange(
            kernel.id, session.id, KernelStatus.PENDING, KernelStatus.SCHEDULED, status_info=INFO_SCHEDULED,
            agent_id=agent.id, agent_addr=agent.addr, occupied_slots=kernel.requested_raw,
            history=[_entry(KernelStatus.SCHEDULED, now)]))
    out.scheduled.append(session.id)
    out.outcomes["scheduled"] += 1


def _occupying(session, space: SlotSpace) -> dict:
    if len(session.kernels) == 1:
        return session.kernels[0].requested_raw
    names = {name for k in session.kernels for name in k.requested_raw}
    return {name: value for name, value in space.to_json(session.request).items() if name in names}
