"""An app-proxy worker beside a live stack (tests/e2e): ``python -m appproxy.worker`` in port mode
on a block of free ports, registered with the stack's coordinator."""
from __future__ import annotations

import sys

import httpx

from docker_support import find_free_block


class LiveProxyWorker:
    """``LiveProxyWorker(live_stack, token, authority).start()`` starts the worker (``slots`` app
    ports, then its API port) and waits until it answers and is registered ALIVE.  ``api`` is its
    base URL, ``ports`` the first and last app port, ``row()`` its coordinator row."""

    def __init__(self, live_stack, token: str, authority: str, *, slots: int = 10, log_level: str = "DEBUG"):
        self.stack, self.token, self.authority, self.log_level = live_stack, token, authority, log_level
        base = find_free_block(slots + 2)
        self.ports = (base, base + slots - 1)
        self.api_port = base + slots
        self.api = f"http://127.0.0.1:{self.api_port}"

    def start(self) -> LiveProxyWorker:
        from appproxy.models import Worker

        self.stack.start("proxy", [sys.executable, "-m", "appproxy.worker", "--coordinator-url", self.stack.url,
                                   "--name", self.authority, "--mode", "port", "--bind-host", "127.0.0.1",
                                   "--port-range", f"{self.ports[0]}-{self.ports[1]}", "--api-port",
                                   str(self.api_port), "--heartbeat-interval", "1", "--sync-interval", "2",
                                   "--log-level", self.log_level],
                         # its metrics are its own /metrics, not summed into the manager's multiprocess dir
                         {"BAI_PROXY_TOKEN": self.token, "PROMETHEUS_MULTIPROC_DIR": None})

        def up():
            try:
                return httpx.get(self.api + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        self.stack.wait_for(up, what="the proxy worker up")
        self.stack.wait_for(lambda: Worker.objects.filter(authority=self.authority, status="ALIVE").exists(),
                            what="the proxy worker registered")
        return self

    def row(self):
        from appproxy.models import Worker

        return Worker.objects.get(authority=self.authority)
