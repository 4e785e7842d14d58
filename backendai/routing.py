"""Websocket routes of every app, and an answer for any other path.

A websocket to a path no app serves (``/stream/session/{s}/execute`` on a manager
without it, a typo) is accepted and closed at once with 4404 and the reason,
instead of the router raising (a 500 on the handshake and an error in the log)."""
from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import re_path

from agents.routing import websocket_urlpatterns as agent_routes
from sessions.routing import websocket_urlpatterns as session_routes

CLOSE_NO_SUCH_STREAM = 4404


class NoSuchStream(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        path = self.scope.get("path", "").encode("ascii", "replace").decode()[:80]  # a reason is <= 123 bytes
        await self.close(code=CLOSE_NO_SUCH_STREAM, reason=f"No such websocket endpoint: {path}")


websocket_urlpatterns: list = [*agent_routes, *session_routes, re_path(r"", NoSuchStream.as_asgi())]
