"""The terminal and tcpproxy websockets against the real agent link consumer.

A WebsocketCommunicator plays the agent (on ``/agent-api/v1/link``, with its
token) and another one the client, both through the project's websocket
routes and an in-memory channel layer: the frames the agent sees and sends are
exactly those of ``docs/agent-protocol.md``.  The real daemon, Docker and the
official client are in ``tests/agents/daemon/test_pty*.py`` and ``tests/e2e``.
"""
from __future__ import annotations

import asyncio
import base64
import json

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import Client

from agents import services as agent_services
from agents.models import Agent
from agents.protocol import decode_data, encode_data
from backendai import signing
from backendai.routing import websocket_urlpatterns
from helpers import PASSWORD
from sessions import consumers
from sessions import services as session_services
from sessions.models import Session

pytestmark = pytest.mark.django_db(transaction=True)  # channels closes "old" connections after a disconnect

HOST = "testserver"
APP = URLRouter(websocket_urlpatterns)
PORTS = [{"name": "web", "protocol": "http", "container_ports": [8080], "host_ports": [30001]},
         {"name": "echo", "protocol": "tcp", "container_ports": [9000], "host_ports": [30002]}]


@pytest.fixture(autouse=True)
def _in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def node(defaults):
    group = agent_services.ensure_default_scaling_group()
    Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "8", "mem": str(2**30)})
    return agent_services.issue_token("node-1", agent_id="node-1")[1]


def running_session(user, name="term", status="RUNNING"):
    session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0",
                                                       agent=Agent.objects.get(pk="node-1"), slots={"cpu": "1"},
                                                       name=name, service_ports=PORTS)
    session.kernels.update(status="RUNNING" if status == "RUNNING" else status, kernel_host="127.0.0.1")
    Session.objects.filter(pk=session.pk).update(status=status)
    return Session.objects.get(pk=session.pk)


def signed(user, target, secret=None):
    keypair = user.main_keypair
    headers = signing.signed_headers(keypair.access_key, secret or keypair.secret_key, "GET", target, HOST,
                                     content_type="application/octet-stream")
    headers.pop("Content-Type")  # a websocket upgrade has none; it is signed as octet-stream
    return [(b"host", HOST.encode())] + [(k.lower().encode(), v.encode()) for k, v in headers.items()]


def client(user, target, **kwargs):
    return WebsocketCommunicator(APP, target, headers=signed(user, target, **kwargs) if user else [(b"host", b"x")])


def agent_link(token, agent_id="node-1"):
    return WebsocketCommunicator(APP, f"/agent-api/v1/link?agent_id={agent_id}",
                                 headers=[(b"authorization", f"Bearer {token}".encode())])


def run(coro_fn):
    """Run an async test body under async_to_sync, so the ORM calls see the test's transaction."""
    return async_to_sync(coro_fn)()


async def agent_frame(agent, timeout=3):
    """The next frame the agent receives: a dict (text) or (stream id, payload) (binary)."""
    out = await agent.receive_output(timeout)
    assert out["type"] == "websocket.send", out
    if out.get("bytes") is not None:
        return decode_data(out["bytes"])
    return json.loads(out["text"])


async def opened(agent, kind):
    frame = await agent_frame(agent)
    assert frame["type"] == "stream.open" and frame["kind"] == kind, frame
    await agent.send_to(text_data=json.dumps({"type": "stream.opened", "stream": frame["stream"]}))
    return frame


def stdin(text):
    return json.dumps({"type": "stdin", "chars": base64.b64encode(text.encode()).decode()})


async def out_text(ws, timeout=3):
    frame = json.loads(await ws.receive_from(timeout))
    assert frame["type"] == "out", frame
    return base64.b64decode(frame["data"]).decode()


# --- who gets in ------------------------------------------------------------------------------

def test_unsigned_badly_signed_and_foreign_requests_are_refused_before_the_handshake(owner, member, outsider, node):
    session = running_session(owner)
    target = f"/stream/session/{session.pk}/pty"

    async def main():
        for ws in (client(None, target), client(owner, target, secret="not-the-secret"), client(member, target),
                   client(outsider, target), client(member, "/stream/session/term/pty"),
                   client(member, f"/stream/session/{session.pk}/tcpproxy?app=echo")):
            connected, _code = await ws.connect(timeout=5)
            assert not connected, ws.scope["path"]
            await ws.wait()

    run(main)


@pytest.mark.parametrize("who", ["owner", "domain_admin", "superadmin"])
def test_the_owner_and_admins_of_the_domain_get_in(request, owner, node, who):
    user = request.getfixturevalue(who)
    session = running_session(owner)
    kernel_id = str(session.kernels.get().pk)

    async def main():
        agent = agent_link(node)
        assert (await agent.connect(timeout=5))[0]
        ws = client(user, f"/stream/session/{session.pk}/pty")
        assert (await ws.connect(timeout=5))[0]
        frame = await agent_frame(agent)
        assert frame["kernel_id"] == kernel_id
        await ws.disconnect()
        assert (await agent_frame(agent))["type"] == "stream.close"
        await agent.disconnect()

    run(main)


def test_the_owner_opens_a_session_by_name_like_the_client(owner, node):
    running_session(owner, name="named-one")

    async def main():
        agent = agent_link(node)
        await agent.connect(timeout=5)
        ws = client(owner, "/stream/session/named-one/pty?rows=40&cols=120")
        assert (await ws.connect(timeout=5))[0]
        frame = await agent_frame(agent)
        assert (frame["rows"], frame["cols"]) == (40, 120) and frame["window"] == consumers.WINDOW
        await ws.disconnect()
        await agent.disconnect()

    run(main)


def test_a_session_that_is_not_running_is_closed_with_4409(owner, node):
    session = running_session(owner, status="PREPARING")

    async def main():
        ws = client(owner, f"/stream/session/{session.pk}/pty")
        assert (await ws.connect(timeout=5))[0]
        frame = json.loads(await ws.receive_from(3))
        assert frame["type"] == "error" and "PREPARING" in frame["message"]
        closed = await ws.receive_output(3)
        assert closed["type"] == "websocket.close" and closed["code"] == 4409

    run(main)


def test_the_web_ui_cookie_opens_a_terminal_from_the_same_origin_only(owner, member, node):
    session = running_session(owner)
    browser = Client()
    browser.force_login(owner)
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()
    other = Client()
    other.force_login(member)
    other_cookie = f"sessionid={other.cookies['sessionid'].value}".encode()
    target = f"/stream/session/{session.pk}/pty"

    async def main():
        agent = agent_link(node)
        await agent.connect(timeout=5)
        same = [(b"host", b"testserver"), (b"origin", b"http://testserver"), (b"cookie", cookie)]
        ws = WebsocketCommunicator(APP, target, headers=same)
        assert (await ws.connect(timeout=5))[0]
        await opened(agent, "pty")
        await ws.disconnect()
        for headers in ([(b"host", b"testserver"), (b"origin", b"http://evil.example"), (b"cookie", cookie)],
                        [(b"host", b"testserver"), (b"origin", b"http://testserver"), (b"cookie", other_cookie)],
                        [(b"host", b"testserver"), (b"cookie", b"sessionid=forged")]):
            refused = WebsocketCommunicator(APP, target, headers=headers)
            assert not (await refused.connect(timeout=5))[0]
        await agent.disconnect()

    run(main)



def test_session_mode_reaches_the_terminal_under_func_with_its_login_cookie(owner, node):
    session = running_session(owner)
    cli = Client()
    login = cli.post("/server/login", {"username": owner.email, "password": PASSWORD},
                     content_type="application/json", HTTP_X_BACKENDAI_VERSION="v8.20240315")
    assert login.status_code == 200 and login.json()["authenticated"], login.content
    cookie = f"sessionid={cli.cookies['sessionid'].value}".encode()
    target = f"/func/stream/session/{session.pk}/pty"

    async def main():
        agent = agent_link(node)
        await agent.connect(timeout=5)
        ws = WebsocketCommunicator(APP, target, headers=[(b"host", b"testserver"), (b"cookie", cookie)])
        assert (await ws.connect(timeout=5))[0]
        await opened(agent, "pty")
        await ws.disconnect()
        for headers in ([(b"host", b"testserver")],
                        [(b"host", b"testserver"), (b"origin", b"http://evil.example"), (b"cookie", cookie)]):
            refused = WebsocketCommunicator(APP, target, headers=headers)
            assert not (await refused.connect(timeout=5))[0]
        await agent.disconnect()

    run(main)


async def link_and_client(node, user, path):
    """The agent's link connected first, then a client websocket on ``path``."""
    agent = agent_link(node)
    await agent.connect(timeout=5)
    ws = client(user, path)
    await ws.connect(timeout=5)
    return agent, ws

# --- terminals ----------------------------------------------------------------------------------

def test_terminal_frames_go_through_the_agent_link_both_ways(owner, node):
    session = running_session(owner)

    async def main():
        agent, ws = await link_and_client(node, owner, f"/stream/session/{session.pk}/pty")
        await ws.send_to(text_data=stdin("echo "))  # before the agent opened it: kept, then sent
        frame = await opened(agent, "pty")
        sid = frame["stream"]
        assert (frame["rows"], frame["cols"]) == (24, 80)
        await ws.send_to(text_data=stdin("hello\n"))
        received = b""
        while received != b"echo hello\n":
            got_sid, payload = await agent_frame(agent)
            assert got_sid == sid
            received += payload
        await agent.send_to(bytes_data=encode_data(sid, b"hello\r\n"))
        assert await out_text(ws) == "hello\r\n"

        await ws.send_to(text_data=json.dumps({"type": "resize", "rows": 50, "cols": 132}))
        assert await agent_frame(agent) == {"type": "stream.resize", "stream": sid, "rows": 50, "cols": 132}
        await ws.send_to(text_data=json.dumps({"type": "ping"}))
        assert json.loads(await ws.receive_from(3)) == {"type": "pong"}

        await agent.send_to(text_data=json.dumps({"type": "stream.close", "stream": sid, "exit_code": 0,
                                                  "reason": "exited"}))
        assert json.loads(await ws.receive_from(3)) == {"type": "exit", "exit_code": 0}
        closed = await ws.receive_output(3)
        assert closed["type"] == "websocket.close" and closed["code"] == 1000
        await agent.disconnect()

    run(main)


def test_closing_the_websocket_closes_the_terminal_on_the_agent_and_restart_opens_a_new_one(owner, node):
    session = running_session(owner)

    async def main():
        agent, ws = await link_and_client(node, owner, f"/stream/session/{session.pk}/pty")
        first = await opened(agent, "pty")
        await ws.send_to(text_data=json.dumps({"type": "restart"}))
        assert await agent_frame(agent) == {"type": "stream.close", "stream": first["stream"]}
        assert "restarting" in await out_text(ws)
        second = await opened(agent, "pty")
        assert second["stream"] != first["stream"]
        await agent.send_to(bytes_data=encode_data(first["stream"], b"stale"))  # the old one is gone
        assert await agent_frame(agent) == {"type": "stream.close", "stream": first["stream"]}
        await agent.send_to(bytes_data=encode_data(second["stream"], b"fresh"))
        assert await out_text(ws) == "fresh"
        await ws.disconnect()
        assert await agent_frame(agent) == {"type": "stream.close", "stream": second["stream"]}
        await agent.disconnect()

    run(main)


def test_several_terminals_of_one_session_are_separate_streams(owner, node):
    session = running_session(owner)

    async def main():
        agent = agent_link(node)
        await agent.connect(timeout=5)
        one, two = (client(owner, f"/stream/session/{session.pk}/pty") for _ in range(2))
        await one.connect(timeout=5)
        first = await opened(agent, "pty")
        await two.connect(timeout=5)
        second = await opened(agent, "pty")
        await agent.send_to(bytes_data=encode_data(second["stream"], b"two"))
        await agent.send_to(bytes_data=encode_data(first["stream"], b"one"))
        assert await out_text(one) == "one" and await out_text(two) == "two"
        await one.disconnect()
        await two.disconnect()
        await agent.disconnect()

    run(main)


def test_an_agent_error_or_a_dropped_link_ends_the_terminal_with_1011(owner, node):
    session = running_session(owner)

    async def main():
        agent, ws = await link_and_client(node, owner, f"/stream/session/{session.pk}/pty")
        frame = await agent_frame(agent)
        await agent.send_to(text_data=json.dumps({"type": "stream.error", "stream": frame["stream"],
                                                  "message": "kernel-not-running: gone"}))
        assert json.loads(await ws.receive_from(3)) == {"type": "error", "message": "kernel-not-running: gone"}
        assert (await ws.receive_output(3))["code"] == 1011

        ws = client(owner, f"/stream/session/{session.pk}/pty")
        await ws.connect(timeout=5)
        await opened(agent, "pty")
        await agent.disconnect()
        shown = json.loads(await ws.receive_from(3))  # the terminal itself says so, for any client
        assert shown["type"] == "out" and b"connection to the node lost" in base64.b64decode(shown["data"])
        error = json.loads(await ws.receive_from(3))
        assert error["type"] == "error" and "connection to the node lost" in error["message"]
        assert (await ws.receive_output(3))["code"] == 1011

    run(main)


def test_an_idle_terminal_stays_open_while_its_link_answers_the_heartbeat(owner, node, settings):
    settings.STREAM_HEARTBEAT_EVERY = 0.05
    session = running_session(owner)

    async def main():
        agent, ws = await link_and_client(node, owner, f"/stream/session/{session.pk}/pty")
        frame = await opened(agent, "pty")
        assert await ws.receive_nothing(1.0)  # twenty heartbeats: the link answers each, nothing ends
        await ws.send_to(text_data=stdin("still here\n"))
        assert await agent_frame(agent) == (frame["stream"], b"still here\n")
        await ws.disconnect()
        await agent.disconnect()

    run(main)


def test_a_link_that_died_without_a_word_ends_the_terminal_with_a_message(owner, node, settings):
    settings.STREAM_HEARTBEAT_EVERY = 0.05
    session = running_session(owner)

    async def main():
        agent, ws = await link_and_client(node, owner, f"/stream/session/{session.pk}/pty")
        frame = await opened(agent, "pty")
        await agent.send_to(bytes_data=encode_data(frame["stream"], b"$ "))
        assert await out_text(ws) == "$ "  # the stream is open end to end
        agent.future.cancel()  # the link's process is gone: no disconnect, no stream.error
        shown = json.loads(await ws.receive_from(5))
        assert shown["type"] == "out" and b"connection to the node lost" in base64.b64decode(shown["data"])
        error = json.loads(await ws.receive_from(3))
        assert error["type"] == "error" and "connection to the node lost" in error["message"]
        assert (await ws.receive_output(3))["code"] == 1011

    run(main)


def test_an_agent_that_never_answers_ends_the_terminal(owner, node, settings):
    settings.STREAM_OPEN_TIMEOUT = 0.3
    session = running_session(owner)

    async def main():
        ws = client(owner, f"/stream/session/{session.pk}/pty")  # no link at all
        await ws.connect(timeout=5)
        error = json.loads(await ws.receive_from(3))
        assert error["type"] == "error" and "did not open" in error["message"]
        assert (await ws.receive_output(3))["code"] == 1011

    run(main)


# --- flow control -------------------------------------------------------------------------------

def test_the_client_side_sends_at_most_a_window_of_chunks_until_the_agent_acknowledges(owner, node):
    session = running_session(owner)

    async def main():
        agent, ws = await link_and_client(node, owner, f"/stream/session/{session.pk}/tcpproxy?app=echo")
        frame = await opened(agent, "tcp")
        chunk = 32 * 1024
        for i in range(consumers.WINDOW + 6):
            await ws.send_to(bytes_data=bytes([i % 256]) * chunk)
        for i in range(consumers.WINDOW):
            _sid, payload = await agent_frame(agent)
            assert payload == bytes([i]) * chunk
        assert await agent.receive_nothing(0.3)
        await agent.send_to(text_data=json.dumps({"type": "stream.ack", "stream": frame["stream"], "n": 4}))
        for i in range(consumers.WINDOW, consumers.WINDOW + 4):
            assert (await agent_frame(agent))[1] == bytes([i]) * chunk
        assert await agent.receive_nothing(0.3)
        await ws.disconnect()
        # what the client sent before leaving still reaches the kernel, then the close
        for i in range(consumers.WINDOW + 4, consumers.WINDOW + 6):
            assert (await agent_frame(agent))[1] == bytes([i]) * chunk
        assert (await agent_frame(agent))["type"] == "stream.close"
        await agent.disconnect()

    run(main)


def test_the_client_side_acknowledges_what_it_delivered(owner, node):
    session = running_session(owner)

    async def main():
        agent, ws = await link_and_client(node, owner, f"/stream/session/{session.pk}/tcpproxy?app=echo")
        sid = (await opened(agent, "tcp"))["stream"]
        for n in range(8):
            await agent.send_to(bytes_data=encode_data(sid, f"<{n}>".encode()))
        got = b""
        while len(got) < 24:
            got += (await ws.receive_output(3))["bytes"]
        assert got == b"".join(f"<{n}>".encode() for n in range(8))
        acks = [await agent_frame(agent), await agent_frame(agent)]
        assert acks == [{"type": "stream.ack", "stream": sid, "n": 4}] * 2
        await ws.disconnect()
        await agent.disconnect()

    run(main)


# --- tcpproxy -----------------------------------------------------------------------------------

def test_tcpproxy_relays_binary_frames_to_the_named_apps_port(owner, node):
    session = running_session(owner)
    kernel_id = str(session.kernels.get().pk)

    async def main():
        agent = agent_link(node)
        await agent.connect(timeout=5)
        ws = client(owner, "/stream/session/term/tcpproxy?app=echo")
        assert (await ws.connect(timeout=5))[0]
        frame = await opened(agent, "tcp")
        assert frame["port"] == 9000 and frame["kernel_id"] == kernel_id
        await ws.send_to(bytes_data=b"ping\n")
        assert await agent_frame(agent) == (frame["stream"], b"ping\n")
        await agent.send_to(bytes_data=encode_data(frame["stream"], b"ping\n"))
        assert (await ws.receive_output(3))["bytes"] == b"ping\n"
        await agent.send_to(text_data=json.dumps({"type": "stream.close", "stream": frame["stream"]}))
        assert (await ws.receive_output(3))["code"] == 1000

        ws = client(owner, "/stream/session/term/tcpproxy?app=web&port=8080")
        await ws.connect(timeout=5)
        assert (await agent_frame(agent))["port"] == 8080
        await ws.disconnect()
        await agent.disconnect()

    run(main)


@pytest.mark.parametrize("query, code", [("", 4400), ("?app=nope", 4404), ("?app=echo&port=22", 4404),
                                         ("?app=echo&port=x", 4400)])
def test_tcpproxy_refuses_unknown_apps_and_ports(owner, node, query, code):
    session = running_session(owner)

    async def main():
        ws = client(owner, f"/stream/session/{session.pk}/tcpproxy{query}")
        assert (await ws.connect(timeout=5))[0]
        closed = await ws.receive_output(3)
        assert closed["type"] == "websocket.close" and closed["code"] == code

    run(main)


def test_activity_is_recorded_as_the_sessions_last_access(owner, node):
    session = running_session(owner)
    assert session.last_access is None

    async def main():
        ws = client(owner, f"/stream/session/{session.pk}/pty")
        await ws.connect(timeout=5)
        await asyncio.sleep(0.1)
        await ws.disconnect()

    run(main)
    assert Session.objects.get(pk=session.pk).last_access is not None
