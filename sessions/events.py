"""Session lifecycle events, derived from the database.

Every status change is recorded in ``status_history`` of its session or kernel,
so the events that SSE clients and webhooks see are read back from there: no
event can be lost between processes, and a reconnecting client can replay.
Pushes (a Celery hint to the scheduler, a channel-layer poke for live pages)
only make things faster.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sessions.lifecycle import KernelStatus, SessionStatus
from sessions.models import SessionResult


SESSION_EVENT = {
    SessionStatus.PENDING: "session_enqueued",
    SessionStatus.SCHEDULED: "session_scheduled",
    SessionStatus.RUNNING: "session_started",
    SessionStatus.TERMINATING: "session_terminating",
    SessionStatus.TERMINATED: "session_terminated",
    SessionStatus.CANCELLED: "session_cancelled",
    SessionStatus.ERROR: "session_failure",
}
KERNEL_EVENT = {
    KernelStatus.PREPARING: "kernel_preparing",
    KernelStatus.PULLING: "kernel_pulling",
    KernelStatus.RUNNING: "kernel_started",
    KernelStatus.TERMINATING: "kernel_terminating",
    KernelStatus.TERMINATED: "kernel_terminated",
    KernelStatus.CANCELLED: "kernel_cancelled",
}


@dataclass(frozen=True)
class Event:
    name: str
    when: datetime
    data: dict

    @property
    def key(self) -> tuple:
        """What tells two events apart: a name, its moment and whose (the session, or the kernel)."""
        return (self.name, self.when, self.data.get("sessionId"), self.data.get("kernelId"))

    def sse(self) -> str:
        return f"event: {self.name}\ndata: {json.dumps(self.data)}\nretry: 5\n\n"


def session_events(session, since: datetime | None = None) -> list[Event]:
    """The lifecycle events of a session (and, with kernels prefetched, its kernels)."""
    base = {"sessionName": session.name, "ownerAccessKey": session.access_key_id, "sessionId": str(session.pk)}
    events = []
    for entry in session.status_history or []:
        name = SESSION_EVENT.get(entry["status"])
        when = datetime.fromisoformat(entry["timestamp"])
        if name is None or (since is not None and when <= since):
            continue
        reason = session.status_info if entry["status"] in (SessionStatus.TERMINATED, SessionStatus.CANCELLED,
                                                             SessionStatus.ERROR, SessionStatus.TERMINATING) else ""
        exit_code = None
        main = _main_kernel(session)
        if main is not None and entry["status"] == SessionStatus.TERMINATED:
            exit_code = main.exit_code
        events.append(Event(name, when, {**base, "reason": reason or "", "exitCode": exit_code}))
        if entry["status"] == SessionStatus.TERMINATED and session.session_type == "batch":
            result = "session_success" if session.result == SessionResult.SUCCESS else "session_failure"
            events.append(Event(result, when, {**base, "reason": "task-finished" if result == "session_success"
                                               else "task-failed", "exitCode": exit_code}))
    return events


def kernel_events(session, since: datetime | None = None) -> list[Event]:
    events = []
    for kernel in getattr(session, "_prefetched_objects_cache", {}).get("kernels", session.kernels.all()):
        base = {"sessionName": session.name, "ownerAccessKey": session.access_key_id, "sessionId": str(session.pk),
                "kernelId": str(kernel.pk), "clusterRole": kernel.cluster_role, "clusterIdx": kernel.cluster_idx}
        for entry in kernel.status_history or []:
            name = KERNEL_EVENT.get(entry["status"])
            when = datetime.fromisoformat(entry["timestamp"])
            if name is None or (since is not None and when <= since):
                continue
            terminal = entry["status"] in (KernelStatus.TERMINATED, KernelStatus.CANCELLED)
            events.append(Event(name, when, {**base, "reason": kernel.status_info if terminal else "",
                                             "exitCode": kernel.exit_code if terminal else None}))
    return events


def _main_kernel(session):
    kernels = getattr(session, "_prefetched_objects_cache", {}).get("kernels")
    if kernels is None:
        return None
    return next((k for k in kernels if k.cluster_role == "main"), None)


def events_for(sessions, scope: str = "*", since: datetime | None = None) -> list[Event]:
    collected: list[Event] = []
    for session in sessions:
        if scope in ("*", "session"):
            collected.extend(session_events(session, since))
        if scope in ("*", "kernel"):
            collected.extend(kernel_events(session, since))
    collected.sort(key=lambda e: e.when)
    return collected
