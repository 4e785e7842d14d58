"""The worker's HTTP callback path (``proxy.ClientConn``/``UpstreamConn``): the common request
(no body, no upgrade, an answer with a Content-Length) is served from protocol callbacks, and
every other case hands the connection over to the stream path in the middle of a keep-alive
connection without losing a byte; the client-side limits and the upstream pool's bookkeeping
hold on both event loops."""
from __future__ import annotations

import asyncio
import re

import pytest
from test_worker_relay import LOOPS, run_on
from worker_support import circuit, free_port, running_worker, upstream_app

from appproxy.worker.http1 import MAX_HEAD
from appproxy.worker.proxy import ClientConn, UpstreamConn


async def _talk(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await reader.read(-1)
    finally:
        writer.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_it_serves_plain_requests_from_callbacks_and_reuses_one_app_connection(loop):
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port, public=True)

        async def scenario():
            async with running_worker([c]) as (worker, _):
                reader, writer = await asyncio.open_connection("127.0.0.1", c["port"])
                for i in range(5):
                    writer.write(b"GET /n%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                    await reader.readuntil(b"</html>")
                (client,) = worker.proxy.connections
                assert isinstance(client.get_protocol(), ClientConn), "the callback path served them"
                idle = [entry for stack in worker.proxy.pool.idle.values() for entry in stack]
                assert len(idle) == 1 and isinstance(idle[0][0], UpstreamConn), "one app connection, pooled"
                m = worker.metrics.for_circuit(worker.table.get(c["id"]))
                assert m.requests.value == m.responses.value == m.upstream_requests.value == 5
                assert m.pending.value == 0 and sum(m.duration.counts) == 5
                writer.close()

        run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_it_hands_a_connection_to_the_stream_path_for_a_body_or_a_chunked_answer_and_keeps_order(loop):
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port, public=True)

        async def scenario():
            async with running_worker([c]) as (worker, _):
                # callbacks, then an upload (stream path from there on), then a plain GET
                data = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                        b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = await _talk(c["port"], data)
                assert answer.count(b"HTTP/1.1 200 OK") == 3
                assert re.findall(rb"app at (/\w)<|\"size\": (\d+)", answer) == [(b"/a", b""), (b"", b"5"),
                                                                                    (b"/b", b"")]
                # a close-delimited answer (re-chunked on the stream path), then another request
                data = (b"GET /close-delimited HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = await _talk(c["port"], data)
                assert b"d\r\nuntil the end\r\n0\r\n\r\n" in answer and b"app at /after<" in answer
                m = worker.metrics.for_circuit(worker.table.get(c["id"]))
                for _ in range(100):
                    if not worker.proxy.connections:
                        break
                    await asyncio.sleep(0.02)
                assert m.pending.value == 0 and m.requests.value == m.responses.value == 5
                assert not worker.proxy.connections and not worker.proxy.waiting and not worker.proxy.tasks

        run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_it_answers_a_head_too_large_431_and_an_incomplete_one_400_on_the_callback_path(loop):
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port, public=True)

        async def scenario():
            async with running_worker([c]) as (worker, _):
                huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD + 10)
                answer = await _talk(c["port"], huge)
                assert answer.startswith(b"HTTP/1.1 431")
                reader, writer = await asyncio.open_connection("127.0.0.1", c["port"])
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /half HTTP/1.1\r\nHo")
                writer.write_eof()
                answer = await reader.read(-1)
                writer.close()
                assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400" in answer
                assert answer.endswith(b"</html>") and b"incomplete request" in answer

        run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_it_keeps_a_slow_reader_s_answers_whole_under_back_pressure(loop):
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port, public=True)
        size = 4 * 1024 * 1024

        async def scenario():
            async with running_worker([c]) as (worker, _):
                reader, writer = await asyncio.open_connection("127.0.0.1", c["port"], limit=1 << 16)
                writer.write(b"GET /big/%d HTTP/1.1\r\nHost: x\r\n\r\nGET /big/%d HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n" % (size, size))
                total = 0
                while data := await reader.read(65536):
                    total += len(data)
                    if total < size:
                        await asyncio.sleep(0.001)  # slower than the app: the worker must hold back
                writer.close()
                assert total > 2 * size
                assert worker.metrics.for_circuit(worker.table.get(c["id"])).response_bytes.value == 2 * size

        run_on(loop, scenario(), timeout=120)
