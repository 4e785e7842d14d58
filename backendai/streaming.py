"""Streaming a synchronous iterator of byte chunks as a response body.

Under WSGI the iterator is the body as it is.  Under ASGI Django would read a
synchronous iterator whole into memory before sending it, so ``streamed`` wraps it
in an async generator that reads each chunk with ``sync_to_async``: in the request's
own worker thread when ``thread_sensitive`` (the iterator holds a database cursor,
which belongs to that thread), else in any worker thread (file reads).

When the client goes away, Django cancels the response while a read may still be
running in its thread (``sync_to_async`` cannot interrupt it); closing the generator
then from another thread raised "generator already executing" and left the file or
cursor open.  A lock makes the close wait for that read to finish."""
from __future__ import annotations

import threading
from collections.abc import Iterator

from asgiref.sync import sync_to_async


class TransferBroken(Exception):
    """Raised by a response body that broke off midway (its source failed, e.g. the agent went).

    The body must not end as if it were whole: a download without a ``Content-Length``
    (``download_single``) would then look complete to the client.  Under daphne
    ``vfolders.asgi.flow_controlled`` drops the connection instead (the client sees an
    incomplete body); a WSGI server drops it for any exception raised by a body."""


def is_asgi(request) -> bool:
    return hasattr(request, "scope")


def streamed(request, chunks: Iterator[bytes], *, thread_sensitive: bool = False):
    """``chunks`` as a body for ``StreamingHttpResponse`` (closed when the response ends)."""
    if not is_asgi(request):
        return chunks
    done = object()
    lock = threading.Lock()

    def read():
        with lock:
            return next(chunks, done)

    def close():
        with lock:
            getattr(chunks, "close", lambda: None)()

    async def produce():
        try:
            while True:
                chunk = await sync_to_async(read, thread_sensitive=thread_sensitive)()
                if chunk is done:
                    break
                yield chunk
        finally:
            await sync_to_async(close, thread_sensitive=thread_sensitive)()

    return produce()
