"""Websockets into running sessions: terminals and the TCP proxy.

``/stream/session/{s}/pty`` speaks Backend.AI's terminal frames (client:
``{"type":"stdin","chars":<base64>}``, ``{"type":"resize","rows","cols"}``,
``{"type":"ping"}``, ``{"type":"restart"}``; server: ``{"type":"out","data":<base64>}``,
plus ``{"type":"pong"}``, ``{"type":"exit","exit_code"}`` and
``{"type":"error","message"}`` before a close).  ``/stream/session/{s}/tcpproxy?app=&port=``
relays raw TCP as binary frames, one websocket per TCP connection (the
official client's ``backend.ai app``).

Both open a stream on the kernel's agent through the channel layer (see
``agents.consumers``), so the websocket may land on any daphne process:
``link.open`` goes to the agent's group, the link answers ``stream.opened``
with its channel name, then data and control messages go straight to it.
Data is windowed (``agents.protocol``): at most ``WINDOW`` chunks are
unacknowledged per direction, so channel layers and links hold bounded
buffers.  Under daphne the websocket's Twisted transport is flow-controlled
too (:class:`TransportFlow`): output to a client that reads slowly is not
acknowledged to the agent until Twisted's send buffer drains, and reading
from a client that sends faster than the kernel takes pauses past
``HIGH_WATER`` queued bytes.  Under a server without that, what is queued
past ``MAX_PENDING`` bytes closes the websocket (1009).

Liveness: every ``HEARTBEAT_EVERY`` seconds an open stream asks the link that
carries it whether it still does (``link.ping``; answered ``stream.pong``).  A
link that drops tells its streams (``stream.error`` marked ``lost``); one that
died without a word (its process killed) stops answering: after
``HEARTBEAT_MISSES`` unanswered checks the stream ends too.  Either way the
client is told "connection to the node lost" (a terminal also prints it) and
the websocket closes with 1011, never left hanging.

Refusals: bad or missing credentials, another user's (or no such) session ->
closed before the handshake completes (HTTP 403).  A visible session that is
not running, an unknown app -> accepted, then closed with 4409 / 4404 / 4400;
an agent that does not answer or fails -> 1011.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from abc import abstractmethod
from collections import deque
from functools import partial

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from agents.protocol import CHUNK, ack_threshold
from agents.services import agent_group
from backendai import requestctx, telemetry
from sessions import streams
from sessions.streams import (
    CLOSE_AGENT,
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    NotAllowed,
    StreamRefused,
)

log = logging.getLogger(__name__)

#: Data chunks in flight per direction and stream.
WINDOW = 16
#: Queued bytes from the client at which reading from its socket pauses (daphne), and resumes.
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
#: Bytes a client may send ahead of the kernel before the websocket is closed.
MAX_PENDING = 16 * 1024 * 1024
#: Seconds to wait for the agent to open the stream.
OPEN_TIMEOUT = 15.0
#: Seconds between two ``last_access`` updates while data flows.
TOUCH_EVERY = 30.0
#: How long to retry a send into a full channel before giving up.
FULL_RETRY = 5.0
#: Seconds between two checks that the agent's link still carries an open stream.
HEARTBEAT_EVERY = 10.0
#: Checks in a row without any word from the link after which the stream is lost.
HEARTBEAT_MISSES = 3


class _Gate:
    """A Twisted push producer that opens and closes an asyncio event."""

    def __init__(self):
        self.open = asyncio.Event()
        self.open.set()

    def pauseProducing(self):  # noqa: N802 - Twisted's interface
        self.open.clear()

    def resumeProducing(self):  # noqa: N802
        self.open.set()

    def stopProducing(self):  # noqa: N802 - the connection is gone
        self.open.set()


class TransportFlow:
    """Back-pressure on daphne's Twisted transport; does nothing under other servers.

    Daphne's ``send`` is ``partial(server.handle_reply, protocol)`` and the
    websocket protocol has the TCP ``transport``: a registered push producer
    tells when its send buffer is full (Twisted's public producer API), and
    ``transport.pauseProducing()`` stops reading from the socket.
    """

    def __init__(self, send):
        protocol = send.args[0] if isinstance(send, partial) and send.args else None
        transport = getattr(protocol, "transport", None)
        self.transport = transport if hasattr(transport, "pauseProducing") else None
        self.gate: _Gate | None = None
        self.reading_paused = False
        if self.transport is not None and hasattr(self.transport, "registerProducer") \
                and getattr(self.transport, "producer", None) is None:
            self.gate = _Gate()
            try:
                self.transport.registerProducer(self.gate, True)
            except Exception:  # noqa: BLE001 - e.g. already registered: no write back-pressure then
                self.gate = None

    @property
    def writable(self) -> bool:
        return self.gate is None or self.gate.open.is_set()

    async def wait_writable(self) -> None:
        if self.gate is not None:
            await self.gate.open.wait()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resumeProducing()

    def release(self) -> None:
        self.resume_reading()
        if self.gate is not None and getattr(self.transport, "producer", None) is self.gate:
            try:
                self.transport.unregisterProducer()
            except Exception:  # noqa: BLE001 - the connection is gone
                pass
        self.gate = None


class KernelStreamConsumer(AsyncWebsocketConsumer):
    """One websocket relaying one stream (at a time) to a kernel through its agent's link."""

    kind = ""

    # -- handshake ----------------------------------------------------------------------------
    async def connect(self):
        self.stream_id: str | None = None
        self.link: str | None = None
        self.target = None
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._unacked = 0
        self._consumed = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._sender_task: asyncio.Task | None = None
        self._stopping = False  # the client left: the sender finishes the chunk it is sending, then stops
        self._closing = False
        self._touched = 0.0
        self._ack_pending = 0
        self._ack_task: asyncio.Task | None = None
        self._heartbeat_task: asyncio.Task | None = None
        self._heard = time.monotonic()  # the last word from the link (data, ack, pong)
        self.lost = False  # the stream ended because the connection to the node was lost
        self.flow = TransportFlow(self.base_send)
        params = streams.query_params(self.scope)
        principal = await database_sync_to_async(streams.authenticate_scope)(self.scope)
        if principal is None:
            await self.close()  # HTTP 403
            return
        user, keypair = principal
        name = self.scope["url_route"]["kwargs"]["name"]
        try:
            self.target = await database_sync_to_async(streams.resolve_target)(user, keypair, name, self.kind, params)
        except NotAllowed as exc:
            log.info("%s stream refused for %s: %s", self.kind, user.email, exc)
            await self.close()  # HTTP 403: nothing tells others whether the session exists
            return
        except StreamRefused as exc:
            await self.accept()
            await self._refuse(exc.code, exc.message)
            return
        self.params = params
        requestctx.bind(session_id=self.target.session_id, kernel_id=self.target.kernel_id,
                        agent_id=self.target.agent_id)
        await self.accept()
        log.info("%s stream into session %s (kernel %s on %s) for %s", self.kind, self.target.session_name,
                 self.target.kernel_id, self.target.agent_id, user.email)
        self._sender_task = telemetry.spawn(self._sender(), "kernel_stream_sender")
        await self._touch(force=True)
        await self.open_stream()

    async def _refuse(self, code: int, message: str) -> None:
        self._closing = True
        await self.close(code=code, reason=message[:120])

    # -- the stream -----------------------------------------------------------------------------
    def open_frame(self) -> dict:
        """Fields of ``stream.open`` beyond type, stream, kind, kernel_id and window."""
        return {}

    async def open_stream(self) -> None:
        self.stream_id = stream_id = uuid.uuid4().hex
        self.link = None
        self._unacked = 0
        self._consumed = 0
        self._ack_pending = 0
        frame = {"type": "stream.open", "stream": stream_id, "kind": self.kind, "kernel_id": self.target.kernel_id,
                 "window": WINDOW, **self.open_frame()}
        await self.channel_layer.group_send(agent_group(self.target.agent_id),
                                            {"type": "link.open", "reply_to": self.channel_name, "frame": frame})
        self._tasks.append(asyncio.create_task(self._expire_open(stream_id)))

    async def _expire_open(self, stream_id: str) -> None:
        timeout = getattr(settings, "STREAM_OPEN_TIMEOUT", OPEN_TIMEOUT)
        await asyncio.sleep(timeout)
        if self.stream_id == stream_id and self.link is None and not self._closing:
            await self.fail(f"agent {self.target.agent_id} did not open the stream in {timeout:.0f}s")

    async def end_stream(self, flush: bool = True) -> None:
        """Tell the agent the stream is over (after what is still queued for it)."""
        stream_id, link = self.stream_id, self.link
        if stream_id is None:
            return
        self.stream_id = None
        self.link = None
        out, self._out, self._out_bytes = self._out, deque(), 0
        self.flow.resume_reading()
        close = {"type": "stream.close", "stream": stream_id}
        if link is None:  # not open yet: the open went to the group, so does the close (ordered after it)
            await self.channel_layer.group_send(agent_group(self.target.agent_id),
                                                {"type": "link.control", "frame": close})
            return
        if flush:
            while out:
                if not await self._send_to(link, {"type": "link.data", "stream": stream_id,
                                                  "data": _take(out, CHUNK)}):
                    break
        await self._send_to(link, {"type": "link.control", "frame": close})

    async def _send_to(self, channel: str, message: dict) -> bool:
        deadline = time.monotonic() + FULL_RETRY
        while True:
            try:
                await self.channel_layer.send(channel, message)
                return True
            except ChannelFull:
                if time.monotonic() > deadline:
                    log.warning("the link channel of agent %s stays full", self.target.agent_id)
                    return False
                await asyncio.sleep(0.05)

    async def control(self, frame: dict) -> None:
        """Send resize/ack/close for the current stream (dropped before it is open)."""
        if self.link is not None and self.stream_id is not None:
            await self._send_to(self.link, {"type": "link.control", "frame": {**frame, "stream": self.stream_id}})

    def enqueue(self, data: bytes) -> bool:
        """Queue bytes for the kernel; False (and the websocket closes) past ``MAX_PENDING``."""
        if not data or self._closing:
            return True
        self._out.append(data)
        self._out_bytes += len(data)
        self._wake.set()
        if self._out_bytes > HIGH_WATER:
            self.flow.pause_reading()
        if self._out_bytes > MAX_PENDING:
            asyncio.ensure_future(self._overflow())
            return False
        return True

    async def _overflow(self) -> None:
        log.warning("%s stream into %s: the client sent %d bytes ahead of the kernel; closing", self.kind,
                    self.target.session_name, self._out_bytes)
        await self.fail("too much data ahead of the kernel", code=CLOSE_TOO_BIG, flush=False)

    async def _sender(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while (self._out and self.link is not None and self._unacked < WINDOW and not self._closing
                   and not self._stopping):
                stream_id, link = self.stream_id, self.link
                chunk = _take(self._out, CHUNK)
                self._out_bytes -= len(chunk)
                if self._out_bytes < LOW_WATER:
                    self.flow.resume_reading()
                self._unacked += 1
                if not await self._send_to(link, {"type": "link.data", "stream": stream_id, "data": chunk}):
                    await self.fail("the agent's link does not take data", flush=False)
                    return
                await self._touch()

    async def _touch(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._touched > TOUCH_EVERY:
            self._touched = now
            try:
                await database_sync_to_async(streams.touch_session)(self.target.session_id)
            except Exception:  # noqa: BLE001 - activity tracking never breaks a stream
                log.debug("could not record activity", exc_info=True)

    async def fail(self, message: str, code: int = CLOSE_AGENT, flush: bool = False) -> None:
        if self._closing:
            return
        log.info("%s stream into %s ends: %s", self.kind, self.target.session_name if self.target else "?", message)
        await self.end_stream(flush=flush)
        await self.before_close(error=message)
        self._closing = True
        await self.close(code=code, reason=message[:120])

    async def before_close(self, error: str | None = None, exit_code: int | None = None) -> None:
        """Last words to the client before the server closes (terminals send a frame)."""

    async def lose(self, message: str) -> None:
        """The connection to the node is gone: end the stream and tell the client so."""
        self.lost = True
        await self.fail(message)

    async def _heartbeat(self) -> None:
        every = getattr(settings, "STREAM_HEARTBEAT_EVERY", HEARTBEAT_EVERY)
        while not self._closing:
            await asyncio.sleep(every)
            link, stream_id = self.link, self.stream_id
            if self._closing or link is None or stream_id is None:
                continue  # opening (the open has its own timeout) or over
            if time.monotonic() - self._heard > every * HEARTBEAT_MISSES:
                log.info("%s stream into %s: the link of agent %s stopped answering", self.kind,
                         self.target.session_name, self.target.agent_id)
                await self.lose(f"connection to the node lost (agent {self.target.agent_id} does not answer)")
                return
            try:
                await self.channel_layer.send(link, {"type": "link.ping", "stream": stream_id,
                                                     "reply_to": self.channel_name})
            except ChannelFull:
                pass  # a busy link: it answers data and acks meanwhile

    async def stream_pong(self, event):
        if event.get("stream") == self.stream_id:
            self._heard = time.monotonic()

    async def disconnect(self, code):
        for task in [*getattr(self, "_tasks", []), getattr(self, "_ack_task", None)]:
            if task is not None:
                task.cancel()
        sender = getattr(self, "_sender_task", None)
        if sender is not None and not sender.done():
            self._stopping = True
            self._wake.set()
            _, pending = await asyncio.wait([sender], timeout=FULL_RETRY)  # never cut a chunk in half
            for task in pending:
                task.cancel()
        if getattr(self, "flow", None) is not None:
            self.flow.release()
        if getattr(self, "stream_id", None) is not None and self.target is not None:
            try:
                await self.end_stream(flush=True)
            except Exception:  # noqa: BLE001 - the agent ends it when its link drops anyway
                log.debug("could not close the stream", exc_info=True)
        self._closing = True

    # -- channel-layer messages from the agent's link -------------------------------------------
    async def stream_opened(self, event):
        if event.get("stream") != self.stream_id or self.link is not None:
            if event.get("link"):  # a late or duplicate open: close it there
                await self._send_to(event["link"], {"type": "link.control",
                                                    "frame": {"type": "stream.close", "stream": event["stream"]}})
            return
        self.link = event["link"]
        self._heard = time.monotonic()
        if self._heartbeat_task is None:
            self._heartbeat_task = telemetry.spawn(self._heartbeat(), "kernel_stream_heartbeat")
            self._tasks.append(self._heartbeat_task)
        await self.on_opened()
        self._wake.set()

    async def on_opened(self) -> None:
        pass

    async def stream_data(self, event):
        if event.get("stream") != self.stream_id or self._closing:
            return
        self._heard = time.monotonic()
        await self.deliver(event["data"])
        self._consumed += 1
        if self._consumed >= ack_threshold(WINDOW):
            n, self._consumed = self._consumed, 0
            self._ack_pending += n
            if self.flow.writable and self._ack_task is None:
                await self._send_ack()
            elif self._ack_task is None:  # the client reads slowly: acknowledge once Twisted's buffer drains
                self._ack_task = asyncio.create_task(self._ack_when_writable(self.stream_id))
        await self._touch()

    async def _send_ack(self) -> None:
        n, self._ack_pending = self._ack_pending, 0
        if n:
            await self.control({"type": "stream.ack", "n": n})

    async def _ack_when_writable(self, stream_id: str) -> None:
        try:
            await self.flow.wait_writable()
            if self.stream_id == stream_id:
                await self._send_ack()
        finally:
            self._ack_task = None

    @abstractmethod
    async def deliver(self, data: bytes) -> None:
        """Hand bytes from the kernel to the client in this consumer's framing."""

    async def stream_ack(self, event):
        if event.get("stream") == self.stream_id:
            self._heard = time.monotonic()
            try:
                n = max(int(event.get("n") or 1), 1)
            except (TypeError, ValueError):
                n = 1
            self._unacked = max(0, self._unacked - n)
            self._wake.set()

    async def stream_closed(self, event):
        if event.get("stream") != self.stream_id or self._closing:
            return
        self.stream_id = self.link = None
        self._closing = True
        await self.before_close(exit_code=event.get("exit_code"))
        reason = event.get("reason") or "closed"
        if event.get("exit_code") is not None:
            reason = f"{reason} (exit code {event['exit_code']})"
        await self.close(code=CLOSE_NORMAL, reason=reason[:120])

    async def stream_error(self, event):
        if event.get("stream") != self.stream_id or self._closing:
            return
        self.stream_id = self.link = None
        self.lost = self.lost or bool(event.get("lost"))
        await self.fail(str(event.get("message") or "the stream failed"))


def _take(out: deque[bytes], limit: int) -> bytes:
    """Pop up to ``limit`` bytes from the front of ``out``, coalescing small pieces."""
    parts, size = [], 0
    while out and size < limit:
        piece = out.popleft()
        room = limit - size
        if len(piece) > room:
            out.appendleft(piece[room:])
            piece = piece[:room]
        parts.append(piece)
        size += len(piece)
    return b"".join(parts)


class PtyConsumer(KernelStreamConsumer):
    """``/stream/session/{s}/pty``: a terminal in the session's main kernel."""

    kind = "pty"

    async def connect(self):
        self.rows, self.cols = 24, 80
        await super().connect()

    def open_frame(self) -> dict:
        params = getattr(self, "params", {})
        self.rows = _clamp(params.get("rows"), self.rows)
        self.cols = _clamp(params.get("cols"), self.cols)
        return {"rows": self.rows, "cols": self.cols}

    async def on_opened(self) -> None:
        if (self.rows, self.cols) != self._opened_size:
            await self.control({"type": "stream.resize", "rows": self.rows, "cols": self.cols})

    async def open_stream(self) -> None:
        await super().open_stream()
        self._opened_size = (self.rows, self.cols)

    async def receive(self, text_data=None, bytes_data=None):
        if self._closing or self.target is None:
            return
        if bytes_data is not None:
            self.enqueue(bytes_data)
            return
        try:
            message = json.loads(text_data or "")
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "stdin":
            try:
                data = base64.b64decode(message.get("chars") or "", validate=False)
            except (binascii.Error, ValueError, TypeError):
                return
            self.enqueue(data)
        elif kind == "resize":
            self.rows, self.cols = _clamp(message.get("rows"), self.rows), _clamp(message.get("cols"), self.cols)
            await self.control({"type": "stream.resize", "rows": self.rows, "cols": self.cols})
        elif kind == "ping":
            await self.send(text_data=json.dumps({"type": "pong"}))
        elif kind == "restart":
            await self.end_stream(flush=False)
            await self.deliver(b"\r\n[restarting the terminal]\r\n")
            await self.open_stream()

    async def deliver(self, data: bytes) -> None:
        await self.send(text_data=json.dumps({"type": "out", "data": base64.b64encode(data).decode("ascii")}))

    async def before_close(self, error: str | None = None, exit_code: int | None = None) -> None:
        frame = {"type": "error", "message": error} if error else {"type": "exit", "exit_code": exit_code}
        try:
            if error and self.lost:  # visible in any terminal, not only in clients that read the error frame
                await self.deliver(f"\r\n[{error}]\r\n".encode())
            await self.send(text_data=json.dumps(frame))
        except Exception:  # noqa: BLE001 - the client may be gone already
            pass

    async def _refuse(self, code: int, message: str) -> None:
        await self.before_close(error=message)
        await super()._refuse(code, message)


def _clamp(value, default: int) -> int:
    try:
        return min(max(int(value), 1), 1000)
    except (TypeError, ValueError):
        return default


class TcpProxyConsumer(KernelStreamConsumer):
    """``/stream/session/{s}/tcpproxy?app=<name>[&port=<container port>]``: raw TCP in binary frames."""

    kind = "tcp"

    def open_frame(self) -> dict:
        return {"port": self.target.port}

    async def receive(self, text_data=None, bytes_data=None):
        if self._closing or self.target is None:
            return
        self.enqueue(bytes_data if bytes_data is not None else (text_data or "").encode())

    async def deliver(self, data: bytes) -> None:
        await self.send(bytes_data=data)
