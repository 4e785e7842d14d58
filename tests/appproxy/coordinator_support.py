"""Coordinator rows the app-proxy tests make: proxy workers (port or wildcard mode)."""
from __future__ import annotations

from django.utils import timezone

from appproxy.models import Worker


def make_worker(name="w1", mode="port", **fields):
    defaults = {"advertised_host": "127.0.0.1", "api_endpoint": f"http://{name}:6130", "secret": "s" * 40,
                "protocols": ["http", "tcp"] if mode == "port" else ["http"], "last_heartbeat": timezone.now()}
    if mode == "port":
        defaults.update(port_range_start=40000, port_range_end=40009)
    else:
        defaults.update(wildcard_domain="apps.test", wildcard_port=8443)
    return Worker.objects.create(authority=name, frontend_mode=mode, **{**defaults, **fields})
