"""Fixtures for the agent daemon tests.

``fake_manager``: a tiny stand-in for the manager's agent API
(``/agent-api/v1/sync``, ``/events``, ``/shutdown``; the websocket link answers
404) on 127.0.0.1, recording every request.  Tests set ``desired`` / ``stop`` /
``restart`` / ``want_logs`` and read ``syncs`` / ``events`` / ``shutdowns``.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TOKEN = "test-agent-token"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class FakeManager:
    """Records requests; answers syncs with the current ``desired`` / ``stop`` lists."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self.syncs: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.shutdowns: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.desired: list[dict[str, Any]] = []
        self.stop: list[dict[str, Any]] = []
        self.restart: list[dict[str, Any]] = []
        self.want_logs: list[str] = []
        self.sync_interval: float = 0.3
        self.extra_answer: dict[str, Any] = {}  # merged into every sync answer (e.g. the long poll's fields)
        self.fail_with: int | None = None  # answer every request with this status
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- views for the tests --------------------------------------------------------------------
    def kernel_events(self, kernel_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for batch in self.events for e in batch["events"] if e["kernel_id"] == kernel_id]

    def last_sync(self) -> dict[str, Any] | None:
        with self.lock:
            return self.syncs[-1] if self.syncs else None

    def synced_kernel(self, kernel_id: str, since: int = 0) -> dict[str, Any] | None:
        """The kernel's entry in the latest sync (after the first ``since`` syncs)."""
        with self.lock:
            for body in reversed(self.syncs[since:]):
                for entry in body["kernels"]:
                    if entry["kernel_id"] == kernel_id:
                        return entry
                return None
        return None

    # -- server ---------------------------------------------------------------------------------
    def start(self, port: int = 0) -> FakeManager:
        manager = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any = None, content_type: str = "application/json") -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")  # so that stopping the server refuses at once
                self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def _problem(self, status: int, slug: str, title: str) -> None:
                self._send(status, {"type": f"https://api.backend.ai/probs/{slug}", "title": title},
                           "application/problem+json")

            def do_GET(self) -> None:  # the websocket link is not implemented here
                self._problem(404, "not-found", "no link here")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with manager.lock:
                    manager.headers.append(dict(self.headers))
                    fail = manager.fail_with
                if fail:
                    self._problem(fail, "auth-failed" if fail == 401 else "server-error", "refused")
                    return
                if self.headers.get("Authorization") != f"Bearer {manager.token}":
                    self._problem(401, "auth-failed", "bad token")
                    return
                path = self.path.split("?")[0]
                if path == "/agent-api/v1/sync":
                    with manager.lock:
                        manager.syncs.append(body)
                        answer = {"agent_id": body["agent_id"], "status": "ALIVE", "schedulable": True,
                                  "sync_interval": manager.sync_interval, "desired": list(manager.desired),
                                  "stop": list(manager.stop), "restart": list(manager.restart),
                                  "want_logs": list(manager.want_logs), **manager.extra_answer}
                    self._send(200, answer)
                elif path == "/agent-api/v1/events":
                    with manager.lock:
                        manager.events.append(body)
                    self._send(200, {"accepted": len(body["events"])})
                elif path == "/agent-api/v1/shutdown":
                    with manager.lock:
                        manager.shutdowns.append(body)
                    self._send(204)
                else:
                    self._problem(404, "not-found", "no such path")

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def shutdown_server(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def fake_manager():
    manager = FakeManager().start()
    yield manager
    manager.shutdown_server()


@pytest.fixture(name="wait_for")
def wait_for_fixture():
    """``wait_for(predicate, timeout=10, what=...)``: poll until truthy (returns the value)."""
    return wait_for
