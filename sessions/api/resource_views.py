"""``/resource/*`` and ``/scaling-groups``."""
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services as account_services
from agents import services as agent_services
from sessions import services, validation
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
