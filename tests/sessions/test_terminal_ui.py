"""The session page's terminal box and app buttons, and the daphne flow control
of the stream consumers (with stand-ins for Twisted's transport)."""
from __future__ import annotations

import asyncio
from functools import partial

import pytest
from django.urls import reverse

from agents import services as agent_services
from agents.models import Agent
from sessions import services as session_services
from sessions.consumers import TransportFlow
from sessions.models import Session

PORTS = [{"name": "web", "protocol": "http", "container_ports": [8080], "host_ports": [30001]},
         {"name": "echo", "protocol": "tcp", "container_ports": [9000], "host_ports": [30002]}]


@pytest.fixture
def agent(defaults):
    group = agent_services.ensure_default_scaling_group()
    return Agent.objects.create(id="node-1", scaling_group=group, available_slots={"cpu": "8"})


def session_in(user, agent, status):
    session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                       slots={"cpu": "1"}, name=f"ui-{status.lower()}",
                                                       service_ports=PORTS)
    session.kernels.update(status="RUNNING" if status == "RUNNING" else "PREPARING", kernel_host="127.0.0.1")
    Session.objects.filter(pk=session.pk).update(status=status)
    return session


def page(client, user, session):
    client.force_login(user)
    response = client.get(reverse("ui-sessions:detail", kwargs={"session_id": session.pk}))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
def test_a_running_session_shows_a_terminal_and_one_button_per_http_app(client, owner, agent):
    session = session_in(owner, agent, "RUNNING")
    html = page(client, owner, session)
    assert f'data-terminal-path="/stream/session/{session.pk}/pty"' in html
    assert 'id="terminal-open"' in html and 'id="terminal-open" disabled' not in html
    for asset in ("vendor/xterm/xterm.js", "vendor/xterm/addon-fit.js", "vendor/xterm/xterm.css",
                  "sessions/terminal.js"):
        assert f"/static/{asset}" in html, asset
    assert f'action="/ui/sessions/{session.pk}/apps/web/open" target="_blank"' in html
    assert 'data-app-open="web"' in html and 'data-app-open="echo"' not in html
    assert "csrfmiddlewaretoken" in html.split('data-app-actions="web"')[1].split("</td>")[0]
    assert f"backend.ai app {session.name} echo -b 127.0.0.1:9000" in html


@pytest.mark.django_db
def test_a_session_not_running_yet_has_a_disabled_terminal_and_no_app_buttons(client, owner, agent):
    session = session_in(owner, agent, "PREPARING")
    html = page(client, owner, session)
    assert 'id="terminal-open" disabled' in html and "opens once the session is running" in html
    assert "data-app-open" not in html and "backend.ai app" not in html


@pytest.mark.django_db
def test_a_finished_session_has_no_terminal_and_its_apps_read_closed(client, owner, agent):
    session = session_in(owner, agent, "TERMINATED")
    html = page(client, owner, session)
    assert 'id="terminal"' not in html and "data-app-open" not in html
    assert "ready (through the app proxy)" not in html and "closed (the session has ended)" in html


@pytest.mark.django_db
def test_a_running_session_whose_agent_is_lost_offers_no_terminal_or_app_buttons(client, owner, agent):
    session = session_in(owner, agent, "RUNNING")
    Agent.objects.filter(pk=agent.pk).update(status="LOST")
    html = page(client, owner, session)
    assert 'id="terminal-open" disabled' in html and "once the session's agent can be reached again" in html
    assert "data-app-open" not in html and "backend.ai app" not in html
    assert "unreachable while the agent is lost" in html and "ready (through the app proxy)" not in html


# --- daphne flow control ----------------------------------------------------------------------

class FakeTransport:
    def __init__(self):
        self.producer = None
        self.reading = True

    def registerProducer(self, producer, streaming):  # noqa: N802 - Twisted's names
        assert self.producer is None and streaming is True
        self.producer = producer

    def unregisterProducer(self):  # noqa: N802
        self.producer = None

    def pauseProducing(self):  # noqa: N802
        self.reading = False

    def resumeProducing(self):  # noqa: N802
        self.reading = True


class FakeProtocol:
    def __init__(self):
        self.transport = FakeTransport()


async def daphne_handle_reply(protocol, message):
    pass


def test_the_flow_pauses_reading_and_waits_for_a_drained_send_buffer():
    protocol = FakeProtocol()

    async def main():
        flow = TransportFlow(partial(daphne_handle_reply, protocol))
        transport = protocol.transport
        assert transport.producer is flow.gate and flow.writable
        flow.pause_reading()
        assert transport.reading is False
        flow.resume_reading()
        assert transport.reading is True
        transport.producer.pauseProducing()  # Twisted: the socket's send buffer is full
        assert not flow.writable
        waiter = asyncio.ensure_future(flow.wait_writable())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        transport.producer.resumeProducing()  # drained
        await asyncio.wait_for(waiter, 1)
        flow.pause_reading()
        flow.release()
        assert transport.producer is None and transport.reading is True

    asyncio.run(main())


def test_the_flow_does_nothing_under_other_servers():
    async def send(message):
        pass

    flow = TransportFlow(send)
    assert flow.writable
    flow.pause_reading()
    flow.resume_reading()
    flow.release()
