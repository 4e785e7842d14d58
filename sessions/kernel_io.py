"""Streams into a kernel from code that is not a websocket consumer: HTTP views and tasks.

The websocket consumers (``sessions.consumers``) relay a client's bytes; the
work inside a session (execute, files, upload, download, commit) is a request
the manager itself makes of the kernel's agent.  :class:`KernelIO` is that
caller's side of one stream over the agent link (``agents.consumers``):

* it opens the stream with ``link.open`` to the agent's group, replies coming to
  a channel of its own (``channel_layer.new_channel()``), so it works in any
  web process;
* :meth:`write` keeps at most ``WINDOW`` data chunks unacknowledged, :meth:`eof`
  says the request is complete (``stream.eof``), :meth:`read` hands out the
  agent's chunks in order and acknowledges them, :meth:`close` ends it early;
* it pulls from its channel only while a call waits, so it works in whichever
  event loop runs the call (``async_to_sync`` from a synchronous view, or an
  async generator streaming a response body).  A wait that times out never
  cancels the channel layer's ``receive`` (channels_redis drops what it had
  buffered for the channel when a receive is cancelled): the receive stays
  pending, shielded, and the next wait picks it up; :meth:`close` drops it;
* every wait is bounded: the open by ``OPEN_TIMEOUT``, a silent link by the
  heartbeat (``link.ping`` every ``HEARTBEAT_EVERY`` seconds, lost after
  ``HEARTBEAT_MISSES`` unanswered), a read by its ``timeout``.

Failures raise :class:`KernelIOError` (``lost`` when the node's connection went).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from agents.protocol import CHUNK, ack_threshold
from agents.services import agent_group
from backendai import requestctx
from sessions.streams import StreamTarget

log = logging.getLogger(__name__)

__all__ = ["KernelIO", "KernelIOError"]

#: Data chunks in flight per direction.
WINDOW = 16
#: Seconds to wait for the agent to open the stream.
OPEN_TIMEOUT = 15.0
#: Seconds between two checks that the link still carries the stream; checks missed before it is lost.
HEARTBEAT_EVERY = 10.0
HEARTBEAT_MISSES = 3
#: How long to retry a send into a full channel.
FULL_RETRY = 5.0


class KernelIOError(Exception):
    """The stream could not be opened or ended abnormally."""

    def __init__(self, message: str, *, lost: bool = False, timeout: bool = False):
        super().__init__(message)
        self.message = message
        self.lost = lost
        self.timeout = timeout


class KernelIO:
    """One stream of ``kind`` into ``target``'s kernel (see the module's docstring)."""

    def __init__(self, target: StreamTarget, kind: str, fields: dict[str, Any] | None = None, *,
                 window: int = WINDOW, layer=None):
        self.target = target
        self.kind = kind
        self.fields = dict(fields or {})
        self.window = window
        self.layer = layer or get_channel_layer()
        self.stream_id = uuid.uuid4().hex
        self.channel: str | None = None
        self.link: str | None = None
        self.exit_code: int | None = None
        self.reason: str | None = None
        self.ended = False  # the agent closed the stream (normally)
        self._error: KernelIOError | None = None
        self._data: deque[bytes] = deque()
        self._unacked = 0
        self._consumed = 0
        self._heard = time.monotonic()
        self._receiving: asyncio.Future | None = None  # the channel receive a timed-out wait left pending

    def __repr__(self) -> str:
        return f"<KernelIO {self.kind} {self.stream_id[:8]} kernel={self.target.kernel_id}>"

    # -- the public calls -------------------------------------------------------------------------
    async def open(self, timeout: float | None = None) -> KernelIO:
        timeout = timeout if timeout is not None else getattr(settings, "STREAM_OPEN_TIMEOUT", OPEN_TIMEOUT)
        requestctx.bind(kernel_id=self.target.kernel_id, agent_id=self.target.agent_id)
        self.channel = await self.layer.new_channel()
        frame = {"type": "stream.open", "stream": self.stream_id, "kind": self.kind,
                 "kernel_id": self.target.kernel_id, "window": self.window, **self.fields}
        await self.layer.group_send(agent_group(self.target.agent_id),
                                    {"type": "link.open", "reply_to": self.channel, "frame": frame})
        deadline = time.monotonic() + timeout
        while self.link is None:
            self._raise_if_failed()
            if self.ended:
                return self  # opened and already over (a tiny answer): its data is queued
            left = deadline - time.monotonic()
            if left <= 0:
                self._drop_receive()
                await self._close_by_group()
                raise KernelIOError(f"agent {self.target.agent_id} did not open the stream in {timeout:.0f}s",
                                    timeout=True)
            await self._pump(left)
        return self

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the kernel's side, waiting while the window is full."""
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            while self._unacked >= self.window:
                self._raise_if_failed()
                if self.ended:
                    raise KernelIOError(f"the {self.kind} stream ended before it took all the data")
                await self._pump(HEARTBEAT_EVERY)
            self._raise_if_failed()
            self._unacked += 1
            await self._send({"type": "link.data", "stream": self.stream_id, "data": bytes(view[start:start + CHUNK])})

    async def eof(self) -> None:
        """The request is complete: the agent's side answers now."""
        self._raise_if_failed()
        await self._send({"type": "link.control", "frame": {"type": "stream.eof", "stream": self.stream_id}})

    async def read(self, timeout: float | None = None) -> bytes | None:
        """The next chunk from the kernel's side; ``None`` once the agent ended the stream.

        Raises :class:`KernelIOError` when it failed, or (``timeout=True``) when
        nothing came for ``timeout`` seconds (the stream stays usable)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._data:
            self._raise_if_failed()
            if self.ended:
                return None
            wait = HEARTBEAT_EVERY if deadline is None else min(HEARTBEAT_EVERY, deadline - time.monotonic())
            if wait <= 0:
                raise KernelIOError(f"no answer from the {self.kind} stream in {timeout:.0f}s", timeout=True)
            await self._pump(wait)
        chunk = self._data.popleft()
        self._consumed += 1
        if self._consumed >= ack_threshold(self.window) and not self.ended and self.link is not None:
            n, self._consumed = self._consumed, 0
            await self._send({"type": "link.control", "frame": {"type": "stream.ack", "stream": self.stream_id,
                                                                "n": n}}, quiet=True)
        return chunk

    async def read_all(self, limit: int, timeout: float | None = None) -> bytes:
        """Everything until the end, at most ``limit`` bytes (more raises :class:`KernelIOError`)."""
        parts, size = [], 0
        while (chunk := await self.read(timeout)) is not None:
            size += len(chunk)
            if size > limit:
                await self.close()
                raise KernelIOError(f"the {self.kind} answer is larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def close(self) -> None:
        """End the stream early (nothing happens if the agent ended it already).  Always call it: it also
        drops the channel receive a timed-out wait left pending."""
        self._drop_receive()
        if self.ended or self._error is not None:
            return
        self._error = KernelIOError("closed")
        if self.link is not None:
            await self._send({"type": "link.control", "frame": {"type": "stream.close", "stream": self.stream_id}},
                             quiet=True)
        else:
            await self._close_by_group()

    # -- internals --------------------------------------------------------------------------------
    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def _close_by_group(self) -> None:
        """Close a stream that is not open yet: the close follows the open through the agent's group."""
        try:
            await self.layer.group_send(agent_group(self.target.agent_id), {
                "type": "link.control", "frame": {"type": "stream.close", "stream": self.stream_id}})
        except Exception:  # noqa: BLE001 - the link ends it when it drops anyway
            log.debug("could not close stream %s", self.stream_id, exc_info=True)

    async def _send(self, message: dict, quiet: bool = False) -> None:
        channel = self.link
        if channel is None:
            if quiet:
                return
            raise KernelIOError(f"the {self.kind} stream is not open")
        deadline = time.monotonic() + FULL_RETRY
        while True:
            try:
                await self.layer.send(channel, message)
                return
            except ChannelFull:
                if time.monotonic() > deadline:
                    if quiet:
                        return
                    self._error = KernelIOError(f"the link of agent {self.target.agent_id} does not take data")
                    raise self._error
                await asyncio.sleep(0.05)

    def _drop_receive(self) -> None:
        receiving, self._receiving = self._receiving, None
        if receiving is not None and not receiving.done():
            receiving.cancel()

    async def _pump(self, wait: float) -> None:
        """Take one message from this stream's channel (waiting at most ``wait`` seconds)."""
        every = getattr(settings, "STREAM_HEARTBEAT_EVERY", HEARTBEAT_EVERY)
        receiving = self._receiving
        if receiving is None or receiving.get_loop() is not asyncio.get_running_loop():
            # (a receive left in another loop, one async_to_sync already closed, ended with it)
            receiving = self._receiving = asyncio.ensure_future(self.layer.receive(self.channel))
        try:
            message = await asyncio.wait_for(asyncio.shield(receiving), timeout=max(0.01, min(wait, every)))
        except asyncio.TimeoutError:
            await self._heartbeat(every)
            if self._error is not None:
                self._drop_receive()
            return
        except BaseException:
            if receiving.done():  # the layer failed (not this wait cancelled): the next wait starts afresh
                self._receiving = None
            raise
        self._receiving = None
        self._handle(message)

    async def _heartbeat(self, every: float) -> None:
        if self.link is None or self.ended:
            return
        silent = time.monotonic() - self._heard
        if silent > every * HEARTBEAT_MISSES:
            self._error = KernelIOError(f"connection to the node lost (agent {self.target.agent_id} does not "
                                        "answer)", lost=True)
            return
        if silent >= every:
            try:
                await self.layer.send(self.link, {"type": "link.ping", "stream": self.stream_id,
                                                  "reply_to": self.channel})
            except ChannelFull:
                pass

    def _handle(self, message: dict) -> None:
        kind = message.get("type")
        if message.get("stream") != self.stream_id:
            return
        self._heard = time.monotonic()
        if kind == "stream.opened":
            if self.link is None:
                self.link = message.get("link")
        elif kind == "stream.data":
            if message.get("data"):
                self._data.append(message["data"])
        elif kind == "stream.ack":
            try:
                n = max(int(message.get("n") or 1), 1)
            except (TypeError, ValueError):
                n = 1
            self._unacked = max(0, self._unacked - n)
        elif kind == "stream.closed":
            self.ended = True
            self.exit_code = message.get("exit_code")
            self.reason = message.get("reason")
        elif kind == "stream.error":
            self._error = KernelIOError(str(message.get("message") or "the stream failed"),
                                        lost=bool(message.get("lost")))
