"""Websocket routes of the sessions app (terminals, tcpproxy).

Paths as the Backend.AI manager serves them (the official client's ``app``
command opens ``/stream/session/{name}/tcpproxy?app=``); ``{s}`` is a session
name (of the caller's keypair) or id.
"""
from django.urls import re_path

from sessions.consumers import PtyConsumer, TcpProxyConsumer

websocket_urlpatterns: list = [
    re_path(r"^stream/session/(?P<name>[^/]+)/pty$", PtyConsumer.as_asgi()),
    re_path(r"^stream/session/(?P<name>[^/]+)/tcpproxy$", TcpProxyConsumer.as_asgi()),
]
