"""Websocket routes of the sessions app (terminals, tcpproxy, the execute loop).

Paths as the Backend.AI manager serves them (the official client's ``app``
command opens ``/stream/session/{name}/tcpproxy?app=``); ``{s}`` is a session
name (of the caller's keypair) or id.  Session mode (``accounts.api.websession``)
reaches the same streams under ``/func/``, with the login cookie.
"""
from django.urls import re_path

from sessions.consumers import PtyConsumer, TcpProxyConsumer
from sessions.execute_consumer import ExecuteConsumer

websocket_urlpatterns: list = [
    re_path(r"^(?:func/)?stream/session/(?P<name>[^/]+)/pty$", PtyConsumer.as_asgi()),
    re_path(r"^(?:func/)?stream/session/(?P<name>[^/]+)/tcpproxy$", TcpProxyConsumer.as_asgi()),
    re_path(r"^(?:func/)?stream/session/(?P<name>[^/]+)/execute$", ExecuteConsumer.as_asgi()),
]
