"""Websocket routes.  Apps append theirs as they gain streams (terminals,
tcpproxy, agent link)."""

websocket_urlpatterns: list = []
