"""A tiny HTTP listener for Prometheus scrapes, shared by the manager's internal metrics
listener (``backendai.metrics``) and the agent daemon's (``agents.daemon.metrics``).

A server subclass names its ``routes`` (a path -> a function answering ``(body, content
type)``).  Only ``GET``/``HEAD`` of a route is served; any other method of a route is a 405
with ``Allow``, any other path a 404 (never a 501 for an odd method), and a route that
raises answers 503 without ending the listener.  Plumbing: no Django.
"""
from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

log = logging.getLogger(__name__)

Answer = Callable[[], "tuple[bytes, str]"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "MetricsHTTPServer"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.debug("%s: %s - " + format, self.server.label, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              allow: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answer(self) -> Answer | None:
        path = self.path.split("?", 1)[0]
        if path != "/" and path.endswith("/"):
            path = path[:-1]
        return self.server.routes().get(path)

    def do_GET(self):  # noqa: N802 - http.server's naming
        answer = self._answer()
        if answer is None:
            paths = " and ".join(sorted(self.server.routes()))
            self._send(404, f"not found: this listener serves {paths}\n".encode())
            return
        try:
            body, content_type = answer()
        except Exception:  # noqa: BLE001 - a broken scrape must not end the listener
            log.exception("%s: %s failed", self.server.label, self.path.split("?", 1)[0])
            self._send(503, b"metrics are unavailable right now (see the listener's log)\n")
            return
        self._send(200, body, content_type)

    do_HEAD = do_GET  # noqa: N815

    def _refuse(self) -> None:
        if self._answer() is None:
            self._send(404, b"not found\n")
        else:
            self._send(405, b"method not allowed: use GET\n", allow="GET, HEAD")

    def __getattr__(self, name):  # any other method (POST, BREW, ...): 405 or 404, never 501
        if name.startswith("do_"):
            return self._refuse
        raise AttributeError(name)


class MetricsHTTPServer(ThreadingHTTPServer):
    """Bind ``listen`` (``(host, port)``; port 0: any free one) and serve :meth:`routes`."""

    daemon_threads = True
    allow_reuse_address = True
    label = "metrics listener"

    def __init__(self, listen: tuple[str, int]):
        host, port = listen
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)

    def routes(self) -> dict[str, Answer]:
        """What a subclass serves; a server without routes answers 404 to every path."""
        return {}

    def handle_error(self, request, client_address):  # a client that hangs up is not an error to print
        log.debug("%s: a request from %s failed", self.label, client_address, exc_info=True)

    @property
    def address(self) -> str:
        """``host:port`` as bound (the real port when 0 was asked for)."""
        host, port = self.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name=self.label.replace(" ", "-"), daemon=True)
        thread.start()
        return thread
