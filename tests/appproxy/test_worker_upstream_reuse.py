"""The worker keeps its connections to an app (or to a model-serving replica) open and reuses
them: many requests one after another, over one client connection or over several opened one
after another, reach the upstream over one or two connections per target, not one each.  The
upstreams count the connections that carried a request (a replica's health checks are left out:
they open their own connections on purpose)."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import socket
import threading
import warnings
from http.server import ThreadingHTTPServer

import pytest
from inference_support import RawClient, inference_circuit, make_handler, route
from test_worker_relay import LOOPS, run_on
from worker_support import AppHandler, circuit, free_port, running_worker

from appproxy.worker.http1 import MAX_HEAD
from appproxy.worker.proxy import UpstreamPool, _open_streams

REQUESTS = 200
# one connection per target, and a second one where a pooled connection went stale in between
MOST_PER_TARGET = 2


class CountingUpstream:
    """An HTTP/1.1 server in threads (``handler``: a stdlib request handler class) that records
    which of its accepted connections carried a request other than ``/health``."""

    def __init__(self, handler):
        numbers = itertools.count(1)
        self.used: set[int] = set()
        self.requests = 0
        lock = threading.Lock()
        upstream = self

        class Counted(handler):
            def setup(self):
                super().setup()
                # head and body go out in separate writes: without this, Nagle and delayed ACKs cost 40 ms each
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.connection_number = next(numbers)

            def parse_request(self):
                parsed = super().parse_request()  # counted before the answer goes out
                if parsed and self.path != "/health":
                    with lock:
                        upstream.used.add(self.connection_number)
                        upstream.requests += 1
                return parsed

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Counted)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def counting(*handlers):
    upstreams = [CountingUpstream(handler) for handler in handlers]
    try:
        yield upstreams
    finally:
        for upstream in upstreams:
            upstream.close()


async def _get(reader, writer, path: str) -> bytes:
    writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"connection: close" not in head.lower(), head
    return await reader.readexactly(length)


async def _post(reader, writer, path: str, body: bytes) -> bytes:
    writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    assert head.startswith(b"HTTP/1.1 200 "), head
    return await reader.readexactly(length)


@pytest.mark.parametrize("loop", LOOPS)
def test_it_reuses_one_app_connection_for_many_requests_over_one_client_connection_and_over_several(loop):
    with counting(AppHandler) as (app,):
        c = circuit(port=free_port(), target_port=app.port, public=True)

        async def scenario():
            async with running_worker([c]):
                # one client connection: plain GETs, then GETs and uploads alternating
                reader, writer = await asyncio.open_connection("127.0.0.1", c["port"])
                for i in range(REQUESTS):
                    assert b"app at /one/%d<" % i in await _get(reader, writer, f"/one/{i}")
                for i in range(REQUESTS // 4):
                    await _get(reader, writer, f"/mixed/{i}")
                    assert b'"size": 3' in await _post(reader, writer, "/upload", b"abc")
                writer.close()
                # client connections one after another, each closed before the next one opens
                for n in range(5):
                    reader, writer = await asyncio.open_connection("127.0.0.1", c["port"])
                    for i in range(REQUESTS // 10):
                        await _get(reader, writer, f"/c{n}/{i}")
                    assert b'"size": 2' in await _post(reader, writer, "/upload", b"ok")
                    writer.close()
                    await writer.wait_closed()

        run_on(loop, scenario(), timeout=120)
        assert app.requests == REQUESTS + REQUESTS // 2 + 5 * (REQUESTS // 10 + 1)
        assert len(app.used) <= MOST_PER_TARGET, f"{len(app.used)} app connections for {app.requests} requests"


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("count", [1, 2])
def test_it_reuses_the_connections_to_the_replicas_of_an_endpoint(loop, count):
    handlers = [make_handler(name, {"health": 200}) for name in "ab"[:count]]
    with counting(*handlers) as upstreams:
        c = inference_circuit(free_port(), [route(None, port=u.port) for u in upstreams], public=True)

        async def scenario():
            async with running_worker([c]) as (worker, _):
                endpoints = worker.inference.endpoints
                for _ in range(500):
                    if c["id"] in endpoints and all(r.status == "healthy" for r in endpoints[c["id"]].routes.values()):
                        break
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError("the replicas never became healthy")
                client = RawClient(c["port"])
                for i in range(REQUESTS):
                    status, body = await client.get(f"/v1/one/{i}")
                    assert status == 200 and body["path"] == f"/v1/one/{i}"
                client.close()
                for n in range(5):  # client connections one after another
                    client = RawClient(c["port"])
                    for i in range(REQUESTS // 10):
                        status, _ = await client.get(f"/v1/c{n}/{i}")
                        assert status == 200
                    client.close()
                    await asyncio.sleep(0)

        run_on(loop, scenario(), timeout=120)
        assert sum(u.requests for u in upstreams) == REQUESTS + 5 * (REQUESTS // 10)
        for u in upstreams:
            assert len(u.used) <= MOST_PER_TARGET, f"{len(u.used)} connections to a replica for {u.requests} requests"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stream_writer_dropped_after_its_connection_went_back_to_the_pool_leaves_it_open(loop):
    """The stream path's writer is dropped once ``put_streams`` has pooled its transport; asyncio's
    ``StreamWriter.__del__`` must not close the transport under the pool then (and still closes one
    that nobody took over)."""
    with counting(AppHandler) as (app,):
        key = ("127.0.0.1", app.port)

        async def scenario():
            pool = UpstreamPool()
            reader, writer = await _open_streams(*key, limit=MAX_HEAD)
            transport = writer.transport
            pool.put_streams(key, reader, writer)
            del reader, writer
            gc.collect()
            assert not transport.is_closing(), "the pooled connection was closed when its writer went"
            reader, writer = pool.take_streams(key)
            assert writer.transport is transport
            pool.put_streams(key, reader, writer)
            del reader, writer
            gc.collect()
            assert pool.take(key) is not None and not transport.is_closing()
            _, writer = await _open_streams(*key, limit=MAX_HEAD)
            orphan = writer.transport
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del writer
                gc.collect()
            assert orphan.is_closing(), "a writer nobody handed on still closes its transport"
            transport.close()

        run_on(loop, scenario())
