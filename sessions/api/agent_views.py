"""The kernel half of the agent API (docs/agent-protocol.md): the sync and the
events.  Thin: validate with the agents app's serializers, authenticate with its
token, call ``sessions.agent_sync``.  ``/agent-api/v1/shutdown`` stays with the
agents app (it only touches the agent row)."""
import json

from django.core.serializers.json import DjangoJSONEncoder
from rest_framework.response import Response

from agents.api.serializers import EventsSerializer, SyncSerializer
from agents.api.views import AgentAPIView
from backendai.api.authentication import client_address
from sessions import agent_longpoll, agent_sync


def _json(data):
    """Service payloads keep plain types (UUIDs as strings) like the wire format."""
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


class SyncView(AgentAPIView):
    serializer_class = SyncSerializer

    def post(self, request):
        params = SyncSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        payload = _json(params.validated_data)
        wait, known = payload.pop("wait", None), payload.pop("fingerprint", None)
        answer = agent_longpoll.sync(request.auth, payload, client_address(request), wait=wait, known=known)
        return Response(answer)


class EventsView(AgentAPIView):
    serializer_class = EventsSerializer

    def post(self, request):
        params = EventsSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = _json(params.validated_data)
        return Response({"accepted": agent_sync.record_events(request.auth, data["agent_id"], data["events"])})
