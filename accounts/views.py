"""Web UI for accounts: login, dashboard, settings, the user's API keys and background tasks.
Thin views over ``accounts.services``.

The dashboard's live part (``live/``) and the settings page (``settings/``, the password on
``settings/password/``) are described in docs/web-ui.md.

The background task pages (``tasks/``, ``tasks/<id>/``) show the tasks the user may
see (``accounts.services.tasks``) and stay live the way the sessions pages do: htmx
polls a fragment every 2 s (``tasks/rows/``, ``tasks/<id>/status/``), each fragment
answers with ``X-Live-Fragment: 1``, and once nothing shown is pending or running the
fragment answers htmx with status 286, which stops the polling."""
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import services
from accounts.forms import (
    BootstrapScriptForm,
    KeypairActionForm,
    LoginForm,
    MainKeypairForm,
    OwnPasswordChangeForm,
    PreferencesForm,
    SshKeyForm,
)
from accounts.services import dashboard as dashboard_services
from accounts.services import preferences, profile
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
@require_GET
def dashboard_live(request):
    """The dashboard's live part (running sessions and their usage, quota, capacity, events),
    polled by htmx every few seconds; it never stops (a session may start any time)."""
    return _fragment(request, "accounts/_dashboard_live.html", dashboard_services.live_context(request.user),
                     final=False)


# --- the user's settings --------------------------------------------------------------------------

def _settings_forms(request, data=None, section=None) -> dict:
    """The settings page's forms, the one of ``section`` bound to ``data``."""
    user = request.user
    keypair = user.main_keypair
    prefs = preferences.preferences_for(user)
    choices = preferences.choices_for(user)
    bound = {"data": data} if data is not None else {}

    def pick(name):  # each form its own ids: the page holds several
        return {**(bound if section == name else {}), "auto_id": f"id_{name}_%s"}

    forms = {
        "keypair": MainKeypairForm(**pick("keypair"), keypairs=profile.own_active_keypairs(user),
                                   initial={"main_keypair": user.main_keypair_id}),
        "password": OwnPasswordChangeForm(user, **pick("password")),
        "preferences": PreferencesForm(**pick("preferences"), presets=choices.get("presets", []),
                                       resource_groups=choices.get("resource_groups", []), initial={
            "default_preset": prefs.default_preset, "default_resource_group": prefs.default_resource_group,
            "language": prefs.language, "time_zone": prefs.time_zone}),
    }
    if keypair is not None:
        forms["ssh"] = SshKeyForm(**pick("ssh"), initial={"ssh_public_key": keypair.ssh_public_key.strip()})
        forms["bootstrap"] = BootstrapScriptForm(**pick("bootstrap"),
                                                 initial={"bootstrap_script": keypair.bootstrap_script})
    return forms


def _apply_settings(request, section: str, form) -> str:
    """Store what a valid form says; returns the message.  A ValidationError leaves everything unchanged."""
    user, data = request.user, form.cleaned_data
    if section == "keypair":
        keypair = profile.set_main_keypair(user, data["main_keypair"])
        return f"The web UI now acts with keypair {keypair.access_key}."
    if section == "ssh":
        profile.set_ssh_public_key(user.main_keypair, data["ssh_public_key"])
        return "SSH public key saved." if data["ssh_public_key"] else "SSH public key removed."
    if section == "bootstrap":
        profile.set_bootstrap_script(user.main_keypair, data["bootstrap_script"])
        return "Bootstrap script saved."
    choices = preferences.choices_for(user)
    preferences.save_preferences(user, **{k: data[k] for k in PREFERENCE_FIELDS},
                                 allowed_presets=choices.get("presets", []),
                                 allowed_resource_groups=choices.get("resource_groups", []))
    return "Preferences saved."


PREFERENCE_FIELDS = ("default_preset", "default_resource_group", "language", "time_zone")


@login_required
@require_http_methods(["GET", "POST"])
def user_settings(request):
    status = 200
    if request.method == "POST":
        section = request.POST.get("section", "")
        if section not in SETTINGS_SECTIONS or (section in ("ssh", "bootstrap") and request.user.main_keypair is None):
            messages.error(request, "Unknown settings form.")
            return redirect("ui:settings")
        forms = _settings_forms(request, request.POST, section)
        form = forms[section]
        if form.is_valid():
            try:
                done = _apply_settings(request, section, form)
            except ValidationError as exc:
                _add_errors(form, exc)
            else:
                messages.success(request, done)
                return redirect(f"{reverse('ui:settings')}#{section}")
        status = 400
    else:
        forms = _settings_forms(request)
    keypair = request.user.main_keypair
    return render(request, "accounts/settings.html", {
        "forms": forms, "keypair": keypair, "policy": keypair.resource_policy if keypair else None,
        "password_changed_at": request.user.password_changed_at}, status=status)


SETTINGS_SECTIONS = ("keypair", "ssh", "bootstrap", "preferences")  # the password has its own page


def _add_errors(form, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


@login_required
@require_http_methods(["GET", "POST"])
def change_password(request):
    """Change one's password (current one, new one twice); the page a user whose administrator
    asked for a new password is sent to until they choose one (``accounts.middleware``)."""
    form = OwnPasswordChangeForm(request.user, request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if form.is_valid():
            try:
                profile.set_password(request.user, form.cleaned_data["new_password1"])
            except ValidationError as exc:
                form.add_error("new_password1", exc)
            else:
                update_session_auth_hash(request, request.user)  # this browser stays logged in
                messages.success(request, "Your password has been changed.")
                return redirect("ui:settings")
    forced = request.user.need_password_change
    return render(request, "accounts/password.html", {"form": form, "forced": forced},
                  status=400 if form.errors else 200)


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
