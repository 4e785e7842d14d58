"""``backendai.asgi_handler``: Django's requests under ASGI in one thread hop, on reused threads,
and ``backendai.admission``: at most ``WEB_REQUEST_THREADS`` requests of a process running at once."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.http import HttpResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path

from backendai import admission
from backendai.admission import Admission
from backendai.asgi_handler import SyncASGIHandler

seen: dict[str, list] = {}
release_both = threading.Barrier(2, timeout=10)
stream_closed = threading.Event()


def threads_view(request):
    seen.setdefault("view", []).append(threading.current_thread())  # the object: an ident can be reused
    return HttpResponse(b"ok")


def meeting_view(request):
    release_both.wait()  # returns only once two requests are inside a view at the same time
    return HttpResponse(b"met")


async def async_view(request):
    await asyncio.sleep(0)
    return HttpResponse(b"async ok")


def endless_view(request):
    async def parts():
        try:
            while True:
                yield b"tick\n"
                await asyncio.sleep(0.01)
        finally:
            stream_closed.set()

    return StreamingHttpResponse(parts())


urlpatterns = [
    path("t/threads", threads_view),
    path("t/meet", meeting_view),
    path("t/async", async_view),
    path("t/endless", endless_view),
]


def scope_for(target: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": target, "raw_path": target.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}


async def call(app, target: str, disconnect_after: float | None = None) -> tuple[int, bytes]:
    """One request through the ASGI application; the client goes away ``disconnect_after`` seconds
    after the first part of the body when given."""
    incoming: asyncio.Queue = asyncio.Queue()
    incoming.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    status, body = [0], bytearray()

    async def receive():
        return await incoming.get()

    async def send(message):
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        elif message["type"] == "http.response.body":
            if not body and message.get("body") and disconnect_after is not None:
                asyncio.get_running_loop().call_later(disconnect_after, incoming.put_nowait,
                                                      {"type": "http.disconnect"})
            body.extend(message.get("body", b""))

    await asyncio.wait_for(app(scope_for(target), receive, send), 10)
    return status[0], bytes(body)


@pytest.fixture
def handler():
    seen.clear()
    with override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"]):
        yield SyncASGIHandler()


def test_sequential_requests_run_on_one_reused_thread_not_a_new_one_each(handler):
    async def main():
        return [await call(handler, "/t/threads") for _ in range(5)]

    assert asyncio.run(main()) == [(200, b"ok")] * 5
    assert all(thread is seen["view"][0] for thread in seen["view"])
    assert seen["view"][0] is not threading.current_thread()  # not the event loop's thread


def test_the_request_signals_and_the_view_run_on_the_request_thread(handler):
    from django.core import signals

    def started(**kwargs):
        seen.setdefault("started", []).append(threading.current_thread())

    def finished(**kwargs):
        seen.setdefault("finished", []).append(threading.current_thread())

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        asyncio.run(call(handler, "/t/threads"))
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert seen["started"] == seen["view"] == seen["finished"]


def test_concurrent_requests_get_threads_of_their_own(handler):
    async def main():
        return await asyncio.gather(call(handler, "/t/meet"), call(handler, "/t/meet"))

    release_both.reset()
    assert asyncio.run(main()) == [(200, b"met"), (200, b"met")]


def test_an_async_view_still_answers(handler):
    assert asyncio.run(call(handler, "/t/async")) == (200, b"async ok")


def test_a_client_that_goes_away_stops_a_streamed_response(handler):
    stream_closed.clear()
    status, body = asyncio.run(call(handler, "/t/endless", disconnect_after=0.05))
    assert status == 200 and body.startswith(b"tick\n")
    assert stream_closed.is_set()


def test_admission_lets_at_most_its_size_run_at_once():
    gate = Admission(2)
    inside, most, lock, go = [0], [0], threading.Lock(), threading.Event()

    def request():
        with gate.running():
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            go.wait(5)
            time.sleep(0.01)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=request) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    assert inside[0] == 2
    go.set()
    for thread in threads:
        thread.join(5)
    assert most[0] == 2 and inside[0] == 0


def test_a_request_that_waits_on_purpose_gives_its_place_to_another():
    gate = Admission(1)
    waiting_now, other_ran, finish = threading.Event(), threading.Event(), threading.Event()

    def long_poll():
        with gate.running():
            with gate.waiting():
                waiting_now.set()
                finish.wait(5)
            # and it gets a place again to answer

    def short_read():
        with gate.running():
            other_ran.set()

    poll = threading.Thread(target=long_poll)
    poll.start()
    assert waiting_now.wait(5)
    read = threading.Thread(target=short_read)
    read.start()
    assert other_ran.wait(5)  # while the first one waits
    finish.set()
    poll.join(5)
    read.join(5)
    assert not poll.is_alive() and not read.is_alive()


def test_waiting_outside_a_request_and_a_size_of_zero_change_nothing():
    with admission.waiting():  # a Celery task, a command: no place held, nothing to give back
        pass
    open_gate = Admission(0)
    with open_gate.running(), open_gate.running(), open_gate.waiting():
        pass


def test_nested_running_takes_one_place_only():
    gate = Admission(1)
    with gate.running():
        with gate.running():  # would block forever if it took a second place
            pass
