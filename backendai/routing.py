"""Websocket routes of every app."""
from agents.routing import websocket_urlpatterns as agent_routes

websocket_urlpatterns: list = [*agent_routes]
