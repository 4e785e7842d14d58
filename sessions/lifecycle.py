"""The one place that owns session and kernel statuses and their transitions.

Statuses and transition maps follow the Backend.AI manager (24.09).  Every
status change of a kernel or session is checked here: one at a time through the
models' doors (``Kernel.move_to``, ``Session.move_to``, which append the history
entry), set-based through the scheduler's writer (``SessionChange`` /
``KernelChange`` refuse an illegal move when they are built).
``derive_session_status`` computes a session's status from its kernels.  The
status sets every other module uses (running, occupying, ended...) are defined
here once.  Pure Python: no Django imports.

These say which moves are legal; ``sessions.services`` makes them safe to apply:
every write of a status is done under row locks taken in one order (sessions,
then their kernels, each in primary-key order: ``services.lock_sessions``) or as
a compare-and-set on the old status (``sessions.scheduler.writer``), so two
writers (an agent's sync, a destroy, a reconciler) never overwrite each other.
"""
from __future__ import annotations

from enum import StrEnum


class SessionStatus(StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    PULLING = "PULLING"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    RUNNING_DEGRADED = "RUNNING_DEGRADED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


class KernelStatus(StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    PREPARING = "PREPARING"
    BUILDING = "BUILDING"
    PULLING = "PULLING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    RESIZING = "RESIZING"
    SUSPENDED = "SUSPENDED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


S = SessionStatus
K = KernelStatus

SESSION_TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    S.PENDING: frozenset({S.SCHEDULED, S.TERMINATING, S.TERMINATED, S.ERROR, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.PULLING, S.PREPARING, S.TERMINATING, S.TERMINATED, S.ERROR, S.CANCELLED}),
    S.PULLING: frozenset({S.PREPARING, S.RUNNING, S.RUNNING_DEGRADED, S.TERMINATING, S.TERMINATED, S.ERROR, S.CANCELLED}),
    S.PREPARING: frozenset({S.PULLING, S.RUNNING, S.RUNNING_DEGRADED, S.TERMINATING, S.TERMINATED, S.ERROR, S.CANCELLED}),
    S.RUNNING: frozenset({S.RESTARTING, S.RUNNING_DEGRADED, S.TERMINATING, S.TERMINATED, S.ERROR}),
    S.RESTARTING: frozenset({S.RUNNING, S.RUNNING_DEGRADED, S.TERMINATING, S.TERMINATED, S.ERROR}),
    S.RUNNING_DEGRADED: frozenset({S.RUNNING, S.TERMINATING, S.TERMINATED, S.ERROR}),
    S.TERMINATING: frozenset({S.TERMINATED, S.ERROR}),
    S.ERROR: frozenset({S.TERMINATING, S.TERMINATED}),
    S.TERMINATED: frozenset(),
    S.CANCELLED: frozenset(),
}

_EARLY_KERNEL = {K.PENDING, K.SCHEDULED, K.PREPARING, K.BUILDING, K.PULLING}
KERNEL_TRANSITIONS: dict[KernelStatus, frozenset[KernelStatus]] = {
    K.PENDING: frozenset({K.SCHEDULED, K.TERMINATING, K.TERMINATED, K.ERROR, K.CANCELLED}),
    K.SCHEDULED: frozenset({K.PREPARING, K.BUILDING, K.PULLING, K.RUNNING, K.TERMINATING, K.TERMINATED, K.ERROR, K.CANCELLED}),
    K.PREPARING: frozenset({K.BUILDING, K.PULLING, K.RUNNING, K.TERMINATING, K.TERMINATED, K.ERROR, K.CANCELLED}),
    K.BUILDING: frozenset({K.PREPARING, K.PULLING, K.RUNNING, K.TERMINATING, K.TERMINATED, K.ERROR, K.CANCELLED}),
    K.PULLING: frozenset({K.PREPARING, K.BUILDING, K.RUNNING, K.TERMINATING, K.TERMINATED, K.ERROR, K.CANCELLED}),
    K.RUNNING: frozenset({K.RESTARTING, K.RESIZING, K.SUSPENDED, K.TERMINATING, K.TERMINATED, K.ERROR}),
    K.RESTARTING: frozenset({K.RUNNING, K.TERMINATING, K.TERMINATED, K.ERROR}),
    K.RESIZING: frozenset({K.RUNNING, K.TERMINATING, K.TERMINATED, K.ERROR}),
    K.SUSPENDED: frozenset({K.RUNNING, K.TERMINATING, K.TERMINATED, K.ERROR}),
    K.TERMINATING: frozenset({K.TERMINATED, K.ERROR}),
    K.TERMINATED: frozenset(),
    # a kernel in ERROR is cleaned up by a destroy (as in Backend.AI); nothing else moves it
    K.ERROR: frozenset({K.TERMINATING, K.TERMINATED}),
    K.CANCELLED: frozenset(),
}

DEAD_SESSION = frozenset({S.CANCELLED, S.TERMINATED})
# Ended, or failed and waiting only for a destroy: nothing runs for it any more.
ENDED_SESSION = DEAD_SESSION | {S.ERROR}
# Its apps can be opened, its terminals attached, it can be restarted.
RUNNING_SESSION = frozenset({S.RUNNING, S.RUNNING_DEGRADED})
# Keeps its app-proxy circuits (a restart keeps them too).
LIVE_SESSION = RUNNING_SESSION | {S.RESTARTING}
# Placed on agents and holding their resources: counts against every quota
# (keypair, user, project, domain) in the scheduler and in check-presets alike.
OCCUPYING_SESSION = frozenset({S.SCHEDULED, S.PULLING, S.PREPARING, S.RUNNING, S.RESTARTING, S.RUNNING_DEGRADED})
# Counts against max_concurrent_sessions (still holding an agent while it stops).
CONCURRENCY_SESSION = OCCUPYING_SESSION | {S.TERMINATING}
TERMINAL_KERNEL = frozenset({K.TERMINATED, K.ERROR, K.CANCELLED})
# Kernels that hold resources on their agent (occupancy is recomputed from these).
AGENT_OCCUPYING_KERNEL = frozenset(set(KernelStatus) - {K.PENDING, K.TERMINATED, K.CANCELLED, K.ERROR})
# Kernels an agent should have running or be starting.
AGENT_DESIRED_KERNEL = frozenset({K.SCHEDULED, K.PREPARING, K.BUILDING, K.PULLING, K.RUNNING, K.RESTARTING, K.RESIZING})

# The one backward move, owned here like every other: a session placed on an
# agent that was LOST before it started goes back to the queue (the scheduler's
# reconciler does it, at most once per session).
RESCHEDULABLE_SESSION = frozenset({S.SCHEDULED, S.PREPARING, S.PULLING})
RESCHEDULABLE_KERNEL = frozenset({K.SCHEDULED, K.PREPARING, K.BUILDING, K.PULLING})

_KERNEL_TO_SESSION = {
    K.PENDING: S.PENDING, K.SCHEDULED: S.SCHEDULED, K.PREPARING: S.PREPARING, K.BUILDING: S.PREPARING,
    K.PULLING: S.PULLING, K.RUNNING: S.RUNNING, K.RESTARTING: S.RESTARTING, K.RESIZING: S.RUNNING,
    K.SUSPENDED: S.ERROR, K.TERMINATING: S.TERMINATING, K.TERMINATED: S.TERMINATED, K.ERROR: S.ERROR,
    K.CANCELLED: S.CANCELLED,
}
# Order of advancement, to find the "least advanced" common state.
_SESSION_ORDER = [S.PENDING, S.SCHEDULED, S.PULLING, S.PREPARING, S.RUNNING, S.RESTARTING, S.RUNNING_DEGRADED,
                  S.TERMINATING, S.TERMINATED, S.CANCELLED]


# How far along its life a kernel is: an agent's report of an earlier stage than the
# manager already holds (PULLING for a RUNNING kernel, RUNNING for a TERMINATING one)
# is merely behind, not illegal (reports and events may cross on the wire).
_KERNEL_STAGE = {
    K.PENDING: 0, K.SCHEDULED: 1, K.PREPARING: 2, K.BUILDING: 2, K.PULLING: 2,
    K.RUNNING: 3, K.RESTARTING: 3, K.RESIZING: 3, K.SUSPENDED: 3,
    K.TERMINATING: 4, K.TERMINATED: 5, K.ERROR: 5, K.CANCELLED: 5,
}


class IllegalTransition(ValueError):
    pass


def history_entry(status: str, now) -> dict:
    """One entry of a ``status_history`` (the only place that builds one)."""
    return {"status": str(status), "timestamp": now.isoformat()}


def session_can_move(current: str, new: str, *, reschedule: bool = False) -> bool:
    if reschedule:
        return SessionStatus(current) in RESCHEDULABLE_SESSION and SessionStatus(new) == S.PENDING
    return SessionStatus(new) in SESSION_TRANSITIONS[SessionStatus(current)]


def kernel_can_move(current: str, new: str, *, reschedule: bool = False) -> bool:
    if reschedule:
        return KernelStatus(current) in RESCHEDULABLE_KERNEL and KernelStatus(new) == K.PENDING
    return KernelStatus(new) in KERNEL_TRANSITIONS[KernelStatus(current)]


def session_sources(new: str) -> frozenset[SessionStatus]:
    """The session statuses that may move to ``new`` (for set-based guard predicates)."""
    return frozenset(s for s, targets in SESSION_TRANSITIONS.items() if SessionStatus(new) in targets)


def kernel_sources(new: str) -> frozenset[KernelStatus]:
    """The kernel statuses that may move to ``new`` (for set-based guard predicates)."""
    return frozenset(k for k, targets in KERNEL_TRANSITIONS.items() if KernelStatus(new) in targets)


def kernel_report_is_behind(current: str, reported: str) -> bool:
    """Whether a reported kernel status is an earlier stage than ``current`` (a stale
    report to ignore silently, as opposed to an illegal move)."""
    return _KERNEL_STAGE[KernelStatus(reported)] < _KERNEL_STAGE[KernelStatus(current)]


def check_kernel_move(current: str, new: str) -> None:
    if not kernel_can_move(current, new):
        raise IllegalTransition(f"kernel cannot move from {current} to {new}")


def check_session_move(current: str, new: str) -> None:
    if not session_can_move(current, new):
        raise IllegalTransition(f"session cannot move from {current} to {new}")


_PROGRESS_HOPS = (S.SCHEDULED, S.PREPARING, S.PULLING)


def session_path(current: str, target: str) -> list[SessionStatus] | None:
    """The legal moves from ``current`` to ``target``: the direct move when
    allowed, else the shortest walk through the progress states (an agent may
    report RUNNING before the manager saw PREPARING).  None when impossible."""
    current, target = SessionStatus(current), SessionStatus(target)
    if target in SESSION_TRANSITIONS[current]:
        return [target]
    frontier, seen = [[current]], {current}
    while frontier:
        next_frontier = []
        for path in frontier:
            for hop in _PROGRESS_HOPS:
                if hop in seen or hop not in SESSION_TRANSITIONS[path[-1]]:
                    continue
                if target in SESSION_TRANSITIONS[hop]:
                    return [*path[1:], hop, target]
                seen.add(hop)
                next_frontier.append([*path, hop])
        frontier = next_frontier
    return None


def derive_session_status(kernel_statuses: list[str]) -> SessionStatus:
    """A session's status from its kernels: any ERROR wins; otherwise the least
    advanced common state (PREPARING+PULLING → PULLING, RUNNING+PREPARING →
    PREPARING, TERMINATED+TERMINATING → TERMINATING); an inconsistent mix is ERROR."""
    if not kernel_statuses:
        return S.PENDING
    mapped = {_KERNEL_TO_SESSION[KernelStatus(k)] for k in kernel_statuses}
    if S.ERROR in mapped:
        return S.ERROR
    if len(mapped) == 1:
        return mapped.pop()
    if mapped <= {S.PREPARING, S.PULLING}:
        return S.PULLING
    if mapped <= {S.SCHEDULED, S.PREPARING, S.PULLING, S.RUNNING}:
        return min(mapped, key=_SESSION_ORDER.index)
    if mapped <= {S.TERMINATING, S.TERMINATED, S.CANCELLED}:
        return S.TERMINATING if S.TERMINATING in mapped else S.TERMINATED
    if mapped <= {S.RUNNING, S.TERMINATING, S.TERMINATED}:
        return S.TERMINATING if S.TERMINATING in mapped else S.RUNNING_DEGRADED
    return S.ERROR
