"""Back-pressure for streamed transfers under daphne.

Daphne hands each ``http.response.body`` message straight to Twisted's send
buffer and returns at once, so a download produced faster than the client takes
it piles up in the manager's memory.  Folder files no longer pass the manager
(the storage proxy serves them); what still streams through daphne is the session
file transfers (``backendai.api.middleware.is_transfer_path``).
``flow_controlled(app)`` wraps an ASGI application: for those responses it registers a Twisted push
producer on the request (Twisted's public producer API), which Twisted pauses
when the socket buffer is full and resumes when it drains; ``send`` waits
while paused.  Memory then stays at a few chunks whatever the file size.

A body that breaks off midway (:class:`backendai.streaming.TransferBroken`, e.g. the agent of a
session download went) drops the connection instead of ending the response, so the client sees
an incomplete body rather than a shorter one that looks whole.

Under servers whose ``send`` already waits (uvicorn, hypercorn) or when the
request is not a Twisted one, it passes everything through unchanged.

``backendai/asgi.py`` wires it in (``"http": ...flow_controlled(django_asgi_app)``).
"""
from __future__ import annotations

import asyncio
import logging
from functools import partial

from backendai.api.middleware import is_transfer_path
from backendai.streaming import TransferBroken

log = logging.getLogger(__name__)


class _Gate:
    """A Twisted ``IPushProducer`` that opens and closes an asyncio event."""

    def __init__(self):
        self.open = asyncio.Event()
        self.open.set()

    def pauseProducing(self):
        self.open.clear()

    def resumeProducing(self):
        self.open.set()

    def stopProducing(self):  # the connection is gone: let the app run to its end
        self.open.set()


def _twisted_request(send):
    """Daphne's ``send`` is ``partial(server.handle_reply, protocol)``; the protocol is a
    ``twisted.web.http.Request``.  Anything else: None."""
    protocol = send.args[0] if isinstance(send, partial) and send.args else None
    if protocol is not None and hasattr(protocol, "registerProducer") and hasattr(protocol, "channel"):
        return protocol
    return None


def flow_controlled(app):
    async def application(scope, receive, send):
        if scope.get("type") != "http" or not is_transfer_path(scope.get("path", "")):
            return await app(scope, receive, send)
        request = _twisted_request(send)
        if request is None:
            return await app(scope, receive, send)
        gate = _Gate()
        state = {"registered": False}

        def release():
            # A client that goes away first is an ordinary end: Twisted's ``Request.connectionLost``
            # drops the request's channel (``request.channel = None``) and the registration died
            # with it; ``Request.unregisterProducer`` would call ``None.unregisterProducer()``.
            if state["registered"]:
                state["registered"] = False
                if request.producer is gate and request.channel is not None:
                    request.unregisterProducer()

        async def paced_send(message):
            if message.get("type") == "http.response.body" and message.get("more_body"):
                if not state["registered"] and request.producer is None and request.channel is not None:
                    request.registerProducer(gate, True)
                    state["registered"] = True
                    if getattr(request.channel, "_waitingForTransport", False):
                        gate.pauseProducing()
                await send(message)
                if request.channel is not None:  # gone: daphne drops what is sent, nothing to wait for
                    await gate.open.wait()
                return
            if message.get("type") == "http.response.body":
                release()
            await send(message)

        try:
            return await app(scope, receive, paced_send)
        except TransferBroken as exc:
            # the body broke off midway: drop the connection, so the client sees an incomplete body
            # (ending it here would send the last chunk and make a shorter file look whole)
            transport = getattr(request.channel, "transport", None) if request.channel is not None else None
            if transport is None:
                return None  # the client is gone already
            log.info("%s %s: dropping the connection, the body broke off: %s", scope.get("method"),
                     scope.get("path"), exc)
            abort = getattr(transport, "abortConnection", None) or transport.loseConnection
            abort()
            return None
        finally:
            release()

    return application
