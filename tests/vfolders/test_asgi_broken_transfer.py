"""``vfolders.asgi.flow_controlled`` with a body that breaks off midway
(:class:`backendai.streaming.TransferBroken`, e.g. the agent of a session download went):
the connection is dropped, so the client sees an incomplete body, never the final empty
chunk that would make a shorter file look whole."""
import asyncio
from functools import partial

from backendai.streaming import TransferBroken
from vfolders.asgi import flow_controlled

from .test_asgi_flow import FakeTwistedRequest, body


class FakeTransport:
    def __init__(self):
        self.aborted = 0

    def abortConnection(self):  # noqa: N802 - Twisted's name
        self.aborted += 1


async def breaking_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send(body(b"first half"))
    raise TransferBroken("connection to the node lost (agent node-1)")


def test_it_drops_the_connection_instead_of_ending_a_body_that_broke_off():
    request = FakeTwistedRequest()
    request.channel.transport = FakeTransport()
    written = []

    async def daphne_handle_reply(protocol, message):
        written.append(message)

    asyncio.run(flow_controlled(breaking_app)({"type": "http", "method": "GET",
                                               "path": "/session/s1/download_single"}, None,
                                              partial(daphne_handle_reply, request)))
    assert request.channel.transport.aborted == 1
    assert [m.get("more_body") for m in written if m["type"] == "http.response.body"] == [True]  # no final chunk
    assert request.producer is None  # the producer was let go


def test_a_client_already_gone_is_left_alone():
    request = FakeTwistedRequest()
    request.channel = None  # Twisted dropped the channel: the client went first

    async def daphne_handle_reply(protocol, message):
        pass

    asyncio.run(flow_controlled(breaking_app)({"type": "http", "method": "GET", "path": "/session/s1/download"},
                                              None, partial(daphne_handle_reply, request)))
