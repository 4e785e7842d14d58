"""Web UI for compute sessions: list, create, detail, logs, destroy, restart.

Thin views over ``sessions.services`` and ``sessions.enqueue``.  Live status
comes from server-rendered fragments (``*-rows``, ``detail-status``) that htmx
polls every 2 s (``hx-get``/``hx-trigger`` in the templates, with
``static/sessions/live.js`` for the page's part); every page also works without
JavaScript.  Fragment responses carry ``X-Live-Fragment: 1`` so the page never
swaps in, say, a login page after the user's session expired.  A view that also
answers a whole page serves the fragment to htmx (``request.htmx``, from
django-htmx's middleware) and to a request with ``X-Live-Fragment: 1``.
"""
from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents import services as agent_services
from backendai.api.errors import BackendAIError
from backendai.middleware_security import allow_form_targets
from sessions import hooks, services
from sessions.enqueue import enqueue
from sessions.filters import STATES, SessionListFilter, scopes_for
from sessions.forms import DestroyForm, SessionCreateForm, build_context, format_amount
from sessions.lifecycle import DEAD_SESSION, RUNNING_SESSION, SessionStatus
from sessions.models import Session, SessionType

PAGE_SIZE = 50
FRAGMENT_HEADER = "X-Live-Fragment"
HTMX_STOP_POLLING = 286  # htmx swaps the fragment, then polls no more


def _fragment(response):
    response[FRAGMENT_HEADER] = "1"
    response["Cache-Control"] = "no-store"
    return response


def _wants_fragment(request) -> bool:
    return bool(request.htmx) or request.headers.get(FRAGMENT_HEADER) == "1"


# --- list ---------------------------------------------------------------------------------------

def short_age(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def status_note(session: Session) -> str:
    """One line under a session's name: why it waits, or why it ended."""
    if session.status in RUNNING_SESSION:
        return ""
    if session.status == SessionStatus.PENDING:
        data = (session.status_data or {}).get("scheduler") or {}
        failed = [p for p in data.get("failed_predicates") or [] if isinstance(p, dict)]
        if failed:
            return failed[0].get("msg") or failed[0].get("name", "")
        return data.get("msg") or session.status_info
    return session.status_info


def _list_context(request) -> dict:
    filters = SessionListFilter(request.GET, services.visible_sessions(request.user), request=request)
    scope, state = filters.values["scope"], filters.values["state"]
    query = filters.qs.order_by("-created_at")
    if scope != "mine":
        query = query.select_related("user")
    query = query.defer("environ", "status_history", "vfolder_mounts", "last_stat", "bootstrap_script",
                        "startup_command", "resource_opts")
    page = Paginator(query, PAGE_SIZE).get_page(request.GET.get("page"))
    now = timezone.now()
    sessions = list(page.object_list)
    for session in sessions:
        session.age_shown = short_age(((session.terminated_at or now) - session.created_at).total_seconds())
        session.note = status_note(session)
    params = {"scope": scope, "state": state}
    if page.number > 1:
        params["page"] = page.number
    return {
        "page": page, "sessions": sessions, "scope": scope, "scopes": scopes_for(request.user), "state": state,
        "states": STATES, "show_owner": scope != "mine",
        "query": urlencode(params), "now": now,
    }


@login_required
@require_GET
def session_list(request):
    return render(request, "sessions/list.html", _list_context(request))


@login_required
@require_GET
def session_list_rows(request):
    """The list's table body, for live updates."""
    return _fragment(render(request, "sessions/_rows.html", _list_context(request)))


# --- create -------------------------------------------------------------------------------------

@login_required
@require_http_methods(["GET", "POST"])
def session_create(request):
    project_name = request.POST.get("project") or request.GET.get("project")
    context = build_context(request.user, project_name)
    if request.method == "POST":
        form = SessionCreateForm(request.POST, context=context)
        if form.is_valid():
            try:
                result = enqueue(request.user, request.user.main_keypair, form.enqueue_request())
            except BackendAIError as exc:
                form.attach_service_error(exc)
            else:
                session = result.session
                messages.success(request, f"Session {session.name} is queued.")
                return redirect("ui-sessions:detail", session_id=session.pk)
    else:
        initial = {}
        if request.GET.get("image"):
            initial["image"] = request.GET["image"]
        form = SessionCreateForm(context=context, initial=initial)
    return render(request, "sessions/create.html", {"form": form, "ctx": context})


# --- detail -------------------------------------------------------------------------------------

def _get_session(request, session_id) -> Session:
    """The session if the user may see it (services.get_session semantics), else 404."""
    try:
        return services.get_session(request.user, request.user.main_keypair, str(session_id))
    except BackendAIError:
        raise Http404("No such session") from None


def _parse_time(value):
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else timezone.make_aware(parsed)


def _timeline(session: Session, now) -> list[dict]:
    entries = []
    history = [(entry.get("status"), _parse_time(entry.get("timestamp"))) for entry in session.status_history or []]
    for index, (status, when) in enumerate(history):
        following = history[index + 1][1] if index + 1 < len(history) else None
        end = following or (None if session.status in DEAD_SESSION else now)
        seconds = (end - when).total_seconds() if end and when else None
        entries.append({"status": status, "when": when, "seconds": seconds, "current": index == len(history) - 1})
    return entries


def _waiting(session: Session) -> dict | None:
    """Why a PENDING session waits (or why the scheduler cancelled it), from status_data.scheduler."""
    data = (session.status_data or {}).get("scheduler") or {}
    if session.status != SessionStatus.PENDING and not (
            session.status == SessionStatus.CANCELLED and data.get("failed_predicates")):
        return None
    failed = []
    for item in data.get("failed_predicates") or []:
        if isinstance(item, dict):
            failed.append({"name": item.get("name", "?"), "msg": item.get("msg", "")})
        else:
            failed.append({"name": str(item), "msg": ""})
    passed = [item.get("name", "?") if isinstance(item, dict) else str(item)
              for item in data.get("passed_predicates") or []]
    last_try = _parse_time(data.get("last_try"))
    return {
        "info": session.status_info, "retries": data.get("retries"), "last_try": last_try,
        "last_try_ago": short_age((timezone.now() - last_try).total_seconds()) if last_try else "",
        "failed": failed, "passed": passed, "msg": data.get("msg", ""), "scheduled_yet": bool(data),
        "starts_at": session.starts_at, "cancelled": session.status == SessionStatus.CANCELLED,
    }


def _human_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


IDLE_LABELS = {"session_lifetime": "Session lifetime", "network_timeout": "Idle timeout (no activity)",
               "utilization": "Low utilisation"}


def _detail_context(request, session: Session) -> dict:
    now = timezone.now()
    kernels = list(session.kernels.all())
    main = next((k for k in kernels if k.cluster_role == "main"), kernels[0] if kernels else None)
    ports = []
    for port in (main.service_ports if main else []) or []:
        # never the raw host:port (it would skip the app proxy's permit): only whether it is published
        ports.append({"name": port.get("name"), "protocol": port.get("protocol"),
                      "container_ports": port.get("container_ports") or [],
                      "published": bool(port.get("host_ports")) and session.status in RUNNING_SESSION})
    idle = []
    if session.status in RUNNING_SESSION:
        for name, check in services.idle_checks(session, now).items():
            idle.append({"name": name, "label": IDLE_LABELS.get(name, name), "remaining": check["remaining"],
                         "shown": _human_seconds(check["remaining"])})
    user = request.user
    is_admin = user.is_superadmin or user.is_domain_admin
    error_data = None
    if session.status == SessionStatus.ERROR or (session.status_data and session.status in DEAD_SESSION
                                                 and "scheduler" not in (session.status_data or {})):
        error_data = session.status_data or None
    end = session.terminated_at or now
    waiting = _waiting(session)
    agents = services.agents_of(session)
    lost = [a for a in agents if a["status"] == "LOST"] if session.status not in DEAD_SESSION else []
    for agent in lost:
        lost_at = _parse_time(agent["lostAt"])
        agent["lost_for"] = short_age((now - lost_at).total_seconds()) if lost_at else ""
        agent["ends_in"] = (_human_seconds(settings.AGENT_LOST_GRACE - (now - lost_at).total_seconds())
                            if lost_at else "")
    states = {a["id"]: a["status"] for a in agents}
    for kernel in kernels:
        kernel.agent_state = states.get(kernel.agent_id)
    return {
        "lost_agents": lost,
        "lost_grace": _human_seconds(settings.AGENT_LOST_GRACE),
        "session": session, "kernels": kernels, "main_kernel": main, "ports": ports, "idle_checks": idle,
        "timeline": _timeline(session, now), "waiting": waiting,
        "status_note": "" if waiting else status_note(session),
        "error_data": error_data,
        "is_dead": session.status in DEAD_SESSION, "can_restart": session.status in RUNNING_SESSION,
        # the cards that work inside the main kernel (run code, files, commit) need its agent reachable
        "can_work": session.status in RUNNING_SESSION and not lost,
        "can_destroy": session.status not in DEAD_SESSION, "can_force": is_admin, "is_batch":
        session.session_type == SessionType.BATCH, "is_owner": session.user_id == user.pk,
        "lifetime": _human_seconds((end - session.created_at).total_seconds()),
        "requested": [(slot, format_amount(slot, amount)) for slot, amount in sorted(session.requested_slots.items())],
        "now": now,
        # kernels on the local-process backend run as the agent's own user, without isolation
        "local_process_agents": agent_services.local_process_agents({k.agent_id for k in kernels if k.agent_id}),
    }


@login_required
@require_GET
def session_detail(request, session_id):
    session = _get_session(request, session_id)
    context = _detail_context(request, session)
    response = render(request, "sessions/detail.html", context)
    if not context["is_dead"]:
        # the Open buttons (also those live updates add once it runs) POST to a view that redirects
        # to the app proxy's setup link: browsers check that redirect against this page's form-action
        allow_form_targets(response, hooks.form_targets())
    return response


@login_required
@require_GET
def session_detail_status(request, session_id):
    """The live part of the detail page (status, why it waits, timeline, kernels, ports)."""
    session = _get_session(request, session_id)
    context = _detail_context(request, session)
    # once the session is over there is nothing left to watch: htmx stops polling on this status
    status = HTMX_STOP_POLLING if context["is_dead"] and request.htmx else 200
    return _fragment(render(request, "sessions/_detail_live.html", context, status=status))


@login_required
@require_GET
def session_logs(request, session_id):
    """The main kernel's container log (asked fresh from its agent): a fragment for the
    detail page's "Refresh logs" button, or a whole page without JavaScript."""
    session = _get_session(request, session_id)
    logs = services.logs_of(session, wait_seconds=3.0)
    context = {"session": session, "logs": logs, "fetched_at": timezone.now()}
    if _wants_fragment(request):
        response = _fragment(render(request, "sessions/_logs.html", context))
    else:
        response = render(request, "sessions/logs.html", context)
    patch_vary_headers(response, ("HX-Request", FRAGMENT_HEADER))
    return response


@login_required
@require_POST
def session_destroy(request, session_id):
    session = _get_session(request, session_id)
    form = DestroyForm(request.POST)
    user = request.user
    forced = form.is_valid() and form.cleaned_data["forced"] and (user.is_superadmin or user.is_domain_admin)
    if forced and session.status == SessionStatus.PULLING and not user.is_superadmin:
        messages.error(request, "Only superadmins may force-destroy a session that is pulling its image.")
        return redirect("ui-sessions:detail", session_id=session.pk)
    try:
        destroyed = services.destroy(user, session, forced=bool(forced))
    except BackendAIError as exc:
        messages.error(request, f"Could not destroy {session.name}: {exc.msg or exc.error_title}")
    else:
        status = destroyed[0].status
        what = {SessionStatus.CANCELLED: "cancelled", SessionStatus.TERMINATED: "terminated"}.get(status, "terminating")
        messages.success(request, f"Session {session.name} is {what}{' (forced)' if forced else ''}.")
    return redirect("ui-sessions:detail", session_id=session.pk)


@login_required
@require_POST
def session_restart(request, session_id):
    session = _get_session(request, session_id)
    try:
        services.restart(session)
    except BackendAIError as exc:
        messages.error(request, f"Could not restart {session.name}: {exc.msg or exc.error_title}")
    else:
        messages.success(request, f"Session {session.name} is restarting.")
    return redirect("ui-sessions:detail", session_id=session.pk)
