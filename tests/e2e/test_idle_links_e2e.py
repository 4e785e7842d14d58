"""Idle links survive in production mode (Redis channel layer): a terminal left
alone for longer than any Redis or channel-layer timeout still echoes, and
the agent's link was never dropped meanwhile.

Before ``REDIS_SOCKET_TIMEOUT``, redis-py's 5 s read timeout equalled the
channel layer's 5 s blocking receive: every idle consumer died after 6-8 s,
taking the agent link (1011) and every stream on it along."""
from __future__ import annotations

import base64
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from backendai.signing import signed_headers
from helpers import terminal_read_until, terminal_stdin
from sessions.models import Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = "idle-node"
IDLE = 35  # seconds: several channel-layer receives, more than the old 5 s Redis read timeout


def stay_idle(ws, seconds: float) -> None:
    """Send nothing for ``seconds``; the server must not end the terminal meanwhile."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            frame = json.loads(ws.recv(timeout=remaining))
        except TimeoutError:
            return
        except ConnectionClosed as exc:
            raise AssertionError(f"the terminal closed while idle: {exc}") from None
        assert frame["type"] == "out", f"the terminal ended while idle: {frame}"


def test_an_idle_terminal_still_echoes_and_the_agent_link_never_dropped(live_stack, cluster, owner, require):
    from django.conf import settings

    require(bool(settings.REDIS_URL), "Redis (the production mode's channel layer)")
    live_stack.start_local_agent(AGENT, cluster[1])
    keypair = owner.main_keypair
    live_stack.enqueue_shell_session(keypair, "idle")
    live_stack.wait_for(lambda: Session.objects.filter(name="idle", status="RUNNING").exists(), timeout=90,
                        what="the session RUNNING")

    target = "/stream/session/idle/pty"
    headers = signed_headers(keypair.access_key, keypair.secret_key, "GET", target, live_stack.host,
                             content_type="application/octet-stream")
    headers.pop("Content-Type")
    # no client pings: the server side alone must keep everything open
    with connect(f"ws://{live_stack.host}{target}", additional_headers=headers, open_timeout=30, proxy=None,
                 ping_interval=None) as ws:
        ws.send(terminal_stdin("echo first-$((6 * 7))\n"))
        terminal_read_until(ws, "first-42", allowed=("out", "pong"))
        links_before = live_stack.full_log("web").count(f"agent {AGENT} link open")
        stay_idle(ws, IDLE)
        ws.send(terminal_stdin("echo second-$((6 * 8))\n"))
        terminal_read_until(ws, "second-48", allowed=("out", "pong"))

    web = live_stack.full_log("web")
    assert links_before == 1 and web.count(f"agent {AGENT} link open") == 1, "the agent's link was reopened"
    assert f"agent {AGENT} link closed" not in web, "the agent's link dropped"
    assert "link closed" not in live_stack.full_log(AGENT)


def test_a_terminal_whose_agent_is_killed_ends_with_a_message_instead_of_freezing(live_stack, cluster, owner):
    agent = "doomed-node"
    live_stack.start_local_agent(agent, cluster[1])
    keypair = owner.main_keypair
    live_stack.enqueue_shell_session(keypair, "doomed")
    live_stack.wait_for(lambda: Session.objects.filter(name="doomed", status="RUNNING").exists(), timeout=90,
                        what="the session RUNNING")

    target = "/stream/session/doomed/pty"
    headers = signed_headers(keypair.access_key, keypair.secret_key, "GET", target, live_stack.host,
                             content_type="application/octet-stream")
    headers.pop("Content-Type")
    with connect(f"ws://{live_stack.host}{target}", additional_headers=headers, open_timeout=30, proxy=None) as ws:
        ws.send(terminal_stdin("echo alive-$((6 * 7))\n"))
        terminal_read_until(ws, "alive-42")
        live_stack.kill(agent)  # kill -9: no goodbye from the node
        seen = ""
        deadline = time.monotonic() + 90
        try:
            while time.monotonic() < deadline:
                frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                seen += json.dumps(frame)
                if frame["type"] == "out":
                    seen += base64.b64decode(frame["data"]).decode(errors="replace")
        except ConnectionClosed:
            pass
        else:
            raise AssertionError(f"the terminal stayed open after its agent died; got {seen!r}")
    assert "connection to the node lost" in seen, seen
