"""The agent API (docs/agent-protocol.md) and the container registries of the client API.
Thin: validate, call services.

The sync and the events are about kernels and live in the sessions app
(``sessions/api/agent_views.py``); they share this module's authentication."""
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import services
from agents.api.authentication import AgentTokenAuthentication, IsAgent
from agents.api.serializers import ShutdownSerializer


class ContainerRegistriesView(APIView):
    """``GET /resource/container-registries`` and ``GET /config/docker-registries`` (superadmins):
    ``{hostname: url}``, never a password."""

    def get(self, request):
        return Response(services.known_registries(request.user))


class AgentAPIView(APIView):
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAgent]


class ShutdownView(AgentAPIView):
    serializer_class = ShutdownSerializer

    def post(self, request):
        params = ShutdownSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        services.shutdown(request.auth, params.validated_data["agent_id"])
        return Response(status=204)
