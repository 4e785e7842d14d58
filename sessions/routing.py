"""Websocket routes of the sessions app (terminals, tcpproxy)."""

websocket_urlpatterns: list = []
