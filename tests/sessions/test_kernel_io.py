"""``sessions.kernel_io.KernelIO``: the manager's own streams into a kernel, against the real agent link consumer.

A WebsocketCommunicator plays the agent on ``/agent-api/v1/link`` (as in
``test_terminal_consumers``); the KernelIO runs in the same event loop with an
in-memory channel layer, so every frame the agent sees is the protocol's.
"""
from __future__ import annotations

import asyncio
import json

import pytest
from rest_framework.exceptions import APIException

from agents.protocol import CHUNK, encode_data
from sessions.kernel_io import WINDOW, KernelIO, KernelIOError
from sessions.streams import http_target

from .test_terminal_consumers import agent_frame, agent_link, node, run, running_session  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def target_of(user):
    session = running_session(user)
    return http_target(user, user.main_keypair, session.name)


async def connected(node):  # noqa: F811 - the fixture's value
    agent = agent_link(node)
    assert (await agent.connect(timeout=5))[0]
    return agent


async def open_on_agent(agent, io: KernelIO):
    """Open ``io`` while the fake agent answers ``stream.opened``; returns the open frame."""
    task = asyncio.ensure_future(io.open(timeout=5))
    frame = await agent_frame(agent)
    assert frame["type"] == "stream.open"
    await agent.send_to(text_data=json.dumps({"type": "stream.opened", "stream": frame["stream"]}))
    await task
    return frame


def test_it_opens_a_stream_of_its_kind_with_its_fields_and_reads_the_answer_to_the_end(owner, node):  # noqa: F811
    target = target_of(owner)

    async def body():
        agent = await connected(node)
        io = KernelIO(target, "files", {"path": "sub/dir"})
        frame = await open_on_agent(agent, io)
        assert (frame["kind"], frame["kernel_id"], frame["path"]) == ("files", target.kernel_id, "sub/dir")
        await agent.send_to(bytes_data=encode_data(frame["stream"], b'{"files": '))
        await agent.send_to(bytes_data=encode_data(frame["stream"], b"[]}"))
        await agent.send_to(text_data=json.dumps({"type": "stream.close", "stream": frame["stream"], "exit_code": 0,
                                                  "reason": "done"}))
        assert await io.read_all(1024, timeout=5) == b'{"files": []}'
        assert (io.ended, io.exit_code, io.reason) == (True, 0, "done")
        assert await io.read(timeout=1) is None
        await agent.disconnect()

    run(body)


def test_it_sends_at_most_a_window_of_chunks_until_the_agent_acknowledges_and_eof_follows_the_data(owner, node):  # noqa: F811
    target = target_of(owner)

    async def body():
        agent = await connected(node)
        io = KernelIO(target, "upload", {"path": "big.bin"})
        frame = await open_on_agent(agent, io)
        payload = bytes(range(256)) * (CHUNK * (WINDOW + 4) // 256)
        writer = asyncio.ensure_future(io.write(payload))
        got = []
        for _ in range(WINDOW):
            got.append(await agent_frame(agent))
        assert await agent.receive_nothing(0.3)  # the window is full: the writer waits
        assert not writer.done()
        await agent.send_to(text_data=json.dumps({"type": "stream.ack", "stream": frame["stream"], "n": WINDOW}))
        for _ in range(4):
            got.append(await agent_frame(agent))
        await writer
        await io.eof()
        assert await agent_frame(agent) == {"type": "stream.eof", "stream": frame["stream"]}
        assert b"".join(data for _, data in got) == payload
        await agent.disconnect()

    run(body)


def test_it_acknowledges_what_it_reads(owner, node):  # noqa: F811
    target = target_of(owner)

    async def body():
        agent = await connected(node)
        io = KernelIO(target, "download", {"paths": ["a"]})
        frame = await open_on_agent(agent, io)
        for index in range(8):
            await agent.send_to(bytes_data=encode_data(frame["stream"], bytes([index]) * 10))
        for index in range(8):
            assert await io.read(timeout=5) == bytes([index]) * 10
        acks = [await agent_frame(agent), await agent_frame(agent)]
        assert [a["type"] for a in acks] == ["stream.ack", "stream.ack"] and sum(a["n"] for a in acks) == 8
        await io.close()
        assert await agent_frame(agent) == {"type": "stream.close", "stream": frame["stream"]}
        await agent.disconnect()

    run(body)


def test_an_agent_error_raises_with_its_message(owner, node):  # noqa: F811
    target = target_of(owner)

    async def body():
        agent = await connected(node)
        io = KernelIO(target, "execute", {"mode": "query"})
        task = asyncio.ensure_future(io.open(timeout=5))
        frame = await agent_frame(agent)
        await agent.send_to(text_data=json.dumps({"type": "stream.error", "stream": frame["stream"],
                                                  "message": "unsupported: this image has no runtime"}))
        with pytest.raises(KernelIOError, match="no runtime"):
            await task
        await agent.disconnect()

    run(body)


def test_an_agent_that_never_opens_the_stream_times_out_and_the_open_is_withdrawn(owner, node):  # noqa: F811
    target = target_of(owner)

    async def body():
        agent = await connected(node)
        io = KernelIO(target, "files", {})
        with pytest.raises(KernelIOError, match="did not open") as info:
            await io.open(timeout=0.3)
        assert info.value.timeout
        opened = await agent_frame(agent)
        assert opened["type"] == "stream.open"
        assert await agent_frame(agent) == {"type": "stream.close", "stream": opened["stream"]}
        await agent.disconnect()

    run(body)


def test_a_link_that_drops_ends_the_stream_as_lost(owner, node):  # noqa: F811
    target = target_of(owner)

    async def body():
        agent = await connected(node)
        io = KernelIO(target, "download", {"paths": ["a"]})
        await open_on_agent(agent, io)
        await agent.disconnect()
        with pytest.raises(KernelIOError, match="connection to the node lost") as info:
            await io.read(timeout=5)
        assert info.value.lost

    run(body)


def test_a_link_that_stops_answering_is_noticed_by_the_heartbeat(owner, node, settings):  # noqa: F811
    settings.STREAM_HEARTBEAT_EVERY = 0.1
    target = target_of(owner)

    async def body():
        agent = await connected(node)
        io = KernelIO(target, "download", {"paths": ["a"]})
        await open_on_agent(agent, io)
        io.link = "nobody.listens"  # the link's process died without a word: pings go nowhere
        with pytest.raises(KernelIOError) as info:
            await io.read(timeout=10)
        assert info.value.lost
        await agent.disconnect()

    run(body)


def test_reading_with_a_timeout_raises_a_timeout_and_keeps_the_stream(owner, node):  # noqa: F811
    target = target_of(owner)

    async def body():
        agent = await connected(node)
        io = KernelIO(target, "execute", {})
        frame = await open_on_agent(agent, io)
        with pytest.raises(KernelIOError) as info:
            await io.read(timeout=0.2)
        assert info.value.timeout
        await agent.send_to(bytes_data=encode_data(frame["stream"], b"late"))
        assert await io.read(timeout=5) == b"late"
        await agent.disconnect()

    run(body)


@pytest.mark.parametrize("status, expected", [("PENDING", 403), ("TERMINATED", 403)])
def test_http_target_refuses_sessions_that_are_not_running(owner, node, status, expected):  # noqa: F811
    session = running_session(owner, status=status)
    with pytest.raises(APIException) as info:
        http_target(owner, owner.main_keypair, session.name)
    assert info.value.status_code == expected


def test_http_target_hides_other_users_sessions_as_not_found(owner, outsider, node):  # noqa: F811
    session = running_session(owner)
    with pytest.raises(APIException) as info:
        http_target(outsider, outsider.main_keypair, session.name)
    assert info.value.status_code == 404


class ForgetfulLayer:
    """A channel layer that, like channels_redis, drops what it buffered for a channel whose receive is
    cancelled; and records what the stream sends."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sent: list = []
        self.receives = 0

    async def new_channel(self):
        return "specific.test!one"

    async def group_send(self, group, message):
        self.sent.append(message)

    async def send(self, channel, message):
        self.sent.append(message)

    async def receive(self, channel):
        self.receives += 1
        try:
            return await self.queue.get()
        except asyncio.CancelledError:
            while not self.queue.empty():  # channels_redis: del self.receive_buffer[channel]
                self.queue.get_nowait()
            raise


def test_a_read_that_times_out_never_cancels_the_layers_receive_so_no_message_is_lost():
    from sessions.streams import StreamTarget

    async def body():
        layer = ForgetfulLayer()
        io = KernelIO(StreamTarget("s", "name", "k", "a"), "download", {}, layer=layer)
        opening = asyncio.ensure_future(io.open(timeout=5))
        await asyncio.sleep(0)
        stream = layer.sent[0]["frame"]["stream"]
        layer.queue.put_nowait({"type": "stream.opened", "stream": stream, "link": "link!x"})
        await opening
        for _ in range(3):
            with pytest.raises(KernelIOError):
                await io.read(timeout=0.05)
        layer.queue.put_nowait({"type": "stream.data", "stream": stream, "data": b"first"})
        layer.queue.put_nowait({"type": "stream.data", "stream": stream, "data": b"second"})
        assert await io.read(timeout=1) == b"first"
        assert await io.read(timeout=1) == b"second"
        assert layer.receives == 3  # the open, then one receive outliving the three timed-out reads, then one more
        await io.close()

    asyncio.run(body())
