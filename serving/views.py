"""Web UI for model serving (the "Serving" page): the user's endpoints, the
create form, and an endpoint's page (replicas and their health, traffic from
the app proxy, replicas and traffic ratios, tokens, errors, the event log,
autoscaling rules, destroy).

Thin views over ``serving.services`` (``endpoints``, ``events``, ``autoscale``,
``definitions``) and the app proxy's numbers (``appproxy.gateway.coordinator()``).
Who may see or change an endpoint is the services' call: an endpoint
``endpoints.get_endpoint`` does not give the user is a 404 here; a change a
service refuses comes back beside its field (or as a message), and changes
nothing.  The health/traffic part of the endpoint page is a fragment that htmx
polls every 2 s (``static/sessions/live.js`` handles the live marks and
back-off, as on the session pages); every page works without JavaScript.
"""
from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from appproxy.gateway import coordinator
from backendai.api.errors import BackendAIError
from serving.forms import AutoScalingRuleForm, EndpointCreateForm, ScaleForm, TokenForm, TrafficRatioForm
from serving.models import Endpoint, LifecycleStage, RouteStatus
from serving.services import autoscale, definitions, endpoints, events

log = logging.getLogger(__name__)

FRAGMENT_HEADER = "X-Live-Fragment"
HTMX_STOP_POLLING = 286  # htmx swaps the fragment, then polls no more
TRAFFIC_WINDOW = 60  # seconds the rates and latencies are measured over
SERIES_MINUTES, SERIES_STEP = 15, 30
EVENTS_SHOWN = 30
CHART_WIDTH, CHART_HEIGHT = 240, 40


def _fragment(response):
    response[FRAGMENT_HEADER] = "1"
    response["Cache-Control"] = "no-store"
    return response


def _endpoint(request, endpoint_id, *, include_destroyed: bool = False) -> Endpoint:
    """The endpoint if the services let the user see it, else 404."""
    try:
        return endpoints.get_endpoint(request.user, str(endpoint_id), include_destroyed=include_destroyed)
    except BackendAIError:
        raise Http404("No such endpoint") from None


def _act(request, endpoint, action, *, done, failed: str):
    """A button's POST: run ``action`` (one service call), say how it went (``done(result)`` or
    ``failed: why``) and go back to the endpoint's page."""
    try:
        result = action()
    except BackendAIError as exc:
        messages.error(request, f"{failed}: {_refusal(exc)}")
    else:
        messages.success(request, done(result))
    return redirect("ui-serving:detail", endpoint_id=endpoint.pk)


def _refusal(exc: BackendAIError) -> str:
    return exc.msg or exc.error_title


# --- presentation helpers (no rules) ------------------------------------------------------------

def sparkline(values, width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> dict | None:
    """SVG polyline points for ``values`` (None: no sample there, skipped); None without two samples."""
    present = [(i, float(v)) for i, v in enumerate(values) if v is not None]
    if len(present) < 2 or len(values) < 2:
        return None
    top = max(v for _, v in present)
    scale = (height - 2) / top if top > 0 else 0
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 1 - v * scale:.1f}" for i, v in present)
    return {"points": points, "width": width, "height": height, "top": top, "last": present[-1][1]}


def milliseconds(seconds) -> str:
    return "—" if seconds is None else f"{float(seconds) * 1000:.1f} ms"


def _traffic(endpoint: Endpoint) -> dict:
    """The app proxy's numbers for the endpoint (``error`` says why there are none)."""
    if endpoint.lifecycle_stage == LifecycleStage.DESTROYED:
        return {"error": "", "traffic": None, "health": {}, "charts": {}}
    try:
        proxy = coordinator()
        traffic = proxy.endpoint_traffic(str(endpoint.pk), window_seconds=TRAFFIC_WINDOW)
        health = proxy.endpoint_health(str(endpoint.pk))
        series = proxy.endpoint_series(str(endpoint.pk), minutes=SERIES_MINUTES, step_seconds=SERIES_STEP)
    except BackendAIError as exc:
        log.debug("endpoint %s: no proxy numbers (%s)", endpoint.pk, _refusal(exc))
        return {"error": _refusal(exc), "traffic": None, "health": {}, "charts": {}}
    shown = dict(traffic)
    for key in ("latency_mean", "latency_p50", "latency_p99"):
        shown[key + "_shown"] = milliseconds(traffic.get(key))
    charts = {
        "request_rate": sparkline([point.get("request_rate") for point in series]),
        "latency_mean": sparkline([point.get("latency_mean") for point in series]),
    }
    return {"error": "", "traffic": shown, "health": health or {}, "charts": charts}


def _routes(endpoint: Endpoint, numbers: dict) -> list:
    per_route = ((numbers.get("traffic") or {}).get("per_route")) or {}
    routes = list(endpoint.routings.select_related("session").order_by("created_at"))
    for route in routes:
        route.proxy_health = numbers["health"].get(str(route.pk)) or {}
        route.proxy_traffic = per_route.get(str(route.pk)) or {}
        route.ratio_form = TrafficRatioForm(initial={"traffic_ratio": route.traffic_ratio},
                                            prefix=f"route-{route.pk}")
    return routes


def status_summary(endpoint: Endpoint, routes=None) -> str:
    """``2/3 healthy`` (healthy routes / replicas asked for), or the lifecycle stage once it ends."""
    if endpoint.lifecycle_stage != LifecycleStage.CREATED:
        return endpoint.get_lifecycle_stage_display().lower()
    if routes is None:
        healthy = endpoint.routings.filter(status=RouteStatus.HEALTHY).count()
    else:
        healthy = sum(1 for route in routes if route.status == RouteStatus.HEALTHY)
    return f"{healthy}/{endpoint.replicas} healthy"


def _errors(endpoint: Endpoint) -> dict:
    """``endpoints.errors`` with each failure's type and words picked out for the template."""
    found = endpoints.errors(endpoint)
    shown = []
    for item in found.get("errors") or []:
        error = item.get("error") if isinstance(item.get("error"), dict) else {}
        shown.append({"session_id": item.get("session_id") or "", "route_id": item.get("route_id") or "",
                      "type": str(error.get("type") or ""),
                      "message": str(error.get("message") or error.get("msg") or "failed to start")})
    return {"errors": shown, "retries": found.get("retries") or 0}


def _live_context(endpoint: Endpoint) -> dict:
    numbers = _traffic(endpoint)
    routes = _routes(endpoint, numbers)
    return {
        "endpoint": endpoint, "routes": routes, "summary": status_summary(endpoint, routes),
        "numbers": numbers, "traffic_window": TRAFFIC_WINDOW, "series_minutes": SERIES_MINUTES,
        "events": events.recent(endpoint, EVENTS_SHOWN), "errors": _errors(endpoint),
        "is_live": endpoint.lifecycle_stage == LifecycleStage.CREATED,
        "is_over": endpoint.lifecycle_stage == LifecycleStage.DESTROYED, "now": timezone.now(),
    }


def _detail_context(request, endpoint: Endpoint, **overrides) -> dict:
    context = _live_context(endpoint)
    context.update({
        "scale_form": ScaleForm(initial={"replicas": endpoint.replicas}),
        "token_form": TokenForm(),
        "rule_form": AutoScalingRuleForm(),
        "rules": list(endpoint.autoscaling_rules.order_by("created_at")),
        "tokens": list(endpoint.tokens.filter(expires_at__gt=timezone.now()).order_by("-created_at")[:10]),
        "new_token": None,
    })
    context.update(overrides)
    return context


def _detail(request, endpoint: Endpoint, status: int = 200, **overrides):
    response = render(request, "serving/detail.html", _detail_context(request, endpoint, **overrides), status=status)
    response["Cache-Control"] = "no-store"
    return response


# --- list and create ----------------------------------------------------------------------------

@login_required
@require_GET
def endpoint_list(request):
    rows = list(endpoints.visible_endpoints(request.user).order_by("-created_at"))
    for row in rows:
        row.summary = status_summary(row)
    show_owner = any(row.session_owner_id != request.user.pk for row in rows)
    return render(request, "serving/list.html", {"endpoints": rows, "show_owner": show_owner})


@login_required
@require_http_methods(["GET", "POST"])
def endpoint_create(request):
    runtimes = definitions.runtimes()
    if request.method == "POST":
        form = EndpointCreateForm(request.POST, user=request.user, runtimes=runtimes)
        if form.is_valid():
            try:
                endpoint = endpoints.create_endpoint(request.user, request.user.main_keypair, form.spec())
            except BackendAIError as exc:
                form.attach_service_error(exc)
            else:
                messages.success(request, f"Endpoint {endpoint.name} is created; its replicas are starting.")
                return redirect("ui-serving:detail", endpoint_id=endpoint.pk)
    else:
        initial = {"model": request.GET.get("model", "")} if request.GET.get("model") else {}
        form = EndpointCreateForm(user=request.user, runtimes=runtimes, initial=initial)
    status = 400 if request.method == "POST" else 200
    return render(request, "serving/create.html", {"form": form, "runtimes": runtimes}, status=status)


# --- an endpoint --------------------------------------------------------------------------------

@login_required
@require_GET
def endpoint_detail(request, endpoint_id):
    return _detail(request, _endpoint(request, endpoint_id, include_destroyed=True))


@login_required
@require_GET
def endpoint_live(request, endpoint_id):
    """The live part of the endpoint page (replicas, health, traffic, errors, events)."""
    endpoint = _endpoint(request, endpoint_id, include_destroyed=True)
    context = _live_context(endpoint)
    status = HTMX_STOP_POLLING if context["is_over"] and request.htmx else 200
    return _fragment(render(request, "serving/_live.html", context, status=status))


@login_required
@require_POST
def endpoint_scale(request, endpoint_id):
    endpoint = _endpoint(request, endpoint_id)
    form = ScaleForm(request.POST)
    if form.is_valid():
        try:
            endpoints.scale(request.user, endpoint, form.cleaned_data["replicas"])
        except BackendAIError as exc:
            form.attach_service_error(exc)
        else:
            messages.success(request, f"{endpoint.name}: {form.cleaned_data['replicas']} replicas asked for.")
            return redirect("ui-serving:detail", endpoint_id=endpoint.pk)
    return _detail(request, endpoint, status=400, scale_form=form)


@login_required
@require_POST
def route_traffic_ratio(request, endpoint_id, route_id):
    endpoint = _endpoint(request, endpoint_id)
    form = TrafficRatioForm(request.POST, prefix=f"route-{route_id}")
    if form.is_valid():
        try:
            endpoints.set_traffic_ratio(request.user, endpoint, str(route_id), form.cleaned_data["traffic_ratio"])
        except BackendAIError as exc:
            messages.error(request, f"Could not change the traffic ratio: {_refusal(exc)}")
        else:
            messages.success(request, f"The route's traffic ratio is now {form.cleaned_data['traffic_ratio']:g}.")
    else:
        messages.error(request, "Traffic ratio: " + " ".join(form.errors.get("traffic_ratio", ["invalid value"])))
    return redirect("ui-serving:detail", endpoint_id=endpoint.pk)


@login_required
@require_POST
def endpoint_token(request, endpoint_id):
    """Issue an API token: shown on this response only (no redirect, no cache)."""
    endpoint = _endpoint(request, endpoint_id)
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _detail(request, endpoint, status=400, token_form=form)
    try:
        issued, token = endpoints.issue_token(request.user, endpoint, form.cleaned_data["duration"])
    except BackendAIError as exc:
        form.add_error("duration", _refusal(exc))
        return _detail(request, endpoint, status=400, token_form=form)
    return _detail(request, endpoint, new_token={"token": token, "expires_at": issued.expires_at, "id": issued.pk})


@login_required
@require_POST
def endpoint_revoke_tokens(request, endpoint_id):
    endpoint = _endpoint(request, endpoint_id)
    return _act(request, endpoint, lambda: endpoints.revoke_tokens(request.user, endpoint),
                done=lambda revoked: f"All API tokens of {endpoint.name} are revoked ({revoked} listed); "
                                     "the endpoint refuses them within seconds.",
                failed="Could not revoke the tokens")


@login_required
@require_POST
def endpoint_clear_errors(request, endpoint_id):
    endpoint = _endpoint(request, endpoint_id)
    return _act(request, endpoint, lambda: endpoints.clear_errors(request.user, endpoint),
                done=lambda _: "Errors cleared; failed replicas are retried.", failed="Could not clear the errors")


@login_required
@require_POST
def endpoint_destroy(request, endpoint_id):
    endpoint = _endpoint(request, endpoint_id)
    try:
        endpoints.destroy(request.user, endpoint)
    except BackendAIError as exc:
        messages.error(request, f"Could not destroy {endpoint.name}: {_refusal(exc)}")
        return redirect("ui-serving:detail", endpoint_id=endpoint.pk)
    messages.success(request, f"Endpoint {endpoint.name} is being destroyed.")
    return redirect("ui-serving:list")


@login_required
@require_POST
def rule_create(request, endpoint_id):
    endpoint = _endpoint(request, endpoint_id)
    form = AutoScalingRuleForm(request.POST)
    if form.is_valid():
        try:
            autoscale.create_rule(request.user, str(endpoint.pk), form.spec())
        except BackendAIError as exc:
            form.attach_service_error(exc)
        else:
            messages.success(request, "Autoscaling rule added.")
            return redirect("ui-serving:detail", endpoint_id=endpoint.pk)
    return _detail(request, endpoint, status=400, rule_form=form)


@login_required
@require_POST
def rule_delete(request, endpoint_id, rule_id):
    endpoint = _endpoint(request, endpoint_id)
    return _act(request, endpoint, lambda: autoscale.delete_rule(request.user, str(rule_id), str(endpoint.pk)),
                done=lambda _: "Autoscaling rule deleted.", failed="Could not delete the rule")
