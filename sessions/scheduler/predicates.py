"""Predicates: may this pending session start now, as far as its owner's limits
and its own conditions go?  (reference §3.1, step 4)

Checked in memory against the pass's ``State``, which is updated as sessions
are placed, so one pass never lets a keypair, user, project or domain go over
its limit.  In order, each recorded as passed or failed:

``reserved_time``            ``starts_at`` is in the future.
``dependencies``             every dependency TERMINATED with result SUCCESS.  A dependency that
                             ended otherwise (TERMINATED with another result, or CANCELLED) can
                             never succeed: the session is cancelled (``dependency-failed``)
                             instead of waiting forever.
``concurrency``              sessions of the keypair holding an agent (counted from the database)
                             < ``max_concurrent_sessions`` (``max_concurrent_sftp_sessions`` and
                             only private sessions for private session types).
Private (``system``) sessions skip the rest:
``pending_session_count_limit``     the session is among the keypair's first
                             ``max_pending_session_count`` pending sessions (all scaling groups,
                             oldest first); the ones behind wait for those ahead to start.
``pending_session_resource_limit``  the same queue's requests up to and including this one fit
                             ``max_pending_session_resource_slots``.
``keypair_resource_limit``   keypair usage + request within the keypair policy's total
                             (slots it does not list: 0 if LIMITED, unlimited if UNLIMITED).
``user_resource_limit``      the user's usage (all keypairs) + request within the policy of the
                             user's main keypair.
``user_group_resource_limit``       the project's usage + request within its ``total_resource_slots``
                             (slots it does not list are unlimited).
``domain_resource_limit``    the same for the domain.
"""
from __future__ import annotations

from dataclasses import dataclass

from sessions.scheduler.slotspace import INF, SlotSpace

NAMES = (
    "reserved_time", "dependencies", "concurrency", "pending_session_count_limit",
    "pending_session_resource_limit", "keypair_resource_limit", "user_resource_limit",
    "user_group_resource_limit", "domain_resource_limit",
)


@dataclass
class Outcome:
    passed: list[str]
    failed: list[dict]  # {"name", "msg"}
    fatal: str | None = None  # a status_info to cancel the session with
    fatal_msg: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed and self.fatal is None


class _Fenwick:
    """Prefix sums with point updates (counts, or vectors when ``width`` > 0)."""

    def __init__(self, n: int, width: int = 0):
        self.n = n
        self.width = width
        self.tree = [[0] * width if width else 0 for _ in range(n + 1)]

    def add(self, i: int, value) -> None:
        i += 1
        while i <= self.n:
            if self.width:
                node = self.tree[i]
                for d, v in enumerate(value):
                    if v:
                        node[d] += v
            else:
                self.tree[i] += value
            i += i & -i

    def prefix(self, i: int):
        """Sum of positions 0..i inclusive."""
        i += 1
        total = [0] * self.width if self.width else 0
        while i > 0:
            if self.width:
                for d, v in enumerate(self.tree[i]):
                    if v:
                        total[d] += v
            else:
                total += self.tree[i]
            i -= i & -i
        return total


class PendingQueue:
    """One keypair's pending sessions in every scaling group, oldest first."""

    def __init__(self, entries: list[tuple], width: int, with_slots: bool):
        # entries: (created_at, id, vector)
        entries = sorted(entries, key=lambda e: (e[0], str(e[1])))
        self.pos = {e[1]: i for i, e in enumerate(entries)}
        self.vectors = {e[1]: e[2] for e in entries}
        self.counts = _Fenwick(len(entries))
        self.slots = _Fenwick(len(entries), width) if with_slots else None
        for i, e in enumerate(entries):
            self.counts.add(i, 1)
            if self.slots is not None:
                self.slots.add(i, e[2])

    def ahead_including(self, session_id):
        i = self.pos.get(session_id)
        if i is None:
            return 0, None
        return self.counts.prefix(i), (self.slots.prefix(i) if self.slots is not None else None)

    def remove(self, session_id) -> None:
        i = self.pos.pop(session_id, None)
        if i is None:
            return
        self.counts.add(i, -1)
        if self.slots is not None:
            self.slots.add(i, [-v for v in self.vectors[session_id]])


@dataclass
class Limits:
    """A keypair policy as vectors."""

    total: tuple
    max_concurrent: int
    max_concurrent_private: int
    max_pending_count: int | None
    max_pending_slots: tuple | None


class State:
    """Usage and limits of the owners with pending sessions, kept current while
    the pass places sessions."""

    def __init__(self, space: SlotSpace, now, *, keypair_limits: dict, user_limits: dict, project_limits: dict,
                 domain_limits: dict, usage: dict, concurrency: dict, dependencies: dict, pending_queues: dict):
        self.space = space
        self.now = now
        self.keypair_limits = keypair_limits
        self.user_limits = user_limits
        self.project_limits = project_limits
        self.domain_limits = domain_limits
        self.usage = {key: list(vec) for key, vec in usage.items()}
        self.concurrency = {k: list(v) for k, v in concurrency.items()}
        self.dependencies = dependencies
        self.pending_queues = pending_queues
        self._private_checks = (("reserved_time", self._reserved_time), ("dependencies", self._dependencies),
                                ("concurrency", self._concurrency))
        self._checks = (*self._private_checks,
                        ("pending_session_count_limit", self._pending_count),
                        ("pending_session_resource_limit", self._pending_slots),
                        ("keypair_resource_limit", self._keypair_limit),
                        ("user_resource_limit", self._user_limit),
                        ("user_group_resource_limit", self._project_limit),
                        ("domain_resource_limit", self._domain_limit))

    # -- bookkeeping ----------------------------------------------------------
    def _usage(self, scope: str, owner) -> list:
        key = (scope, owner)
        vec = self.usage.get(key)
        if vec is None:
            vec = self.usage[key] = [0] * len(self.space)
        return vec

    def placed(self, session) -> None:
        amounts = [(d, v) for d, v in enumerate(session.request) if v]
        for scope, owner in (("k", session.access_key), ("u", session.user_id), ("p", session.project_id),
                             ("d", session.domain_id)):
            if owner is None:
                continue
            vec = self._usage(scope, owner)
            for d, v in amounts:
                vec[d] += v
        if session.access_key is not None:
            counts = self.concurrency.setdefault(session.access_key, [0, 0])
            counts[1 if session.is_private else 0] += 1
        self.left_queue(session)

    def left_queue(self, session) -> None:
        queue = self.pending_queues.get(session.access_key)
        if queue is not None:
            queue.remove(session.id)

    # -- the checks -------------------------------------------------------------
    def check(self, session) -> Outcome:
        passed: list[str] = []
        failed: list[dict] = []
        fatal, fatal_msg = None, ""
        checks = self._private_checks if session.is_private else self._checks
        for name, check in checks:
            result = check(session)
            if result is None:
                passed.append(name)
                continue
            msg, is_fatal = result if isinstance(result, tuple) else (result, False)
            failed.append({"name": name, "msg": msg})
            if is_fatal and fatal is None:
                fatal, fatal_msg = is_fatal, msg
        return Outcome(passed, failed, fatal, fatal_msg)

    def _reserved_time(self, session):
        if session.starts_at is not None and session.starts_at > self.now:
            return f"Reserved to start at {session.starts_at.isoformat()}"
        return None

    def _dependencies(self, session):
        deps = self.dependencies.get(session.id)
        if not deps:
            return None
        dead = [d for d in deps if d.status in ("TERMINATED", "CANCELLED") and d.result != "success"]
        if dead:
            names = ", ".join(f"{d.name} ({d.id}): {d.status}, result {d.result}" for d in dead)
            return (f"Dependency session(s) ended without success, so this session can never start: {names}",
                    "dependency-failed")
        waiting = [d for d in deps if not (d.status == "TERMINATED" and d.result == "success")]
        if waiting:
            names = ", ".join(f"{d.name} ({d.id}): {d.status}" for d in waiting)
            return f"Waiting for dependency session(s) to finish with success: {names}"
        return None

    def _concurrency(self, session):
        limits = self.keypair_limits.get(session.access_key)
        if limits is None:
            return None
        counts = self.concurrency.get(session.access_key, (0, 0))
        if session.is_private:
            if counts[1] >= limits.max_concurrent_private:
                return f"You cannot run more than {limits.max_concurrent_private} concurrent private session(s)"
        elif counts[0] >= limits.max_concurrent:
            return (f"You cannot run more than {limits.max_concurrent} concurrent session(s) "
                    f"({counts[0]} running or starting)")
        return None

    def _pending_count(self, session):
        limits = self.keypair_limits.get(session.access_key)
        if limits is None or limits.max_pending_count is None:
            return None
        queue = self.pending_queues.get(session.access_key)
        position = queue.ahead_including(session.id)[0] if queue else 1
        if position > limits.max_pending_count:
            return (f"You cannot have more than {limits.max_pending_count} pending session(s); "
                    f"this one is #{position} of your pending sessions")
        return None

    def _pending_slots(self, session):
        limits = self.keypair_limits.get(session.access_key)
        if limits is None or limits.max_pending_slots is None:
            return None
        queue = self.pending_queues.get(session.access_key)
        cumulative = (queue.ahead_including(session.id)[1] if queue else None) or session.request
        over = self._over(cumulative, limits.max_pending_slots, (0,) * len(self.space))
        if over:
            return f"Your pending sessions exceed the pending resource limit: {over}"
        return None

    def _limit_check(self, session, scope: str, owner, limit, what: str):
        if owner is None or limit is None:
            return None
        used = self.usage.get((scope, owner)) or (0,) * len(self.space)
        over = self._over(session.request, limit, used)
        if over:
            return f"{what} resource quota is exceeded: {over}"
        return None

    def _keypair_limit(self, session):
        limits = self.keypair_limits.get(session.access_key)
        return self._limit_check(session, "k", session.access_key, limits.total if limits else None, "Your keypair")

    def _user_limit(self, session):
        return self._limit_check(session, "u", session.user_id, self.user_limits.get(session.user_id), "Your user")

    def _project_limit(self, session):
        return self._limit_check(session, "p", session.project_id, self.project_limits.get(session.project_id),
                                 "The project's")

    def _domain_limit(self, session):
        return self._limit_check(session, "d", session.domain_id, self.domain_limits.get(session.domain_id),
                                 "The domain's")

    def _over(self, request, limit, used) -> str:
        """'' when used + request <= limit on every slot, else what exceeds."""
        parts = []
        space = self.space
        for d, (r, lim, u) in enumerate(zip(request, limit, used)):
            if lim == INF or u + r <= lim:
                continue
            left = max(lim - u, 0)
            parts.append(f"{space.names[d]} requested {space.format_amount(d, r)}, "
                         f"{space.format_amount(d, left)} left of {space.format_amount(d, lim)}")
        return "; ".join(parts)
