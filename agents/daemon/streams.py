"""Byte streams multiplexed over the manager link: terminals (PTYs) and TCP relays.

Frames (``docs/agent-protocol.md``, "Streams over the link"):

* text frames are JSON control messages: ``stream.open``, ``stream.opened``,
  ``stream.resize``, ``stream.ack``, ``stream.eof``, ``stream.close``, ``stream.error``;
* binary frames carry data: one byte ``n``, the stream id (``n`` ASCII
  bytes), then the payload.

Flow control is a window of data frames: a side sends at most ``window``
data frames of a stream that the other side has not acknowledged yet
(``stream.ack`` with ``n`` frames consumed), so every buffer on the way (the
link, the manager's channel layer, the writer queues here) stays bounded.

The frame format and the window constants are part of the protocol
(``agents.protocol``), shared with the manager.

Kinds: ``pty`` and ``tcp`` are built in; the kinds of work inside a session
(execute, files, download, upload, commit) register an opener with
:func:`register_kind`: a function of ``(backend, kernel_id, open frame)``
returning a :class:`StreamEndpoint` (raising :class:`KernelError` to refuse,
which the manager sees as ``stream.error``).  ``stream.eof`` from the manager
reaches the endpoint as :meth:`StreamEndpoint.write_eof` after every data
frame before it, so request/response kinds read their request, then answer on
the same stream and end it (``stream.close`` with the endpoint's exit code).
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from agents.protocol import (
    CHUNK,
    DEFAULT_WINDOW,
    MAX_STREAMS,
    STREAM_KINDS,
    ack_threshold,
    decode_data,
    LinkMessage,
    encode_data,
    valid_stream_id,
)

from .backends.base import Backend, KernelError, StreamEndpoint

__all__ = ["Opener", "StreamMux", "register_kind"]

log = logging.getLogger(__name__)

#: Opens a stream of a registered kind: ``(backend, kernel_id, the stream.open frame) -> endpoint``.
Opener = Callable[[Backend, str, dict[str, Any]], StreamEndpoint]
_OPENERS: dict[str, Opener] = {}
#: Put in a stream's inbox for ``stream.eof``: the writer calls ``write_eof`` in order with the data.
_EOF = object()


def register_kind(kind: str, opener: Opener) -> None:
    """Serve ``stream.open`` frames of ``kind`` with ``opener`` (one of ``agents.protocol.STREAM_KINDS``)."""
    if kind not in STREAM_KINDS or kind in ("pty", "tcp"):
        raise ValueError(f"{kind!r} is not a registrable stream kind")
    _OPENERS[kind] = opener


def _int(value: Any, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(value), low), high)
    except (TypeError, ValueError):
        return default


class _Stream:
    def __init__(self, stream_id: str, kind: str, window: int):
        self.id = stream_id
        self.kind = kind
        self.window = window
        self.endpoint: StreamEndpoint | None = None
        self.cond = threading.Condition()
        self.in_flight = 0  # data frames sent and not acknowledged yet
        self.closed = False  # no more frames go out (closed by the manager, or the link is gone)
        self.inbox: queue.Queue[Any] = queue.Queue()  # bytes, _EOF, or None (the end)
        self.size: tuple[int, int] | None = None
        self.opened_size: tuple[int, int] | None = None


class StreamMux:
    """The agent's side of the streams: opens endpoints in the backend and pumps bytes both ways.

    Per stream, one thread opens the endpoint and then reads from it, another
    writes what the manager sends.  The link calls :meth:`attach` with a send
    function when it connects and :meth:`detach` when it drops (every stream
    ends then: the manager has told their clients already).
    """

    def __init__(self, backend: Backend, *, max_streams: int = MAX_STREAMS, open_timeout: float = 5.0):
        self.backend = backend
        self.max_streams = max_streams
        self.open_timeout = open_timeout
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._send: Callable[[str | bytes], None] | None = None
        self.opened = 0  # streams ever opened (for tests and logs)

    # -- the link's side ------------------------------------------------------------------------
    def attach(self, send: Callable[[str | bytes], None]) -> None:
        with self._lock:
            self._send = send

    def detach(self) -> None:
        """The link dropped: end every stream without sending anything."""
        with self._lock:
            self._send = None
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            self._end(stream)
        if streams:
            log.info("link closed: ended %d stream(s)", len(streams))

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._streams)

    def handle_text(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        stream_id = message.get("stream")
        if not valid_stream_id(stream_id):
            log.debug("link: a %s frame without a valid stream id", kind)
            return
        if kind == LinkMessage.STREAM_OPEN:
            self._open(stream_id, message)
            return
        with self._lock:
            stream = self._streams.get(stream_id)
        if stream is None:
            return  # already ended: late frames are harmless
        if kind == LinkMessage.STREAM_ACK:
            with stream.cond:
                stream.in_flight = max(0, stream.in_flight - _int(message.get("n"), 1, 1, 1 << 20))
                stream.cond.notify_all()
        elif kind == LinkMessage.STREAM_RESIZE:
            size = (_int(message.get("rows"), 24, 1, 1000), _int(message.get("cols"), 80, 1, 1000))
            stream.size = size
            endpoint = stream.endpoint
            if endpoint is not None:
                try:
                    endpoint.resize(*size)
                except Exception as exc:  # noqa: BLE001 - a failed resize never ends a terminal
                    log.debug("stream %s: resize failed: %s", stream_id, exc)
        elif kind == LinkMessage.STREAM_EOF:
            if not stream.closed:
                stream.inbox.put(_EOF)
        elif kind == LinkMessage.STREAM_CLOSE:
            self._forget(stream)
            self._end(stream)
        else:
            log.debug("link: ignoring a %r frame", kind)

    def handle_binary(self, frame: bytes) -> None:
        try:
            stream_id, payload = decode_data(frame)
        except ValueError as exc:
            log.debug("link: bad data frame: %s", exc)
            return
        with self._lock:
            stream = self._streams.get(stream_id)
        if stream is not None and not stream.closed and payload:
            stream.inbox.put(payload)

    # -- internals ------------------------------------------------------------------------------
    def _emit(self, message: dict[str, Any] | bytes) -> bool:
        send = self._send
        if send is None:
            return False
        try:
            send(message if isinstance(message, bytes) else json.dumps(message))
            return True
        except Exception as exc:  # noqa: BLE001 - the link dropped; detach() follows
            log.debug("link: send failed: %s", exc)
            return False

    def _forget(self, stream: _Stream) -> None:
        with self._lock:
            if self._streams.get(stream.id) is stream:
                del self._streams[stream.id]

    def _end(self, stream: _Stream) -> None:
        with stream.cond:
            stream.closed = True
            stream.cond.notify_all()
        stream.inbox.put(None)
        endpoint = stream.endpoint
        if endpoint is not None:
            threading.Thread(target=self._close_endpoint, args=(stream.id, endpoint), daemon=True,
                             name=f"stream-close-{stream.id[:8]}").start()

    @staticmethod
    def _close_endpoint(stream_id: str, endpoint: StreamEndpoint) -> None:
        try:
            endpoint.close()
        except Exception:  # noqa: BLE001 - best effort
            log.debug("stream %s: close failed", stream_id, exc_info=True)

    def _open(self, stream_id: str, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        kernel_id = message.get("kernel_id")
        error = None
        if kind not in ("pty", "tcp") and kind not in _OPENERS:
            error = f"unknown stream kind {kind!r}"
        elif not isinstance(kernel_id, str) or not kernel_id:
            error = "no kernel_id"
        elif kind == "tcp" and _int(message.get("port"), 0, 0, 65535) <= 0:
            error = "no port"
        if error:
            self._emit({"type": LinkMessage.STREAM_ERROR, "stream": stream_id, "message": error})
            return
        stream = _Stream(stream_id, kind, _int(message.get("window"), DEFAULT_WINDOW, 1, 1024))
        with self._lock:
            if stream_id in self._streams:
                return  # a repeated open: the first one wins
            if len(self._streams) >= self.max_streams:
                error = f"this agent already serves {self.max_streams} streams"
            else:
                self._streams[stream_id] = stream
        if error:
            self._emit({"type": LinkMessage.STREAM_ERROR, "stream": stream_id, "message": error})
            return
        stream.size = (_int(message.get("rows"), 24, 1, 1000), _int(message.get("cols"), 80, 1, 1000))
        threading.Thread(target=self._run, args=(stream, kernel_id, message), daemon=True,
                         name=f"stream-{stream_id[:8]}").start()

    def _connect(self, stream: _Stream, kernel_id: str, message: dict[str, Any]) -> StreamEndpoint:
        if stream.kind == "pty":
            stream.opened_size = rows, cols = stream.size or (24, 80)
            return self.backend.open_pty(kernel_id, rows, cols, stream.id)
        if stream.kind != "tcp":
            return _OPENERS[stream.kind](self.backend, kernel_id, message)
        return self.backend.open_tcp(kernel_id, _int(message.get("port"), 0, 0, 65535), timeout=self.open_timeout)

    def _run(self, stream: _Stream, kernel_id: str, message: dict[str, Any]) -> None:
        try:
            endpoint = self._connect(stream, kernel_id, message)
        except Exception as exc:  # noqa: BLE001 - every failure is reported on the stream
            text = str(exc) if isinstance(exc, (KernelError, OSError)) else f"{type(exc).__name__}: {exc}"
            log.info("stream %s (%s, kernel %s) failed to open: %s", stream.id, stream.kind, kernel_id, text)
            self._forget(stream)
            if not stream.closed:
                self._emit({"type": LinkMessage.STREAM_ERROR, "stream": stream.id, "message": text})
            return
        with stream.cond:
            stream.endpoint = endpoint
            closed = stream.closed
        if closed:  # closed by the manager while opening
            self._close_endpoint(stream.id, endpoint)
            return
        self.opened += 1
        if stream.kind == "pty" and stream.size and stream.size != stream.opened_size:
            try:
                endpoint.resize(*stream.size)  # a resize arrived while opening
            except Exception:  # noqa: BLE001
                pass
        if not self._emit({"type": LinkMessage.STREAM_OPENED, "stream": stream.id}):
            self._forget(stream)
            self._end(stream)
            return
        log.debug("stream %s (%s) open on kernel %s", stream.id, stream.kind, kernel_id)
        threading.Thread(target=self._write_loop, args=(stream, endpoint), daemon=True,
                         name=f"stream-w-{stream.id[:8]}").start()
        self._read_loop(stream, endpoint)

    def _read_loop(self, stream: _Stream, endpoint: StreamEndpoint) -> None:
        while True:
            try:
                data = endpoint.read(CHUNK)
            except Exception:  # noqa: BLE001 - treated as the end
                log.debug("stream %s: read failed", stream.id, exc_info=True)
                data = b""
            if not data:
                break
            with stream.cond:
                while stream.in_flight >= stream.window and not stream.closed:
                    stream.cond.wait(1.0)
                if stream.closed:
                    return
                stream.in_flight += 1
            if not self._emit(encode_data(stream.id, data)):
                break
        with stream.cond:
            if stream.closed:
                return  # the manager closed it (or the link is gone): nothing to report
            stream.closed = True
        code = endpoint.exit_code()
        self._forget(stream)
        stream.inbox.put(None)
        reason = {"pty": "exited", "tcp": "connection closed by the kernel"}.get(stream.kind, "done")
        self._emit({"type": LinkMessage.STREAM_CLOSE, "stream": stream.id, "exit_code": code, "reason": reason})
        self._close_endpoint(stream.id, endpoint)

    def _write_loop(self, stream: _Stream, endpoint: StreamEndpoint) -> None:
        threshold = ack_threshold(stream.window)
        consumed = 0
        while True:
            data = stream.inbox.get()
            if data is None:
                return
            try:
                if data is _EOF:
                    endpoint.write_eof()
                    continue
                endpoint.write(data)
            except OSError as exc:
                log.debug("stream %s: write failed: %s", stream.id, exc)
                return  # the reader sees the end and reports it
            consumed += 1
            if consumed >= threshold:
                if not stream.closed:
                    self._emit({"type": LinkMessage.STREAM_ACK, "stream": stream.id, "n": consumed})
                consumed = 0
