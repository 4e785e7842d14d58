"""``/resource/*`` and ``/scaling-groups``."""
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services as account_services
from agents import services as agent_services
from backendai.api import errors
from sessions import services, usage, validation
from sessions.models import ResourcePreset


class PresetsView(APIView):
    def get(self, request):
        return Response({"presets": [
            {"name": p.name, "resource_slots": p.resource_slots,
             "shared_memory": str(p.shared_memory) if p.shared_memory is not None else None,
             "scaling_group_name": p.scaling_group_id}
            for p in ResourcePreset.objects.all()]})


class CheckPresetsView(APIView):
    def post(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        group = validation.check_query_text(data.get("group") or "default", "group", validation.GROUP_MAX)
        scaling_group = validation.check_query_text(data.get("scaling_group") or None, "scaling_group",
                                                    validation.SCALING_GROUP_MAX)
        project = account_services.project_for_user(request.user, group)
        return Response(services.check_presets(request.user, request.auth, project, scaling_group))


class ScalingGroupsView(APIView):
    def get(self, request):
        group = validation.check_query_text(request.query_params.get("group"), "group", validation.GROUP_MAX)
        project = account_services.project_for_user(request.user, group) if group else None
        groups = agent_services.allowed_scaling_groups(request.user, project).order_by("name")
        return Response({"scaling_groups": [{"name": g.pk} for g in groups]})


def _params(request, *names: str) -> dict:
    """The named parameters from the JSON body (23.09 and 24.09 clients send a GET with one) or
    the query string (26.09 clients; a repeated name is joined with commas)."""
    body = request.data
    if not body:
        body = {}
    if not isinstance(body, dict):
        raise errors.InvalidAPIParameters("The body must be a JSON object")
    found = {}
    for name in names:
        if name in body:
            found[name] = body[name]
        elif name in request.query_params:
            found[name] = ",".join(request.query_params.getlist(name))
    return found


class UsageMonthView(APIView):
    """``GET /resource/usage/month?month=YYYYMM&group_ids=a,b`` (admins)."""

    def get(self, request):
        params = _params(request, "month", "group_ids")
        return Response(usage.usage_per_month(request.user, params.get("month"), params.get("group_ids")))


class UsagePeriodView(APIView):
    """``GET /resource/usage/period?start_date=YYYYMMDD&end_date=YYYYMMDD&group_id=a`` (admins);
    ``project_id`` (26.09's name) and ``group_ids`` are taken too."""

    def get(self, request):
        params = _params(request, "start_date", "end_date", "group_id", "project_id", "group_ids")
        named = [params[k] for k in ("group_id", "project_id", "group_ids") if params.get(k) is not None]
        if len(named) > 1:
            raise errors.InvalidAPIParameters("Give the group as one of group_id, project_id or group_ids")
        return Response(usage.usage_per_period(request.user, params.get("start_date"), params.get("end_date"),
                                               named[0] if named else None))


class RecalculateUsageView(APIView):
    """``POST /resource/recalculate-usage`` (superadmins): answers ``{}``."""

    def post(self, request):
        usage.recalculate_usage(request.user)
        return Response({})
