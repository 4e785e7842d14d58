"""The agent API (docs/agent-protocol.md).  Thin: validate, call services."""
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import longpoll, services
from agents.api.authentication import AgentTokenAuthentication, IsAgent
from agents.api.serializers import EventsSerializer, ShutdownSerializer, SyncSerializer
from backendai.api.authentication import client_address


def _json(data):
    """Service payloads keep plain types (UUIDs as strings) like the wire format."""
    import json

    from django.core.serializers.json import DjangoJSONEncoder

    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


class AgentAPIView(APIView):
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAgent]


class SyncView(AgentAPIView):
    serializer_class = SyncSerializer

    def post(self, request):
        params = SyncSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        payload = _json(params.validated_data)
        wait, known = payload.pop("wait", None), payload.pop("fingerprint", None)
        answer = longpoll.sync(request.auth, payload, client_address(request), wait=wait, known=known)
        return Response(answer)


class EventsView(AgentAPIView):
    serializer_class = EventsSerializer

    def post(self, request):
        params = EventsSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = _json(params.validated_data)
        return Response({"accepted": services.record_events(request.auth, data["agent_id"], data["events"])})


class ShutdownView(AgentAPIView):
    serializer_class = ShutdownSerializer

    def post(self, request):
        params = ShutdownSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        services.shutdown(request.auth, params.validated_data["agent_id"])
        return Response(status=204)
