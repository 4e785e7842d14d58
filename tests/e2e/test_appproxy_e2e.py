"""Issue 6 end to end: a live manager (daphne + Celery), a real Docker agent
running ``bai-test/http:1.0`` (``web:http:8080``, ``echo:tcp:9000``) and a real
app proxy worker process.  start-service → setup link → permit cookie → the app
through the worker; refusals; websockets; raw TCP; restarts of either side; the
session's end."""
import asyncio
import json
import socket
import sys
import threading

import httpx
import pytest

from appproxy import services as proxy_services
from appproxy import tokens
from appproxy.models import Circuit, Worker
from backendai.signing import signed_headers
from proxy_worker_support import LiveProxyWorker
from sessions.models import Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def proxy(live_stack, cluster):
    token = proxy_services.issue_token("e2e proxy", authority="e2e-proxy")[1]
    return LiveProxyWorker(live_stack, token, "e2e-proxy").start()


def api(live_stack, keypair, method, target, body=None):
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host,
                             content_type="application/json" if body is not None else "text/plain")
    return httpx.request(method, live_stack.url + target, headers=headers,
                         content=json.dumps(body) if body is not None else None, timeout=90)


def running_session(live_stack, user, name):
    created = api(live_stack, user.main_keypair, "POST", "/session", {
        "image": "bai-test/http:1.0", "name": name, "config": {"resources": {"cpu": "0.25", "mem": "128m"}}})
    assert created.status_code == 201, created.text
    session = live_stack.wait_for(lambda: Session.objects.filter(name=name, status="RUNNING").first(),
                                  what=f"session {name} RUNNING")
    live_stack.wait_for(lambda: all(p.get("host_ports") for p in session.kernels.get().service_ports),
                        what="published service ports")
    return session


def open_app(live_stack, user, session_name, app, **extra):
    answer = api(live_stack, user.main_keypair, "POST", f"/session/{session_name}/start-service", {"app": app, **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()


def follow_setup(result) -> tuple[str, dict]:
    """Visit the one-time setup URL like a browser: the permit cookie and the app's URL."""
    setup = httpx.get(result["url"], follow_redirects=False, timeout=10)
    assert setup.status_code == 302, setup.text
    name, _, rest = setup.headers["set-cookie"].partition("=")
    return setup.headers["location"], {"Cookie": f"{name}={rest.split(';', 1)[0]}"}


def serves(url, headers, text="bai-test http app"):
    def check():
        try:
            response = httpx.get(url, headers=headers, timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and text in response.text
    return check


class EchoWebsocketServer:
    """A small websocket echo app (the http test image has none)."""

    def __init__(self):
        self.port = None
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self):
        from websockets.asyncio.server import serve

        async def echo(ws):
            async for message in ws:
                await ws.send(f"echo:{message}")

        self.stop = asyncio.Event()
        async with serve(echo, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()
            await self.stop.wait()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def test_an_app_opens_through_a_real_worker_and_everyone_else_is_refused(live_stack, docker_node, proxy, owner,
                                                                       member):
    session = running_session(live_stack, owner, "proxied")
    result = open_app(live_stack, owner, "proxied", "web")
    assert result["wsproxy_addr"] == proxy.api and result["url"].startswith(proxy.api + "/setup?token=")
    app_url, cookie = follow_setup(result)
    assert app_url == result["app_url"] + "/"
    page = httpx.get(app_url, headers=cookie, timeout=10)
    assert page.status_code == 200 and "bai-test http app" in page.text

    without = httpx.get(app_url, timeout=10)
    assert without.status_code == 403 and "needs a permit" in without.text
    circuit = Circuit.objects.get(session=session, app="web")
    worker = Worker.objects.get(authority="e2e-proxy")
    name = tokens.permit_cookie_name(str(circuit.pk))
    members = tokens.make_permit(worker.secret, str(circuit.pk), str(member.pk), 600)
    other_user = httpx.get(app_url, headers={"Cookie": f"{name}={members}"}, timeout=10)
    assert other_user.status_code == 403 and "does not admit you" in other_user.text
    assert api(live_stack, member.main_keypair, "POST", f"/session/{session.pk}/start-service",
               {"app": "web"}).status_code == 404

    open_app(live_stack, owner, "proxied", "web", allowed_client_ips=["127.0.0.1/32"])
    elsewhere = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)

    def fenced():
        response = elsewhere.get(app_url, headers=cookie)
        return response.status_code == 403 and "127.0.0.2 may not use this app" in response.text
    live_stack.wait_for(fenced, timeout=20, what="the worker applying allowed_client_ips")
    assert serves(app_url, cookie)()

    with EchoWebsocketServer() as echo_app:
        ws_circuit = proxy_services.create_circuit(session=session, app="wsecho", protocol="http",
                                                   target_host="127.0.0.1", target_port=echo_app.port, worker=worker)
        ws_url, ws_cookie = follow_setup(proxy_services.issue_setup(ws_circuit, owner))

        async def talk():
            from websockets.asyncio.client import connect
            from websockets.exceptions import InvalidStatus

            async with connect(ws_url.replace("http://", "ws://") + "ws", additional_headers=ws_cookie) as ws:
                replies = []
                for text in ("hello", "through the proxy"):
                    await ws.send(text)
                    replies.append(await ws.recv())
            try:
                async with connect(ws_url.replace("http://", "ws://") + "ws"):
                    refused = None
            except InvalidStatus as exc:
                refused = exc.response.status_code
            return replies, refused

        replies, refused = asyncio.run(talk())
        assert replies == ["echo:hello", "echo:through the proxy"] and refused == 403

    tcp = open_app(live_stack, owner, "proxied", "echo")
    assert tcp["protocol"] == "tcp" and tcp["app_url"].startswith("tcp://127.0.0.1:")
    described = httpx.get(tcp["url"], headers={"Accept": "application/json"}, timeout=10).json()
    host, port = described["address"].rsplit(":", 1)

    def echoes():
        try:
            with socket.create_connection((host, int(port)), timeout=3) as conn:
                conn.sendall(b"ping through the worker\n")
                received = b""
                while len(received) < 23:
                    chunk = conn.recv(100)
                    if not chunk:
                        break
                    received += chunk
                return received.startswith(b"ping through the worker")
        except OSError:
            return False
    live_stack.wait_for(echoes, timeout=20, what="a TCP echo through the worker")
    metrics = httpx.get(proxy.api + "/metrics", timeout=5).text
    assert "appproxy_requests_received_http_total" in metrics and "appproxy_connections_established_tcp_total" in metrics


def test_routes_survive_restarts_of_the_worker_and_the_manager_and_go_with_the_session(
        live_stack, docker_node, proxy, owner):
    session = running_session(live_stack, owner, "durable")
    first = open_app(live_stack, owner, "durable", "web")
    app_url, cookie = follow_setup(first)
    assert serves(app_url, cookie)()

    live_stack.stop("proxy")
    with pytest.raises(httpx.ConnectError):
        httpx.get(app_url, headers=cookie, timeout=2)
    proxy.start()
    live_stack.wait_for(serves(app_url, cookie), timeout=30, what="the route served again after the worker restart")
    replayed = httpx.get(first["url"], follow_redirects=False, timeout=10)
    assert replayed.status_code == 403 and "already used" in replayed.text, "the restarted worker forgot nothing"
    assert "set-cookie" not in replayed.headers

    live_stack.stop("web")
    for _ in range(3):
        assert serves(app_url, cookie)(), "the worker keeps serving while the manager is down"
    live_stack.start("web", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(live_stack.port),
                             "backendai.asgi:application"])
    live_stack.wait_for(lambda: _answers(live_stack.url + "/healthz"), what="the manager back")
    assert serves(app_url, cookie)()
    again_url, again_cookie = follow_setup(open_app(live_stack, owner, "durable", "web"))
    assert again_url == app_url and serves(app_url, again_cookie)()

    destroyed = api(live_stack, owner.main_keypair, "DELETE", "/session/durable")
    assert destroyed.status_code == 200, destroyed.text
    live_stack.wait_for(lambda: not Circuit.objects.filter(session=session).exists(), timeout=60,
                        what="the session's circuits removed")

    def gone():
        response = httpx.get(app_url, headers=cookie, timeout=5)
        return response.status_code in (404, 502) and "open the app again" in response.text.lower() or (
            response.status_code == 502 and "does not answer" in response.text)
    live_stack.wait_for(gone, timeout=20, what="a clean refusal after the session ended")


def _answers(url):
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
