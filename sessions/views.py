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
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents import services as agent_services
from backendai.api.errors import BackendAIError
from backendai.middleware_security import allow_form_targets
from sessions import hooks, launch_check, live_usage, presenters, services
from sessions.enqueue import enqueue
from sessions.filters import STATES, STATUSES, TYPES, SessionListFilter, scopes_for
from sessions.forms import DestroyForm, SessionCreateForm, attach_bounds, build_context, format_amount, initial_choices
from sessions.lifecycle import DEAD_SESSION, RUNNING_SESSION, SessionStatus
from sessions.models import Session, SessionType

PAGE_SIZE = 50
FRAGMENT_HEADER = "X-Live-Fragment"
ROWS_TEMPLATE = "sessions/_rows.html"
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


def _list_links(values: dict, page_number: int) -> dict:
    """The query strings of the tabs, the pager and the live rows, each keeping the other filters in force."""
    kept = {name: value for name, value in values.items() if value}

    def link(**changes) -> str:
        params = {**kept, **changes}
        return urlencode({k: v for k, v in params.items() if v not in ("", None)})

    return {
        "scope_links": {key: link(scope=key) for key in ("mine", "domain", "all")},
        "state_links": {key: link(state=key) for key, _ in STATES},
        "page_link": link(page=None),  # the pager appends &page=N
        "query": link(page=page_number if page_number > 1 else None),
        "clear_link": urlencode({"scope": values["scope"], "state": values["state"]}),
    }


def _list_context(request, *, full_page: bool = True) -> dict:
    """The list's page (or its rows): the filtered sessions, one page of them, each with its live usage, the
    apps it can open and its age.  A constant number of queries whatever the number of sessions: the page's
    count and rows (with the owner and the main kernel's service ports), their usage (``live_usage``), and on
    the whole page the resource groups of the filter's menu."""
    filters = SessionListFilter(request.GET, services.visible_sessions(request.user), request=request)
    values = filters.values
    page = Paginator(presenters.list_rows(filters.qs), PAGE_SIZE).get_page(request.GET.get("page"))
    now = timezone.now()
    sessions = list(page.object_list)
    user = request.user
    presenters.decorate_rows(sessions, user, now, age=short_age, note=status_note)
    is_admin = user.is_superadmin or user.is_domain_admin
    context = {
        "page": page, "sessions": sessions, "scope": values["scope"], "scopes": scopes_for(user),
        "state": values["state"], "states": STATES, "filters": values, "ignored": filters.ignored,
        "narrowed": filters.narrowed, "show_owner": values["scope"] != "mine" or bool(values["owner"]),
        "is_admin": is_admin, "now": now, "statuses": STATUSES, "types": TYPES,
        "list_path": request.path if full_page else reverse("ui-sessions:list"),
        **_list_links(values, page.number),
    }
    if full_page:
        groups = set(agent_services.visible_scaling_groups(user).values_list("name", flat=True))
        if values["group"]:
            groups.add(values["group"])
        context["groups"] = sorted(groups)
    return context


def _rows(request, context: dict) -> str:
    """The table's rows: a Jinja2 template (templates/jinja2/sessions/_rows.html, backendai/jinja.py)."""
    return mark_safe(render_to_string(ROWS_TEMPLATE, context, request, using="jinja2"))  # escaped by Jinja2


@login_required
@require_GET
def session_list(request):
    context = _list_context(request)
    context["rows"] = _rows(request, context)
    response = render(request, "sessions/list.html", context)
    # the rows' Open buttons POST to a view that redirects to the app proxy's setup link
    allow_form_targets(response, hooks.form_targets())
    return response


@login_required
@require_GET
def session_list_rows(request):
    """The list's table body, for live updates."""
    return _fragment(HttpResponse(_rows(request, _list_context(request, full_page=False))))


# --- create -------------------------------------------------------------------------------------

def _launch(request, form) -> Session | None:
    """Queue the form's request, unless ``launch_check`` refuses it at once (it could never start,
    or it is over the owner's quota): then, like a refusal of ``enqueue``, the reason goes beside
    its field and None comes back."""
    try:
        assessment = launch_check.assess(request.user, request.user.main_keypair, form.enqueue_request())
        if assessment.verdict == launch_check.REFUSE:
            form.attach_refusals(assessment)
            return None
        return enqueue(request.user, request.user.main_keypair, form.enqueue_request()).session
    except BackendAIError as exc:
        form.attach_service_error(exc)
        return None


@login_required
@require_http_methods(["GET", "POST"])
def session_create(request):
    project_name = request.POST.get("project") or request.GET.get("project")
    context = build_context(request.user, project_name)
    if request.method == "POST":
        attach_bounds(context, request.POST)
        form = SessionCreateForm(request.POST, context=context)
        session = _launch(request, form) if form.is_valid() else None
        if session is not None:
            # shown in the page's live summary while it is true only (never a stale "queued" banner)
            messages.success(request, f"Session {session.name} is queued.",
                             extra_tags=status_message_tags(session.status))
            return redirect("ui-sessions:detail", session_id=session.pk)
    else:
        initial = initial_choices(request.user, context)
        if request.GET.get("image"):
            initial["image"] = request.GET["image"]
        attach_bounds(context, initial)
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


def _status_messages(request, session: Session, *, keep: bool = False) -> list:
    """The messages that hold while the session stays in its status ("is queued", "is restarting"), for the
    live summary; those of a status it has left are not shown (never a stale "queued" banner).  The whole
    page consumes the user's messages; the polled fragment (``keep``) reads them and leaves them for it."""
    wanted = f"while-{session.status}"
    storage = messages.get_messages(request)
    shown = []
    for message in storage:
        tags = (message.extra_tags or "").split()
        if "session-status" in tags and wanted in tags:
            shown.append(message)
    if keep:
        storage.used = False  # Django's documented way to read messages without clearing them
    return shown


def _detail_context(request, session: Session, *, fragment: bool = False) -> dict:
    now = timezone.now()
    kernels = list(session.kernels.all())
    main = next((k for k in kernels if k.cluster_role == "main"), kernels[0] if kernels else None)
    ports = []
    for port in (main.service_ports if main else []) or []:
        # never the raw host:port (it would skip the app proxy's permit): only whether it is published
        ports.append({"name": port.get("name"), "protocol": port.get("protocol"),
                      "container_ports": port.get("container_ports") or [],
                      "published": bool(port.get("host_ports")) and session.status in RUNNING_SESSION})
    idle = presenters.idle_countdowns(session, now)
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
        kernel.usage = live_usage.kernel_usage(kernel)  # what its own last report says (no query)
    is_dead = session.status in DEAD_SESSION
    return {
        "usage": live_usage.usage_of(session.pk) if session.status in RUNNING_SESSION else None,
        "mounts": presenters.mounts(session),
        "status_messages": _status_messages(request, session, keep=fragment),
        "batch_result": presenters.batch_result(session, is_dead),
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
    context = _detail_context(request, session, fragment=True)
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
    back = _safe_next(request)
    try:
        destroyed = services.destroy(user, session, forced=bool(forced))
    except BackendAIError as exc:
        messages.error(request, f"Could not destroy {session.name}: {exc.msg or exc.error_title}")
    else:
        status = destroyed[0].status
        what = {SessionStatus.CANCELLED: "cancelled", SessionStatus.TERMINATED: "terminated"}.get(status, str(status).lower())
        if status in DEAD_SESSION:  # final: true for good
            messages.success(request, f"Session {session.name} is {what}{' (forced)' if forced else ''}.")
        else:  # not "is terminating", which the live status would soon contradict
            messages.success(request, f"Session {session.name}: destroy requested{' (forced)' if forced else ''}.")
    if back:
        return redirect(back)
    return redirect("ui-sessions:detail", session_id=session.pk)


def _safe_next(request) -> str:
    """The list page to return to (a row's Destroy), when ``next`` is a path of this site; else ""."""
    target = (request.POST.get("next") or "").strip()
    list_path = reverse("ui-sessions:list")
    if (len(target) <= 2048 and target.startswith(list_path)
            and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                require_https=request.is_secure())):
        return target
    return ""


def status_message_tags(status: str) -> str:
    """A message that holds while the session stays in ``status``: the detail page shows it in the live
    summary until the status moves on (``_status_messages``); base.html leaves it out."""
    return f"in-card session-status while-{status}"


@login_required
@require_POST
def session_restart(request, session_id):
    session = _get_session(request, session_id)
    try:
        services.restart(session)
    except BackendAIError as exc:
        messages.error(request, f"Could not restart {session.name}: {exc.msg or exc.error_title}")
    else:
        messages.success(request, f"Session {session.name} is restarting.",
                         extra_tags=status_message_tags(SessionStatus.RESTARTING))
    return redirect("ui-sessions:detail", session_id=session.pk)
