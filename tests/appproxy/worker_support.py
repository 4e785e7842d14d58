"""Helpers for the worker tests (no Django): an upstream app, a coordinator double, a running worker."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from appproxy import tokens
from appproxy.worker.client import CoordinatorRejected, CoordinatorUnavailable
from appproxy.worker.config import load_config
from appproxy.worker.server import Worker

SECRET = "test-secret-0123456789"
OWNER = str(uuid.uuid4())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class AppHandler(BaseHTTPRequestHandler):
    """A small HTTP/1.1 app written with the stdlib (not our parser)."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()

    def log_message(self, *args):
        pass

    def _json(self, status, data, extra=()):
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/headers":
            return self._json(200, {"headers": [[k, v] for k, v in self.headers.items()], "path": self.path},
                              [("Connection", "keep-alive, X-Secret-Hop"), ("X-Secret-Hop", "1"),
                               ("Keep-Alive", "timeout=5")])
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nfirst\r\n")
            self.wfile.flush()
            type(self).release.wait(10)
            self.wfile.write(b"4\r\nlast\r\n0\r\n\r\n")
            return
        if self.path == "/close-delimited":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end")
            return
        if self.path.startswith("/big/"):
            size = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = bytes(range(256)) * 256
            sent = 0
            while sent < size:
                part = block[:min(len(block), size - sent)]
                self.wfile.write(part)
                sent += len(part)
            return
        body = b"<html><body>bai-test http app at " + self.path.encode() + b"</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        digest, size = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                length = int(line.split(b";")[0], 16)
                if length == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                data = self.rfile.read(length)
                digest.update(data)
                size += len(data)
                self.rfile.read(2)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                data = self.rfile.read(min(65536, remaining))
                digest.update(data)
                size += len(data)
                remaining -= len(data)
        self._json(200, {"size": size, "sha256": digest.hexdigest()})


@contextlib.contextmanager
def upstream_app():
    AppHandler.release = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), AppHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        AppHandler.release.set()
        server.shutdown()
        server.server_close()


def circuit(port=None, target_port=0, protocol="http", subdomain=None, public=False, ips=(), owner=OWNER,
            granted=(), revision=1, app="web") -> dict:
    return {"id": str(uuid.uuid4()), "app": app, "protocol": protocol, "session_id": str(uuid.uuid4()),
            "kernel_id": None, "owner_id": owner, "granted_users": list(granted), "target_host": "127.0.0.1",
            "target_port": target_port, "port": port, "subdomain": subdomain, "open_to_public": public,
            "allowed_client_ips": list(ips), "revision": revision}


class FakeCoordinator:
    """Stands in for the coordinator's worker API in data-plane tests."""

    def __init__(self, circuits=()):
        self.table = {c["id"]: c for c in circuits}
        self.revision = 1
        self.heartbeats = []
        self.registrations = []
        self.shutdowns = 0
        self.syncs = 0
        self.redeemed: set[str] = set()  # like the coordinator's SetupToken rows: outlives any worker
        self.down = False
        self.inference_reports = []
        self.flips = []

    async def redeem_setup(self, token):
        """The coordinator's guarded "mark used": once per link, whichever worker asks."""
        if self.down:
            raise CoordinatorUnavailable("POST redeem: ConnectError")
        try:
            claims = tokens.verify(SECRET, "setup", token)
        except tokens.TokenError as exc:
            raise CoordinatorRejected(f"HTTP 403: {exc}", 403, "setup-token-invalid", str(exc)) from None
        digest = tokens.token_digest(token)
        if digest in self.redeemed:
            raise CoordinatorRejected("HTTP 410: used", 410, "setup-token-used", "This app link was already used")
        self.redeemed.add(digest)
        return {"circuit": claims.circuit, "user": claims.user, "expires": claims.expires,
                "redirect": claims.redirect}

    def set(self, circuits):
        self.table = {c["id"]: c for c in circuits}
        self.revision += 1

    async def register(self, payload):
        self.registrations.append(payload)
        return {"worker": {}, "secret": SECRET, "revision": self.revision, "permit_ttl": 3600}

    async def heartbeat(self, circuits, failed_ports, inference=None):
        self.heartbeats.append((dict(circuits), list(failed_ports)))
        if inference:
            self.inference_reports.append(inference)
        return {"status": "ALIVE", "revision": self.revision}

    async def route_health(self, reports):
        self.flips.append(reports)
        return {"recorded": sum(len(r) for r in reports.values())}

    async def circuits(self, since=None):
        self.syncs += 1
        return {"revision": self.revision, "full": True, "removed": [], "circuits": list(self.table.values())}

    async def shutdown(self):
        self.shutdowns += 1

    async def close(self):
        pass


def worker_config(ports, mode="port", **extra):
    argv = ["--coordinator-url", "http://127.0.0.1:9", "--token", "t", "--name", "test-proxy", "--mode", mode,
            "--api-port", str(extra.pop("api_port", free_port())), "--heartbeat-interval", "0.2",
            "--sync-interval", "0.2", "--release-after", "30", "--shutdown-grace", "1"]
    if mode == "port":
        argv += ["--port-range", f"{min(ports)}-{max(ports)}"]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return load_config(argv, env={})


@contextlib.asynccontextmanager
async def running_worker(circuits=(), mode="port", coordinator=None, **extra):
    ports = [c["port"] for c in circuits if c.get("port")] or [free_port()]
    coordinator = coordinator or FakeCoordinator(circuits)
    worker = Worker(worker_config(ports, mode, **extra), client=coordinator)
    await worker.start()
    try:
        yield worker, coordinator
    finally:
        await worker.stop()


def run(coro, timeout=30):
    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())
