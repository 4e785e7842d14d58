#!/usr/bin/env python3
"""The test inference server: what ``local/inference:1.0`` and ``bai-test/inference:1.0`` run.

Pure standard library (it is copied into a busybox image beside a trimmed Python), threaded
HTTP/1.1 with keep-alive:

* ``POST /v1/predict`` (JSON body) or ``GET /v1/predict?...``: ``{"replica": <BACKENDAI_SESSION_ID or the
  hostname>, "kernel": <BACKENDAI_KERNEL_ID>, "pid": <this process>, "echo": <the input>, "model": <the first
  line of model.txt in the model folder, or the folder's path>}``;
* ``GET /v1/slow?ms=N``: the same answer after N milliseconds (at most 30 s), for latency tests;
* ``GET /health``: 200 ``{"status": "healthy"}``, or 503 while switched unhealthy;
* ``POST /admin/unhealthy`` and ``POST /admin/healthy``: the switch; a file named ``UNHEALTHY`` in the
  model folder switches it too (so a test can flip every replica of an endpoint at once);
* ``GET /stats``: requests served so far.

The model folder is ``--model-dir``, else ``$MODEL_DIR``, else ``./models`` (the local backend links a
mount at ``/models`` into the kernel's working directory), else ``/models``.  It listens on ``--port``,
else ``$PORT`` (the local backend's published host port), else 8000, on ``--host``, else
``$BACKENDAI_HOST``, else 0.0.0.0.  Requests are counted, not logged one by one: a summary line
every ``--log-interval`` seconds when something was served.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 4 * 1024 * 1024
MAX_SLOW_MS = 30_000
UNHEALTHY_FILE = "UNHEALTHY"


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} inference-server: {message}\n")
    sys.stderr.flush()


def find_model_dir(option: str | None) -> Path | None:
    for candidate in (option, os.environ.get("MODEL_DIR"), "models", "/models"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate).resolve()
    return None


def read_model(model_dir: Path | None) -> str:
    """The first line of ``model.txt`` in the model folder, else the folder's path, else "none"."""
    if model_dir is None:
        return "none"
    try:
        with open(model_dir / "model.txt", encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip() or str(model_dir)
    except OSError:
        return str(model_dir)


class State:
    def __init__(self, model_dir: Path | None):
        self.model_dir = model_dir
        self.model = read_model(model_dir)
        self.replica = os.environ.get("BACKENDAI_SESSION_ID") or socket.gethostname()
        self.kernel = os.environ.get("BACKENDAI_KERNEL_ID", "")
        self.healthy = True
        self.lock = threading.Lock()
        self.served = 0
        self.reported = 0

    def count(self) -> None:
        with self.lock:
            self.served += 1

    def is_healthy(self) -> bool:
        if not self.healthy:
            return False
        return not (self.model_dir is not None and (self.model_dir / UNHEALTHY_FILE).exists())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bai-inference/1.0"
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    # one segment per response (head and body buffered, flushed after each request) without Nagle's delay:
    # unbuffered, the head and the body went out as two writes and every keep-alive request waited ~40 ms
    # for the client's delayed ACK
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    state: State  # set on the subclass made by make_server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # counted instead (State.served); see the reporter thread

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes | None:
        """The request body (None and a 413 answered when too large, or 400 when unreadable)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send(411, {"error": "send a Content-Length"})
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self._send(400, {"error": "bad Content-Length"})
            return None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._send(413, {"error": f"the body is limited to {MAX_BODY} bytes"})
            return None
        return self.rfile.read(length) if length else b""

    def _answer(self, echo) -> dict:
        state = self.state
        return {"replica": state.replica, "kernel": state.kernel, "pid": os.getpid(), "echo": echo,
                "model": state.model}

    def _route(self) -> None:
        body = self._body()
        if body is None:
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/") or "/"
        state = self.state
        method = self.command
        if path == "/health":
            if state.is_healthy():
                self._send(200, {"status": "healthy", "replica": state.replica})
            else:
                self._send(503, {"status": "unhealthy", "replica": state.replica})
            return
        if path in ("/admin/unhealthy", "/admin/healthy"):
            if method != "POST":
                self._send(405, {"error": "POST only"})
                return
            state.healthy = path == "/admin/healthy"
            log(f"switched {'healthy' if state.healthy else 'unhealthy'} (replica {state.replica})")
            self._send(200, {"healthy": state.healthy, "replica": state.replica})
            return
        if path == "/stats":
            self._send(200, {"served": state.served, "replica": state.replica, "healthy": state.is_healthy()})
            return
        if path in ("/v1/predict", "/v1/slow"):
            if method not in ("GET", "POST"):
                self._send(405, {"error": "GET or POST"})
                return
            if method == "POST":
                try:
                    echo = json.loads(body.decode("utf-8")) if body else None
                except (UnicodeDecodeError, ValueError):
                    self._send(400, {"error": "the body must be JSON"})
                    return
            else:
                echo = query
            if path == "/v1/slow":
                try:
                    ms = int(query.get("ms", "0"))
                except ValueError:
                    self._send(400, {"error": "ms must be an integer"})
                    return
                time.sleep(max(0, min(ms, MAX_SLOW_MS)) / 1000)
            state.count()
            self._send(200, self._answer(echo))
            return
        if path == "/":
            self._send(200, {"service": "bai-inference", "model": state.model, "replica": state.replica})
            return
        self._send(404, {"error": f"no such path: {url.path}"})

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _route


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(host: str, port: int, model_dir: Path | None) -> Server:
    handler = type("BoundHandler", (Handler,), {"state": State(model_dir)})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("BoundServer", (Server,), {"address_family": family})
    return server_class((host, port), handler)


def _reporter(server: Server, interval: float) -> None:
    state = server.RequestHandlerClass.state
    while True:
        time.sleep(interval)
        with state.lock:
            new, state.reported = state.served - state.reported, state.served
        if new:
            log(f"served {new} requests in the last {interval:g}s ({state.served} in all)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The Backend.AI test inference server")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--host", default=os.environ.get("BACKENDAI_HOST") or "0.0.0.0")
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--log-interval", type=float, default=10.0)
    args = parser.parse_args(argv)
    model_dir = find_model_dir(args.model_dir)
    server = make_server(args.host, args.port, model_dir)

    def stop(signum, frame):
        log(f"signal {signum}: stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=_reporter, args=(server, args.log_interval), daemon=True).start()
    log(f"listening on {args.host}:{server.server_address[1]}, model {server.RequestHandlerClass.state.model!r} "
        f"from {model_dir}, replica {server.RequestHandlerClass.state.replica}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
