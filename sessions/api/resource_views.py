"""``/resource/*`` and ``/scaling-groups``."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services as account_services
from agents import services as agent_services
from backendai.api import errors
from backendai.api.schema import problem_responses
from sessions import services, usage, usage_buckets, usage_search, validation
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


# --- OpenAPI descriptions of the usage views (drf-spectacular) -------------------------------------

def _query(name: str, description: str, **extra) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.STR, OpenApiParameter.QUERY, description=description, **extra)


def _slot_hours():
    return serializers.DictField(child=serializers.FloatField(), help_text="slot-hours per slot (mem in GiB-hours)")


class UsageStatsBucketSchema(serializers.Serializer):
    period = serializers.CharField(help_text="YYYY-MM-DD (day) or YYYY-MM (month), UTC")
    user_id = serializers.UUIDField(required=False)
    user_email = serializers.CharField(required=False)
    project_id = serializers.UUIDField(required=False)
    project_name = serializers.CharField(required=False)
    domain_name = serializers.CharField(required=False)
    resource_group = serializers.CharField(required=False)
    sessions = serializers.IntegerField()
    kernels = serializers.IntegerField()
    usage = _slot_hours()


class UsageStatsSchema(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    granularity = serializers.ChoiceField(choices=["day", "month"])
    group_by = serializers.ListField(child=serializers.CharField())
    timezone = serializers.CharField()
    units = serializers.DictField(child=serializers.CharField(), help_text="each slot's unit, e.g. core-hours")
    buckets = UsageStatsBucketSchema(many=True)
    totals = _slot_hours()


class UsageFigureSchema(serializers.Serializer):
    value = serializers.FloatField()
    unit_hint = serializers.CharField()


class UsageDaySchema(serializers.Serializer):
    date = serializers.IntegerField(help_text="UNIX timestamp of the UTC day's start")
    num_sessions = UsageFigureSchema()
    cpu_allocated = UsageFigureSchema()
    mem_allocated = UsageFigureSchema()
    gpu_allocated = UsageFigureSchema()
    usage = _slot_hours()


class UsageBucketEntrySchema(serializers.Serializer):
    resource_type = serializers.CharField()
    quantity = serializers.CharField()


class UsageBucketEntriesSchema(serializers.Serializer):
    entries = UsageBucketEntrySchema(many=True)


class UsageBucketMetadataSchema(serializers.Serializer):
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    decay_unit_days = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    average_daily_usage = UsageBucketEntriesSchema()
    usage_capacity_ratio = UsageBucketEntriesSchema()


class UsageBucketSchema(serializers.Serializer):
    id = serializers.UUIDField()
    domain_name = serializers.CharField()
    resource_group = serializers.CharField()
    project_id = serializers.UUIDField(required=False, help_text="projects and users")
    user_uuid = serializers.UUIDField(required=False, help_text="users")
    metadata = UsageBucketMetadataSchema()
    resource_usage = UsageBucketEntriesSchema()
    capacity_snapshot = UsageBucketEntriesSchema()


class UsageBucketPaginationSchema(serializers.Serializer):
    total = serializers.IntegerField()
    offset = serializers.IntegerField()
    limit = serializers.IntegerField()


class UsageBucketSearchSchema(serializers.Serializer):
    items = UsageBucketSchema(many=True)
    pagination = UsageBucketPaginationSchema()


class UsageBucketSearchInputSchema(serializers.Serializer):
    filter = serializers.DictField(required=False, help_text=(
        "resource_group, domain_name, project_id (projects, users), user_uuid (users) and "
        "period_start {after, before} (dates, both included; default the last 30 days)"))
    order = serializers.ListField(child=serializers.DictField(), required=False,
                                  help_text="[{field: period_start, direction: asc|desc}]")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=usage_search.MAX_LIMIT, default=20)
    offset = serializers.IntegerField(required=False, min_value=0, default=0)


_USAGE_ENTRIES = {"type": "array", "items": {"type": "object", "additionalProperties": True}, "description": (
    "one entry per session (or per project and session) as the 23.09-26.09 clients print them")}

class UsageMonthView(APIView):
    """``GET /resource/usage/month?month=YYYYMM&group_ids=a,b`` (admins)."""

    @extend_schema(tags=["usage"], summary="Usage per session in a month (admins)", parameters=[
        _query("month", "YYYYMM", required=True), _query("group_ids", "comma-separated project ids")],
        responses={200: OpenApiResponse(_USAGE_ENTRIES, description="one entry per project and session"),
                   **problem_responses(400, 401, 403)})
    def get(self, request):
        params = _params(request, "month", "group_ids")
        return Response(usage.usage_per_month(request.user, params.get("month"), params.get("group_ids")))


class UsagePeriodView(APIView):
    """``GET /resource/usage/period?start_date=YYYYMMDD&end_date=YYYYMMDD&group_id=a`` (admins);
    ``project_id`` (26.09's name) and ``group_ids`` are taken too."""

    @extend_schema(tags=["usage"], summary="Usage per session over a period (admins)", parameters=[
        _query("start_date", "YYYYMMDD", required=True), _query("end_date", "YYYYMMDD", required=True),
        _query("group_id", "a project id"), _query("project_id", "a project id (26.09's name)"),
        _query("group_ids", "a project id (one of group_id, project_id, group_ids)")],
        responses={200: OpenApiResponse(_USAGE_ENTRIES, description="one entry per session"),
                   **problem_responses(400, 401, 403)})
    def get(self, request):
        params = _params(request, "start_date", "end_date", "group_id", "project_id", "group_ids")
        named = [params[k] for k in ("group_id", "project_id", "group_ids") if params.get(k) is not None]
        if len(named) > 1:
            raise errors.InvalidAPIParameters("Give the group as one of group_id, project_id or group_ids")
        return Response(usage.usage_per_period(request.user, params.get("start_date"), params.get("end_date"),
                                               named[0] if named else None))


class RecalculateUsageView(APIView):
    """``POST /resource/recalculate-usage`` (superadmins): answers ``{}``."""

    @extend_schema(tags=["usage"], summary="Recalculate usage (superadmins)", request=None,
                   responses={200: OpenApiResponse(description="{}"), **problem_responses(401, 403)})
    def post(self, request):
        usage.recalculate_usage(request.user)
        return Response({})


class UsageStatsView(APIView):
    """``GET /resource/stats?start=&end=&granularity=day|month&group_by=user,project,resource_group``:
    slot-hours per UTC day (or month) of what the caller may see (``sessions.usage_buckets``)."""

    @extend_schema(tags=["usage"], summary="Usage in slot-hours per day or month", parameters=[
        _query("start", "YYYY-MM-DD, UTC (default 29 days before end)"), _query("end", "YYYY-MM-DD (default today)"),
        _query("granularity", "day or month", enum=["day", "month"]),
        _query("group_by", "comma-separated: user, project, resource_group, domain"),
        _query("mine", "true: only the caller's own usage (admins)"),
        _query("project_id", "comma-separated project ids"), _query("user_id", "comma-separated user ids"),
        _query("resource_group", "a resource group's name")],
        responses={200: UsageStatsSchema, **problem_responses(400, 401)})
    def get(self, request):
        names = ("start", "end", "granularity", "group_by", "mine", "project_id", "user_id", "resource_group")
        params = {name: ",".join(request.query_params.getlist(name)) for name in names if name in request.query_params}
        return Response(usage_buckets.statistics(request.user, params))


class UserMonthStatsView(APIView):
    """``GET /resource/stats/user/month``: the caller's own usage over the last 30 days, per day."""

    @extend_schema(tags=["usage"], summary="The caller's usage over the last 30 days",
                   responses={200: UsageDaySchema(many=True), **problem_responses(401)})
    def get(self, request):
        return Response(usage_buckets.monthly_series(request.user, admin=False))


class AdminMonthStatsView(APIView):
    """``GET /resource/stats/admin/month`` (admins): the domain's (superadmins: everyone's) usage
    over the last 30 days, per day."""

    @extend_schema(tags=["usage"], summary="The domain's (superadmins: everyone's) usage over the last 30 days",
                   responses={200: UsageDaySchema(many=True), **problem_responses(401, 403)})
    def get(self, request):
        return Response(usage_buckets.monthly_series(request.user, admin=True))


class UsageBucketSearchView(APIView):
    """``POST /fair-share/usage-buckets/<domains|projects|users>/search`` (26.09 clients'
    ``resource-usage ... list``; admins): the daily usage buckets, paginated."""

    @extend_schema(tags=["usage"], summary="Search the daily usage buckets (admins)", parameters=[
        OpenApiParameter("level", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(usage_search.LEVELS))],
        request=UsageBucketSearchInputSchema, responses={200: UsageBucketSearchSchema, **problem_responses(400, 401, 403, 404)})
    def post(self, request, level):
        return Response(usage_search.search(request.user, level, request.data))
