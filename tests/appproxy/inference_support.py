"""Replicas for the inference-circuit tests: small real HTTP servers on 127.0.0.1 that name
themselves, answer ``/health`` with a status the test sets, echo whether an ``Authorization``
header reached them, and hold ``/slow`` requests until released.  Run as a script
(``python inference_support.py PORT NAME``) a replica is its own process, to be killed."""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from appproxy import tokens

TOKEN_SECRET = "endpoint-token-secret-0123456789"


def make_handler(name: str, state: dict):
    class Replica(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def setup(self):
            super().setup()
            # head and body go out in separate writes: without this, Nagle and delayed ACKs cost 40 ms each
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _answer(self, status: int, data: dict):
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                state["checks"] = state.get("checks", 0) + 1
                return self._answer(state.get("health", 200), {"name": name})
            if self.path.startswith("/slow"):
                state.setdefault("slow_started", threading.Event()).set()
                state.setdefault("release", threading.Event()).wait(20)
            if self.path.startswith("/fail"):
                return self._answer(500, {"name": name})
            return self._answer(200, {"name": name, "path": self.path,
                                      "authorization": self.headers.get("Authorization")})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            self._answer(200, {"name": name, "received": len(body)})

    return Replica


class Replica:
    """A replica in a thread of this process (``state["health"]`` sets its /health status)."""

    def __init__(self, name: str):
        self.name = name
        self.state: dict = {"health": 200, "release": threading.Event(), "slow_started": threading.Event()}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(name, self.state))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.state["release"].set()
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def replicas(*names):
    started = [Replica(name) for name in names]
    try:
        yield started
    finally:
        for replica in started:
            replica.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def replica_process(name: str):
    """A replica in its own process: ``kill()`` it and every connection to it dies with it."""
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, str(port), name])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"replica {name} did not start") from None
                time.sleep(0.05)
        process.port = port
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


class RawClient:
    """A keep-alive HTTP/1.1 client on one connection, for loops of thousands of requests
    (a full client library costs more per request than the proxy under test)."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def get(self, path: str = "/", headers: dict | None = None) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{extra}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
        body = await self.reader.readexactly(length)
        if any(line.lower() == b"connection: close" for line in lines):
            self.close()
        return int(lines[0].split(b" ")[1]), json.loads(body)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def route(replica, ratio=1.0, active=True, route_id=None, port=None) -> dict:
    return {"route_id": route_id or str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "host": "127.0.0.1",
            "port": port or replica.port, "traffic_ratio": ratio, "active": active}


def inference_circuit(port: int, routes: list, public=False, secret=TOKEN_SECRET, revision=1, **check) -> dict:
    health = {"path": "/health", "interval": 0.2, "timeout": 0.5, "threshold": 1, "initial_delay": 0,
              "expected_status": 200, **check}
    return {"id": str(uuid.uuid4()), "app": "inference", "protocol": "http", "app_mode": "inference",
            "session_id": None, "kernel_id": None, "owner_id": str(uuid.uuid4()), "granted_users": [],
            "target_host": "", "target_port": 0, "port": port, "subdomain": None, "open_to_public": public,
            "allowed_client_ips": [], "revision": revision, "endpoint_id": str(uuid.uuid4()), "routes": routes,
            "health_check": health, "token_secret": secret}


def auth(circuit: dict, scheme="BackendAI", ttl=600, secret=TOKEN_SECRET, endpoint=None, now=None) -> dict:
    token = tokens.make_endpoint_token(secret, endpoint or circuit["endpoint_id"], "user-1", ttl, now=now)
    return {"Authorization": f"{scheme} {token}"}


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), make_handler(sys.argv[2], {"health": 200}))
    server.daemon_threads = True
    server.serve_forever()
