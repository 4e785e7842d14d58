"""``vfolders.asgi.flow_controlled``: under daphne a streamed download waits while
Twisted's socket buffer is full, instead of piling the file up in memory."""
import asyncio
from functools import partial

from vfolders.asgi import flow_controlled


class FakeChannel:
    _waitingForTransport = False


class FakeTwistedRequest:
    """What daphne's ``send`` partial carries: a ``twisted.web.http.Request``."""

    def __init__(self):
        self.producer = None
        self.channel = FakeChannel()
        self.unregistered = 0

    def registerProducer(self, producer, streaming):
        assert self.producer is None and streaming is True
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None
        self.unregistered += 1


def body(data, more=True):
    return {"type": "http.response.body", "body": data, "more_body": more}


async def streaming_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for chunk in (b"a", b"b", b"c"):
        await send(body(chunk))
    await send(body(b"", more=False))


def test_a_full_socket_buffer_pauses_the_stream_until_it_drains():
    request = FakeTwistedRequest()
    written = []

    async def daphne_handle_reply(protocol, message):
        written.append(message.get("body"))
        if message.get("body") == b"a":
            protocol.producer.pauseProducing()  # Twisted: the send buffer is over its size

    async def main():
        app = flow_controlled(streaming_app)
        task = asyncio.ensure_future(app({"type": "http", "path": "/session/sess1/download"}, None,
                                         partial(daphne_handle_reply, request)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert written == [None, b"a"]  # waiting: nothing more was produced
        request.producer.resumeProducing()  # the buffer drained
        await asyncio.wait_for(task, 1)

    asyncio.run(main())
    assert written == [None, b"a", b"b", b"c", b""]
    assert request.producer is None and request.unregistered == 1


def test_other_paths_and_other_servers_pass_through_untouched():
    seen = []

    async def plain_send(message):
        seen.append(message["type"])

    async def main():
        app = flow_controlled(streaming_app)
        await app({"type": "http", "path": "/session/sess1/download"}, None, plain_send)  # e.g. uvicorn
        request = FakeTwistedRequest()

        async def handle(protocol, message):
            assert protocol.producer is None  # never registered for an API path
            seen.append(message["type"])

        await app({"type": "http", "path": "/folders"}, None, partial(handle, request))

    asyncio.run(main())
    assert seen.count("http.response.body") == 8
