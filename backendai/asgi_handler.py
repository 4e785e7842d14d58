"""Django's HTTP requests under ASGI with one thread hop per request, on reused threads.

Django's own ``ASGIHandler`` runs each request in a fresh ``ThreadSensitiveContext``: asgiref
starts a new thread for the request's synchronous code and joins it at the end, and the
middleware chain, loaded in async mode, crosses between the event loop and that thread at each
boundary between a synchronous-only middleware and an async-capable one (ours: four crossings
for every request, besides the signals' and the response's own).  Measured with py-spy on the
production web server, the thread's start and join and those crossings were most of the cost of
``/healthz`` (docs/performance.md, "API reads").

``SyncASGIHandler`` keeps Django's request, response and disconnect handling and changes two things:

* the middleware chain is loaded in synchronous mode, as under WSGI, and the request runs through
  it in ONE call on a worker thread: ``request_started``, the request object, the middleware and
  the view; a second call closes the response (``request_finished``) after it is sent.  An
  ``async def`` view still works: Django calls it with ``async_to_sync``, on this event loop.
* the worker thread is reused: each request takes an idle single-thread executor from a stack (a
  new one when none is idle) and enters asgiref's ``ThreadSensitiveContext`` with it, so every
  thread-sensitive call of the request (the view's own ``sync_to_async``, the streamed bodies of
  ``backendai.streaming``) runs on that one thread, as asgiref guarantees; at the end the executor
  goes back to the stack.  Concurrency is unchanged: a request that waits (the agents' long poll)
  holds its thread, another request gets another one; at most ``IDLE_THREADS`` idle threads are
  kept.  A client that goes away while its view runs is handled as Django does (``request_finished``
  on the request's thread once the view returns); a handler cancelled from outside (the server
  stopping) gives its executor back only once the thread's queued calls have returned.

Django's database connections are per thread, so a reused thread keeps its connection between
requests as a threaded WSGI server does; ``request_started``/``request_finished`` close or give
back what is old exactly as before (``CONN_MAX_AGE``, the psycopg pool).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse
from django.urls import set_script_prefix

from backendai import admission

#: Idle request threads kept per process (more are started while more requests run at once).
IDLE_THREADS = 32


class SyncASGIHandler(ASGIHandler):
    """Django's ``ASGIHandler`` with a synchronous middleware chain run in one hop on a reused thread."""

    def __init__(self):
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        except BaseException:  # cancelled: a call may still run on the thread, back once it returns
            loop = asyncio.get_running_loop()
            executor.submit(lambda: None).add_done_callback(
                lambda _: loop.call_soon_threadsafe(self._give_back, executor))
            raise
        self._give_back(executor)

    def _give_back(self, executor: ThreadPoolExecutor) -> None:
        if len(self._idle) < IDLE_THREADS:
            self._idle.append(executor)
        else:
            executor.shutdown(wait=False)

    async def handle(self, scope, receive, send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            await self._serve(scope, body_file, receive, send)
        finally:
            body_file.close()

    async def _serve(self, scope, body_file, receive, send) -> None:
        async def respond():
            response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while the body was sent
            return response

        # as Django does: a client that disconnects stops the response (a stream stops at its next part)
        tasks = [asyncio.create_task(self.listen_for_disconnect(receive)), asyncio.create_task(respond())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            # disconnected before the response was made: on the request's thread, after the view's call
            await sync_to_async(signals.request_finished.send, thread_sensitive=True)(sender=self.__class__)
        else:
            await sync_to_async(response.close, thread_sensitive=True)()

    def _respond(self, scope, body_file):
        """On the request's thread: what Django's ``handle`` and ``run_get_response`` do, synchronously."""
        with admission.running():
            signals.request_started.send(sender=self.__class__, scope=scope)
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                return error_response
            response = self.get_response(request)
        response._handler_class = self.__class__
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        return response


def get_asgi_application() -> SyncASGIHandler:
    """``django.core.asgi.get_asgi_application`` with this handler."""
    import django
    from django.conf import settings

    django.setup(set_prefix=False)
    admission.configure(settings.WEB_REQUEST_THREADS)
    return SyncASGIHandler()
