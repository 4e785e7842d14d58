"""The web UI's "My usage" page (``/ui/my-usage/``, every signed-in user): the user's own
usage per UTC day or month as a server-rendered SVG chart and a table per project, from the
usage buckets (``sessions.usage_buckets``).  Operators see everyone's on their usage page
(``sessions.operators_ui.usage``).  Both pages link a CSV download of the shown period: the
``usage-buckets`` export (``sessions.usage_export``) through the API export's CSV writer, the
user's own rows on "My usage", and on the operators' page what the export's rules allow
(superadmins everything, domain admins their domain, anyone else refused)."""
from __future__ import annotations

from datetime import date, timedelta
from datetime import timezone as dt_timezone

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from backendai.api.errors import BackendAIError
from backendai.exports.request import parse_request
from backendai.exports.views import csv_response
from sessions import operators, usage_buckets, usage_export
from sessions.operators_ui import UsageForm


class MyUsageForm(forms.Form):
    granularity = forms.ChoiceField(choices=[("day", "Day"), ("month", "Month")], required=False, label="Per")
    start = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="To (included)", widget=forms.DateInput(attrs={"type": "date"}))


def _default_start(end: date, granularity: str) -> date:
    if granularity == "month":
        month = end.replace(day=1)
        for _ in range(11):
            month = (month - timedelta(days=1)).replace(day=1)
        return month
    return end - timedelta(days=29)


@require_GET
@login_required
def my_usage(request):
    today = timezone.now().astimezone(dt_timezone.utc).date()
    form = MyUsageForm(request.GET or None)
    context = {"form": form}
    if form.is_bound and not form.is_valid():
        return render(request, "sessions/my_usage.html", context, status=400)
    data = form.cleaned_data if form.is_bound else {}
    granularity = data.get("granularity") or "day"
    end = data.get("end") or today
    start = data.get("start") or _default_start(end, granularity)
    try:
        start, end = usage_buckets.parse_range(start.isoformat(), end.isoformat(), today)
        report = usage_buckets.usage_report(usage_buckets.scope_for(request.user, mine=True), start, end,
                                            "project", granularity)
    except BackendAIError as exc:
        context["error"] = str(exc.msg or exc.error_title)
        return render(request, "sessions/my_usage.html", context, status=400)
    bars = operators.chart_bars(report)
    context.update(report=report, bars=bars, chart_height=operators.CHART_HEIGHT, period_label=granularity,
                   chart_width=max(len(bars) * (operators.BAR_WIDTH + operators.BAR_GAP), 1))
    return render(request, "sessions/my_usage.html", context)


# --- CSV downloads of the shown period ------------------------------------------------------------

class UsageCSVForm(forms.Form):
    start = forms.DateField(required=False)
    end = forms.DateField(required=False)


def _csv(request, *, mine: bool, template: str, form_class, parse_period):
    """The ``usage-buckets`` rows of [start, end] as CSV; a bad query answers the page's 400."""
    now = timezone.now()
    today = now.astimezone(dt_timezone.utc).date()
    form = UsageCSVForm(request.GET or None)
    page = {"form": form_class(request.GET or None)}
    if form.is_bound and not form.is_valid():
        page["error"] = "Give dates as YYYY-MM-DD."
        return render(request, template, page, status=400)
    data = form.cleaned_data if form.is_bound else {}
    try:
        start, end = parse_period(data.get("start"), data.get("end"), today)
        report = usage_export.USAGE_BUCKETS
        export = parse_request(report, {"filter": {"period": {"after": start.isoformat(), "before": end.isoformat()}}},
                               f"{'my-usage' if mine else report.key}-{start:%Y%m%d}-{end:%Y%m%d}.csv", now)
        return csv_response(request, export, usage_export.rows(request.user, export, mine=mine))
    except BackendAIError as exc:
        page["error"] = str(exc.msg or exc.error_title)
        return render(request, template, page, status=400)


def _my_period(start, end, today):
    return usage_buckets.parse_range(start.isoformat() if start else None, end.isoformat() if end else None, today)


@require_GET
@login_required
def my_usage_csv(request):
    """``/ui/my-usage/csv/?start=&end=``: the signed-in user's own usage buckets, whatever their role."""
    return _csv(request, mine=True, template="sessions/my_usage.html", form_class=MyUsageForm,
                parse_period=_my_period)


@require_GET
@login_required
def usage_buckets_csv(request):
    """``/ui/usage-buckets/csv/?start=&end=``: the ``usage-buckets`` export for who may run it."""
    if not usage_export.USAGE_BUCKETS.allowed(request.user):
        raise PermissionDenied("Only superadmins and domain admins export the usage buckets.")
    return _csv(request, mine=False, template="operators/usage.html", form_class=UsageForm,
                parse_period=operators.parse_period)
