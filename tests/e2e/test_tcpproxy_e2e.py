"""The tcpproxy websocket end to end: the official CLI's ``backend.ai app``
listens on a local port and relays each TCP connection through
``/stream/session/{name}/tcpproxy`` (daphne), the channel layer and the agent's
link to a real Docker container of ``bai-test/http:1.0`` (TCP echo on 9000,
HTTP on 8080)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from backendai.signing import signed_headers
from sessions.models import Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

def api(live_stack, keypair, method, target, body=None):
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host,
                             content_type="application/json" if body is not None else "text/plain")
    return httpx.request(method, live_stack.url + target, headers=headers,
                         content=json.dumps(body) if body is not None else None, timeout=90)


def running_session(live_stack, user, name, image="bai-test/http:1.0"):
    created = api(live_stack, user.main_keypair, "POST", "/session",
                  {"image": image, "name": name, "config": {"resources": {"cpu": "0.25", "mem": "128m"}}})
    assert created.status_code in (200, 201), created.text
    return live_stack.wait_for(lambda: Session.objects.filter(name=name, status="RUNNING").first(), timeout=90,
                               what=f"session {name} RUNNING")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CliApp:
    """``backend.ai app SESSION APP -b 127.0.0.1:PORT`` in the background (it blocks until interrupted)."""

    def __init__(self, client_bin, endpoint, keypair, workdir, session, app):
        self.port = free_port()
        home = workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {"PATH": f"{client_bin.parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
               "BACKEND_ENDPOINT": endpoint, "BACKEND_ACCESS_KEY": keypair.access_key,
               "BACKEND_SECRET_KEY": keypair.secret_key, "BACKEND_ENDPOINT_TYPE": "api", "PYTHONUNBUFFERED": "1"}
        self.log = workdir / f"cli-app-{app}.log"
        self.process = subprocess.Popen([str(client_bin), "app", session, app, "-b", f"127.0.0.1:{self.port}"],
                                        cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=open(self.log, "wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_listening(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"the CLI exited ({self.process.returncode}):\n{self.output()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, f"the CLI never listened:\n{self.output()}"
                time.sleep(0.2)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        sock.settimeout(15)
        return sock

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


@pytest.fixture
def cli_app(client_bin, require, live_stack, tmp_path):
    require(client_bin.is_file(), f"the official backend.ai client at {client_bin}")
    started = []

    def start(keypair, session, app):
        workdir = tmp_path / f"cli-{len(started)}"
        workdir.mkdir()
        started.append(CliApp(client_bin, live_stack.url, keypair, workdir, session, app))
        return started[-1]

    yield start
    for app in started:
        app.stop()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    return data


def test_the_official_cli_app_command_relays_tcp_to_the_kernels_echo_port(live_stack, docker_node, owner, cli_app):
    running_session(live_stack, owner, "tcp-echo")
    app = cli_app(owner.main_keypair, "tcp-echo", "echo")
    app.wait_listening()
    first, second = app.connect(), app.connect()  # two TCP connections: two websockets, two streams
    try:
        first.sendall(b"hello over tcpproxy\n")
        second.sendall(b"second connection\n")
        assert recv_exactly(second, 18) == b"second connection\n"
        assert recv_exactly(first, 20) == b"hello over tcpproxy\n"
        blob = os.urandom(300_000)  # more than a window of chunks, both ways at once
        first.sendall(blob)
        assert recv_exactly(first, len(blob)) == blob
    finally:
        first.close()
        second.close()
    web = cli_app(owner.main_keypair, "tcp-echo", "web")
    web.wait_listening()
    with httpx.Client(timeout=15) as http:
        page = http.get(f"http://127.0.0.1:{web.port}/")
    assert page.status_code == 200 and "bai-test http app" in page.text
    assert f"tcp://127.0.0.1:{app.port}" in app.output(), app.output()


def test_another_user_cannot_reach_the_session_through_the_cli_or_the_websocket(live_stack, docker_node, owner,
                                                                                 member, cli_app):
    session = running_session(live_stack, owner, "not-yours")
    app = cli_app(member.main_keypair, str(session.pk), "echo")
    assert app.process.wait(timeout=60) != 0, app.output()  # its apps lookup is refused: it never listens
    target = f"/stream/session/{session.pk}/tcpproxy?app=echo"
    keypair = member.main_keypair
    headers = signed_headers(keypair.access_key, keypair.secret_key, "GET", target, live_stack.host,
                             content_type="application/octet-stream")
    headers.pop("Content-Type")
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://{live_stack.host}{target}", additional_headers=headers, open_timeout=15, proxy=None)
    assert refused.value.response.status_code == 403
