from django.urls import path

from agents.consumers import AgentLinkConsumer

websocket_urlpatterns = [path("agent-api/v1/link", AgentLinkConsumer.as_asgi())]
