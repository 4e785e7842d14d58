"""The HTTP relay under both event loops (uvloop, the default, and asyncio): bodies of every
framing, pipelined requests, websockets, and apps that fail in every way a proxy must survive
(closing without an answer, cutting a body short, answering garbage, being too slow, dropping a
pooled connection); and the request parser's single control-character check agreeing with the
per-line one it replaced."""
from __future__ import annotations

import asyncio
import hashlib
import re

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st
from worker_support import circuit, free_port, running_worker, upstream_app

from appproxy.worker import http1
from appproxy.worker.http1 import HTTPError, parse_request, parse_response

LOOPS = {"uvloop": uvloop.run, "asyncio": asyncio.run}


def run_on(loop: str, coro, timeout: float = 60):
    async def bounded():
        assert (type(asyncio.get_running_loop()).__module__ == "uvloop") == (loop == "uvloop")
        async with asyncio.timeout(timeout):
            return await coro
    return LOOPS[loop](bounded())


async def exchange(port: int, data: bytes, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await reader.read(-1) if until_close else await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def raw_app(behaviour):
    """An app written against raw sockets: ``behaviour(reader, writer)`` per connection."""
    server = await asyncio.start_server(behaviour, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("loop", LOOPS)
def test_bodies_of_every_framing_and_pipelined_requests_come_through(loop):
    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port, public=True)
        size = 3 * 1024 * 1024 + 11
        block = bytes(range(256)) * 256
        expected = (block * (size // len(block) + 1))[:size]

        async def scenario():
            async with running_worker([c]) as (worker, _):
                port = c["port"]
                # a large Content-Length download, byte for byte
                answer = await exchange(port, f"GET /big/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                              .encode())
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and body == expected
                # a chunked upload with odd chunk sizes and a trailer, and a fixed-length one
                chunks = [b"a" * 1, b"b" * 70_000, b"c" * 300_001]
                chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in chunks) + b"0\r\nX-T: 1\r\n\r\n"
                answer = await exchange(port, b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                              b"Connection: close\r\n\r\n" + chunked)
                whole = b"".join(chunks)
                assert hashlib.sha256(whole).hexdigest().encode() in answer and b'"size": %d' % len(whole) in answer
                # three pipelined GETs on one connection: three answers, in order
                pipelined = b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3))
                answer = await exchange(port, pipelined + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert [m.decode() for m in re.findall(rb"app at (/\w+)<", answer)] == ["/p0", "/p1", "/p2", "/last"]
                assert answer.count(b"HTTP/1.1 200 OK") == 4
                # a close-delimited answer becomes chunked for an HTTP/1.1 client
                answer = await exchange(port, b"GET /close-delimited HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert b"Transfer-Encoding: chunked" in answer and answer.endswith(b"d\r\nuntil the end\r\n0\r\n\r\n")
                assert worker.metrics.for_circuit(worker.table.get(c["id"])).response_bytes.value >= size

        run_on(loop, scenario(), timeout=120)


@pytest.mark.parametrize("loop", LOOPS)
def test_apps_that_fail_get_502_or_504_and_a_dropped_pooled_connection_is_retried(loop):
    async def silent_close(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def short_body(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()
        writer.close()

    async def long_cut(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + b"z" * 300_000)
        await writer.drain()
        writer.close()

    async def garbage(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        writer.close()

    async def slow(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)
        writer.close()

    async def one_per_connection(reader, writer):
        # keep-alive in words, but the connection is dropped after one answer: the worker's
        # pooled connection is stale when the next request comes
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def scenario():
        servers, circuits = [], {}
        for behaviour in (silent_close, short_body, long_cut, garbage, slow, one_per_connection):
            server, port = await raw_app(behaviour)
            servers.append(server)
            circuits[behaviour.__name__] = circuit(port=free_port(), target_port=port, public=True)
        try:
            async with running_worker(list(circuits.values()), upstream_timeout=1) as (worker, _):
                def url(name):
                    return circuits[name]["port"]
                request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                answer = await exchange(url("silent_close"), request)
                assert answer.startswith(b"HTTP/1.1 502") and b"closed the connection without answering" in answer
                # a body cut short: a small one (sent with its head) never starts, a large one
                # (streamed) stops where the app stopped; either way the connection closes, no hang
                assert await exchange(url("short_body"), request) == b""
                answer = await exchange(url("long_cut"), request)
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and body == b"z" * 300_000
                answer = await exchange(url("garbage"), request)
                assert answer.startswith(b"HTTP/1.1 502") and b"malformed" in answer
                answer = await exchange(url("slow"), request)
                assert answer.startswith(b"HTTP/1.1 504") and b"did not answer in time" in answer
                # two requests on one client connection; the second finds the pooled one stale
                answer = await exchange(url("one_per_connection"), request + request.replace(
                    b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
                assert answer.count(b"HTTP/1.1 200 OK") == 2 and answer.endswith(b"ok")
                assert not worker.proxy.waiting, "no request is left waiting for an answer"
        finally:
            for server in servers:
                server.close()

    run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_websocket_carries_many_round_trips_and_large_frames(loop):
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def scenario():
        async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
            c = circuit(port=free_port(), target_port=server.sockets[0].getsockname()[1], public=True)
            async with running_worker([c]) as (worker, _):
                async with connect(f"ws://127.0.0.1:{c['port']}/ws", max_size=None, compression=None) as ws:
                    for i in range(200):
                        await ws.send(f"m{i}")
                        assert await ws.recv() == f"m{i}"
                    big = bytes(range(256)) * 8192  # 2 MiB in one frame
                    await ws.send(big)
                    assert await ws.recv() == big
                m = worker.metrics.for_circuit(worker.table.get(c["id"]))
                for _ in range(100):
                    if m.ws_closed.value:
                        break
                    await asyncio.sleep(0.02)
                assert m.ws_established.value == m.ws_closed.value == 1 and m.ws_traffic.value > 2 * len(big)

    run_on(loop, scenario())


def _per_line(head: bytes) -> bool:
    return not any(http1.CONTROL.search(line) for line in head.split(b"\r\n"))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"a", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x00", b"\x7f", b"\x1b",
                                 b"\xff"]), max_size=40))
def test_the_one_control_check_per_head_agrees_with_the_check_per_line(parts):
    head = b"".join(parts)
    assert http1._clean(head) == _per_line(head)


@pytest.mark.parametrize("bad", [b"X-A: a\rb", b"X-A: a\nb", b"X-A: a\x00", b"X-A: \x7f", b"X-\x01: a"])
def test_control_characters_in_a_head_are_refused(bad):
    with pytest.raises(HTTPError) as refused:
        parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\n\r\n")
    assert refused.value.status == 400
    with pytest.raises(HTTPError) as refused:
        parse_response(b"HTTP/1.1 200 OK\r\n" + bad + b"\r\n\r\n")
    assert refused.value.status == 502
    with pytest.raises(HTTPError):
        parse_request(b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parse_request(b"GET / HTTP/1.1\r\nHost: x\r\nX-Tab: a\tb\r\n\r\n").headers[-1][2] == b"a\tb"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_raw_tcp_relay_keeps_half_closed_streams_and_back_pressure(loop):
    size = 8 * 1024 * 1024 + 3

    async def digest_after_eof(reader, writer):
        digest, total = hashlib.sha256(), 0
        while data := await reader.read(65536):
            digest.update(data)
            total += len(data)
            await asyncio.sleep(0)  # a slow reader: the relay must hold back, not buffer everything
        writer.write(f"{total} {digest.hexdigest()}".encode())  # written after the client's EOF
        await writer.drain()
        writer.close()

    async def scenario():
        server, target = await raw_app(digest_after_eof)
        c = circuit(port=free_port(), target_port=target, protocol="tcp", app="digest")
        try:
            async with running_worker([c]) as (worker, _):
                reader, writer = await asyncio.open_connection("127.0.0.1", c["port"])
                payload = bytes(range(256)) * (size // 256) + b"end"
                writer.write(payload)  # sent at once: part of it is read ahead before the relay starts
                await writer.drain()
                writer.write_eof()
                answer = await reader.read()
                assert answer.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
                writer.close()
                m = worker.metrics.for_circuit(worker.table.get(c["id"]))
                for _ in range(100):
                    if m.tcp_closed.value:
                        break
                    await asyncio.sleep(0.02)
                assert m.tcp_established.value == m.tcp_closed.value == 1
                assert m.tcp_traffic.value == len(payload) + len(answer)
                assert not worker.table.get(c["id"]).relays
        finally:
            server.close()

    run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_client_and_app_sockets_have_nagle_off(loop):
    import socket

    with upstream_app() as app_port:
        c = circuit(port=free_port(), target_port=app_port, public=True)

        async def scenario():
            async with running_worker([c]) as (worker, _):
                reader, writer = await asyncio.open_connection("127.0.0.1", c["port"])
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await reader.readuntil(b"</html>")
                client_sides = [w.get_extra_info("socket") for w in worker.proxy.connections]
                app_sides = [w.get_extra_info("socket") for stack in worker.proxy.pool.idle.values()
                             for _, w, _ in stack]
                assert len(client_sides) == 1 and len(app_sides) == 1
                for sock in client_sides + app_sides:
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                writer.close()

        run_on(loop, scenario())
