"""Web UI for accounts: login, dashboard, the user's API keys and background tasks.
Thin views over ``accounts.services``.

The background task pages (``tasks/``, ``tasks/<id>/``) show the tasks the user may
see (``accounts.services.tasks``) and stay live the way the sessions pages do: htmx
polls a fragment every 2 s (``tasks/rows/``, ``tasks/<id>/status/``), each fragment
answers with ``X-Live-Fragment: 1``, and once nothing shown is pending or running the
fragment answers htmx with status 286, which stops the polling."""
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import services
from accounts.forms import KeypairActionForm, LoginForm
from accounts.services import tasks as task_services
from backendai import services as manager_services
from backendai.api.errors import BackendAIError

NEW_SECRET_SESSION_KEY = "new_keypair_secret"


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


@login_required
def dashboard(request):
    context = services.dashboard_context(request.user)
    context["announcement"] = manager_services.get_announcement()
    return render(request, "accounts/dashboard.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def keypairs(request):
    if request.method == "POST":
        keypair, secret = services.create_keypair(request.user)
        request.session[NEW_SECRET_SESSION_KEY] = {"access_key": keypair.access_key, "secret_key": secret}
        messages.success(request, f"Created keypair {keypair.access_key}.")
        return redirect("ui:keypairs")
    new_secret = request.session.pop(NEW_SECRET_SESSION_KEY, None)  # shown exactly once
    rows = services.visible_keypairs(request.user).filter(user=request.user).order_by("-created_at")
    return render(request, "accounts/keypairs.html", {"keypairs": rows, "new_secret": new_secret})


@login_required
@require_POST
def keypair_action(request):
    form = KeypairActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Unknown keypair action.")
        return redirect("ui:keypairs")
    access_key = form.cleaned_data["access_key"]
    action = form.cleaned_data["action"]
    try:
        keypair = services.managed_keypair(request.user, access_key)
        if keypair.user_id != request.user.pk:
            raise BackendAIError("Not your keypair")
        if action == "regenerate":  # only the owner, who then sees the new secret once
            secret = services.regenerate_secret(keypair)
            request.session[NEW_SECRET_SESSION_KEY] = {"access_key": keypair.access_key, "secret_key": secret}
        else:
            services.set_keypair_active([keypair], action == "activate", request.user)
    except BackendAIError:
        messages.error(request, f"No keypair {access_key} of yours.")
    else:
        done = {"activate": "activated", "deactivate": "deactivated", "regenerate": "has a new secret key"}[action]
        messages.success(request, f"Keypair {access_key} {done}.")
    return redirect("ui:keypairs")


# --- background tasks -----------------------------------------------------------------------------

FRAGMENT_HEADER = "X-Live-Fragment"
HTMX_STOP_POLLING = 286  # htmx swaps the fragment, then polls no more


def _fragment(request, template: str, context: dict, final: bool):
    status = HTMX_STOP_POLLING if final and request.htmx else 200
    response = render(request, template, context, status=status)
    response[FRAGMENT_HEADER] = "1"
    response["Cache-Control"] = "no-store"
    return response


def _shown(task):
    """What a row shows beside the task's fields: its progress in percent (None while the
    total is unknown: an indeterminate bar) and whether it is over."""
    total, current = task.total_progress, task.current_progress
    task.percent = None if total <= 0 else max(0, min(100, round(100 * current / total)))
    task.over = task.status in task_services.FINISHED
    return task


def _tasks_context(request) -> dict:
    tasks = [_shown(t) for t in task_services.visible_background_tasks(request.user)[:task_services.LIMIT]]
    show_owner = services.is_admin_like(request.user)
    if show_owner:
        emails = task_services.owner_emails(tasks)
        for task in tasks:
            task.owner_email = emails.get(task.owner_id, "")
    return {"tasks": tasks, "show_owner": show_owner, "limit": task_services.LIMIT,
            "all_over": not task_services.any_unfinished(tasks)}


def _task_context(request, task_id) -> dict:
    task = task_services.visible_background_task(request.user, task_id)
    if task is None:
        raise Http404("No such background task")
    return {"task": _shown(task)}


@login_required
@require_GET
def background_tasks(request):
    return render(request, "accounts/tasks.html", _tasks_context(request))


@login_required
@require_GET
def background_task_rows(request):
    """The task list's table body, for live updates."""
    context = _tasks_context(request)
    return _fragment(request, "accounts/_task_rows.html", context, final=context["all_over"])


@login_required
@require_GET
def background_task_detail(request, task_id):
    return render(request, "accounts/task.html", _task_context(request, task_id))


@login_required
@require_GET
def background_task_status(request, task_id):
    """The live part of a task's page."""
    context = _task_context(request, task_id)
    return _fragment(request, "accounts/_task_live.html", context, final=context["task"].over)
