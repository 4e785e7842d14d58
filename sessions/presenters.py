"""What the sessions web UI shows, computed once for its views (``sessions.views``) so they stay thin:

* the list's rows: one page of sessions with their owner, the main kernel's service ports (a subquery, not a
  query per row), their live usage (``live_usage.session_usage``, one query for the page) and the actions a row
  offers; a constant number of queries whatever the number of sessions;
* the session page's idle-check countdowns ("terminates in 12 min if idle") and its folder mounts (folder ->
  path in the container, read only / read-write).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from urllib.parse import quote

from django.conf import settings
from django.db.models import JSONField, OuterRef, QuerySet, Subquery
from django.urls import reverse

from sessions import idle, live_usage
from sessions.lifecycle import DEAD_SESSION, RUNNING_SESSION
from sessions.models import Kernel, Session, SessionType

#: What a list row shows (the rest of a session, its environment or history, stays in the database).
LIST_FIELDS = ("id", "name", "status", "status_info", "status_data", "session_type", "result", "image",
               "architecture", "requested_slots", "scaling_group_id", "created_at", "terminated_at", "user_id",
               "domain_id", "user__email")
APP_PROTOCOLS = ("http", "preopen")


def list_rows(query: QuerySet) -> QuerySet:
    """The list's sessions, newest first, with the owner and the main kernel's service ports (``main_ports``)."""
    main_ports = (Kernel.objects.filter(session=OuterRef("pk"), cluster_role="main").order_by("cluster_idx")
                  .values("service_ports")[:1])
    return (query.order_by("-created_at").select_related("user").only(*LIST_FIELDS)
            .annotate(main_ports=Subquery(main_ports, output_field=JSONField())))


def row_apps(session: Session) -> list[str]:
    """The apps a row's "Open" offers: the main kernel's published HTTP service ports, while the session runs."""
    if session.status not in RUNNING_SESSION:
        return []
    ports = getattr(session, "main_ports", None)
    if not isinstance(ports, list):
        return []
    return [p["name"] for p in ports if isinstance(p, dict) and p.get("name") and p.get("host_ports")
            and p.get("protocol") in APP_PROTOCOLS]


_ZERO = uuid.UUID(int=0)
_APP = "--app--"


class _RowLinks:
    """A row's links, from one ``reverse`` per kind for the whole page (a page has 50 rows of up to 5 links)."""

    def __init__(self):
        kwargs = {"session_id": _ZERO}
        self.detail = reverse("ui-sessions:detail", kwargs=kwargs)
        self.logs = reverse("ui-sessions:logs", kwargs=kwargs)
        self.destroy = reverse("ui-sessions:destroy", kwargs=kwargs)
        self.open_app = reverse("ui-appproxy:open-app", args=[_ZERO, _APP])

    def of(self, session: Session, apps: list[str]) -> dict:
        key, zero = str(session.pk), str(_ZERO)
        open_app = self.open_app.replace(zero, key)
        return {"detail": self.detail.replace(zero, key), "logs": self.logs.replace(zero, key),
                "destroy": self.destroy.replace(zero, key),
                "apps": [(app, open_app.replace(_APP, quote(app, safe=""))) for app in apps]}


def decorate_rows(sessions: list[Session], user, now: datetime, *, age, note) -> None:
    """Adds to each session of a page what its row shows (one query for the usage of them all)."""
    live = [s.pk for s in sessions if s.status in RUNNING_SESSION]
    usage = live_usage.session_usage(live) if live else {}
    links = _RowLinks()
    for session in sessions:
        session.age_shown = age(((session.terminated_at or now) - session.created_at).total_seconds())
        session.note = note(session)
        session.is_live = session.status in RUNNING_SESSION
        session.usage = usage.get(session.pk)
        session.apps = row_apps(session)
        session.links = links.of(session, session.apps)
        session.can_destroy = session.status not in DEAD_SESSION
        session.is_own = session.user_id == user.pk


# --- the session page ---------------------------------------------------------------------------

def countdown(seconds: float) -> str:
    """``"2 h 05 min"``, ``"12 min"``, ``"45 s"`` (rounded up to the minute above one minute)."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    minutes = -(-seconds // 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min"


def _thresholds_text() -> str:
    thresholds = getattr(settings, "IDLE_UTILIZATION_THRESHOLDS", {}) or {}
    names = {"cpu_util": "CPU", "cuda_util": "GPU", "mem_used": "memory", "cuda_mem": "GPU memory"}
    parts = []
    for metric, limit in sorted(thresholds.items()):
        unit = " %" if metric.endswith("_util") else " bytes"
        parts.append(f"{names.get(metric, metric)} below {limit}{unit}")
    return " and ".join(parts)


def idle_countdowns(session: Session, now: datetime) -> list[dict]:
    """The idle checks that apply to a running session, soonest first: ``name``, ``label``, ``remaining``
    (seconds, negative once expired), ``deadline`` (when it ends the session if nothing changes), ``shown``
    ("terminates in 12 min if idle") and ``explain`` (what restarts the count)."""
    if session.status not in RUNNING_SESSION:
        return []
    rows = []
    for name, check in idle.report(session, now).items():
        remaining = float(check["remaining"])
        left = countdown(remaining)
        expired = remaining < 0
        if name == "session_lifetime":
            label = "Maximum lifetime"
            shown = "ends now" if expired else f"ends in {left}, idle or not"
            explain = "The keypair's resource policy limits how long a session lives."
        elif name == "network_timeout":
            label = "Idle timeout"
            shown = "terminates now (idle)" if expired else f"terminates in {left} if idle"
            explain = "Using an app, a terminal or the API on this session restarts the count."
        elif name == "utilization":
            label = "Low utilisation"
            window = countdown(getattr(settings, "IDLE_UTILIZATION_WINDOW", 600))
            shown = "terminates now (idle)" if expired else f"terminates in {left} if idle"
            explain = (f"Ends the session when its {window} average stays under the thresholds"
                       f"{': ' + _thresholds_text() if _thresholds_text() else ''}; busier use restarts the count.")
        else:
            label, shown, explain = name, f"{left} left", ""
        rows.append({"name": name, "label": label, "remaining": remaining, "shown": shown, "explain": explain,
                     "deadline": now + timedelta(seconds=max(remaining, 0)), "expired": expired})
    rows.sort(key=lambda row: row["remaining"])
    return rows


def mounts(session: Session) -> list[dict]:
    """The session's folders as mounted: ``name``, ``vfolder_id``, ``subpath`` (of the folder), ``path`` (in the
    container), ``mode`` (ro/rw) and ``mode_text``.  Never the host path (the storage's business)."""
    result = []
    for mount in session.vfolder_mounts if isinstance(session.vfolder_mounts, list) else []:
        if not isinstance(mount, dict):
            continue
        mode = str(mount.get("mode") or "rw")
        subpath = str(mount.get("subpath") or "")
        try:
            folder_id = str(uuid.UUID(str(mount.get("vfolder_id"))))
        except ValueError:
            folder_id = ""
        result.append({
            "name": str(mount.get("name") or mount.get("vfolder_id") or "?"),
            "vfolder_id": folder_id,
            "subpath": "" if subpath in ("", ".", "/") else subpath,
            "path": str(mount.get("container_path") or ""),
            "mode": mode,
            "mode_text": "read only" if mode == "ro" else "read-write",
        })
    return sorted(result, key=lambda m: m["path"])


def batch_result(session: Session, is_dead: bool) -> str:
    """What the summary says of a batch session's result: "" while it runs (no "result: undefined")."""
    if session.session_type != SessionType.BATCH:
        return ""
    if session.result and session.result != "undefined":
        return str(session.result)
    return "none recorded" if is_dead else ""
