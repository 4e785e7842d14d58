"""Web UI for operators (superadmins only), mounted under /ui/ (agents/, images/, maintenance/, usage/) with the
``ui-operators`` namespace: agents (capacity and usage gauges, live status, bulk actions),
the image catalogue with a registry rescan, maintenance and usage statistics.  Thin views
over ``sessions.operators``; anyone but a superadmin gets 403."""
from __future__ import annotations

from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from backendai.api.errors import BackendAIError
from sessions import operators

FRAGMENT_HEADER = "X-Live-Fragment"


def superadmin_required(view):
    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_superadmin:
            raise PermissionDenied("Only superadmins may use the operators' pages.")
        return view(request, *args, **kwargs)
    return wrapped


def _refused(request, exc: BackendAIError) -> None:
    messages.error(request, str(exc.msg or exc.error_title))


# --- agents ---------------------------------------------------------------------------------------

class AgentActionForm(forms.Form):
    ACTIONS = [("drain", "Drain (no new sessions; running ones finish)"),
               ("schedulable", "Mark schedulable"),
               ("terminate", "Terminate their sessions"),
               ("force_terminate", "Force-terminate their sessions")]
    action = forms.ChoiceField(choices=ACTIONS, label="Action")


@require_GET
@superadmin_required
def agents(request):
    return render(request, "operators/agents.html", {
        "rows": operators.agent_rows(request.user), "form": AgentActionForm()})


@require_GET
@superadmin_required
def agent_rows(request):
    """The agents table's body, polled every 5 s (the checkboxes are kept by hx-preserve)."""
    response = render(request, "operators/_agent_rows.html", {"rows": operators.agent_rows(request.user)})
    response[FRAGMENT_HEADER] = "1"
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@superadmin_required
def agent_action(request):
    form = AgentActionForm(request.POST)
    chosen = request.POST.getlist("agent")
    if not form.is_valid():
        messages.error(request, "Choose an action.")
        return redirect("ui-operators:agents")
    action = form.cleaned_data["action"]
    try:
        if action == "drain":
            result = operators.drain(request.user, chosen)
            messages.success(request, f"Draining {result['agents']} agent(s): no new sessions go there; "
                                      f"{result['sessions']} session(s) there finish in their own time.")
        elif action == "schedulable":
            count = operators.set_schedulable(request.user, chosen, True)
            messages.success(request, f"{count} agent(s) schedulable.")
        else:
            count = operators.terminate_sessions_on(request.user, chosen, forced=action == "force_terminate")
            messages.success(request, f"Asked {count} session(s) on the selected agent(s) to terminate.")
    except BackendAIError as exc:
        _refused(request, exc)
    return redirect("ui-operators:agents")


# --- images ---------------------------------------------------------------------------------------

@require_GET
@superadmin_required
def images(request):
    return render(request, "operators/images.html", {"rows": operators.image_rows(request.user)})


@require_POST
@superadmin_required
def rescan(request):
    try:
        task_id = operators.start_rescan(request.user)
    except BackendAIError as exc:
        _refused(request, exc)
        return redirect("ui-operators:images")
    messages.success(request, "The registry rescan runs in the background; its progress is below.")
    return redirect(reverse("ui:task", kwargs={"task_id": task_id}))


# --- maintenance ----------------------------------------------------------------------------------

@require_GET
@superadmin_required
def maintenance(request):
    return render(request, "operators/maintenance.html", {"findings": operators.stuck_findings(request.user)})


@require_POST
@superadmin_required
def recalculate(request):
    result = operators.recalculate_usage(request.user)
    messages.success(request, f"Usage recalculated: {result['agents_changed']} agent(s) corrected, "
                              f"{result['keypairs_with_sessions']} keypair(s) with sessions.")
    return redirect("ui-operators:maintenance")


@require_POST
@superadmin_required
def clear_stuck(request):
    result = operators.clear_stuck(request.user)
    if result.skipped:
        messages.warning(request, "The reconciler is running elsewhere right now; try again in a moment.")
    else:
        done = {k: len(getattr(result, k)) for k in ("rescheduled", "failed_to_start", "forced", "agent_lost")}
        messages.success(request, "Stuck sessions cleared: " + ", ".join(
            f"{n} {k.replace('_', ' ')}" for k, n in done.items()) + ".")
    return redirect("ui-operators:maintenance")


# --- usage ----------------------------------------------------------------------------------------

class UsageForm(forms.Form):
    start = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="To (included)", widget=forms.DateInput(attrs={"type": "date"}))
    by = forms.ChoiceField(choices=[("user", "User"), ("project", "Project"), ("resource_group", "Resource group")], required=False, label="Per")


@require_GET
@superadmin_required
def usage(request):
    today = timezone.now().date()
    default_start, default_end = operators.parse_period(None, None, today)
    form = UsageForm(request.GET or None, initial={"start": default_start, "end": default_end, "by": "user"})
    if form.is_bound and not form.is_valid():
        return render(request, "operators/usage.html", {"form": form}, status=400)
    data = form.cleaned_data if form.is_bound else {}
    try:
        start, end = operators.parse_period(data.get("start"), data.get("end"), today)
        report = operators.usage_statistics(request.user, start, end, data.get("by") or "user")
    except BackendAIError as exc:
        return render(request, "operators/usage.html", {"form": form, "error": str(exc.msg or exc.error_title)},
                      status=400)
    bars = operators.chart_bars(report)
    return render(request, "operators/usage.html", {
        "form": form, "report": report, "bars": bars, "chart_height": operators.CHART_HEIGHT,
        "chart_width": max(len(bars) * (operators.BAR_WIDTH + operators.BAR_GAP), 1)})
