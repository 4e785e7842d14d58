"""Websocket routes of every app."""
from agents.routing import websocket_urlpatterns as agent_routes
from sessions.routing import websocket_urlpatterns as session_routes

websocket_urlpatterns: list = [*agent_routes, *session_routes]
