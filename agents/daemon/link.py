"""The websocket link to the manager: ``{"type": "poke"}`` means "sync now".

The link also carries the multiplexed byte streams (terminals, TCP relays):
``stream.*`` text frames and binary data frames go to a :class:`~.streams.StreamMux`.

The link only makes convergence faster.  If it is missing (404 and friends),
refused, or drops, the daemon keeps polling and tries again later (streams
end with it).
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from agents.protocol import LinkMessage

from .backoff import Backoff

if TYPE_CHECKING:
    from .streams import StreamMux

__all__ = ["ManagerLink"]

log = logging.getLogger(__name__)

_MISSING = (404, 405, 426, 501)


class ManagerLink:
    """Keeps the link open in a daemon thread until ``stop`` is set."""

    def __init__(self, url: str, authorization: str, on_poke: Callable[[], None], stop: threading.Event, *,
                 backoff: Backoff | None = None, missing_retry: float = 60.0, open_timeout: float = 5.0,
                 streams: StreamMux | None = None):
        self.url = url
        self._authorization = authorization
        self._on_poke = on_poke
        self._stop = stop
        self._backoff = backoff or Backoff(base=1.0, cap=30.0)
        self._missing_retry = missing_retry
        self._open_timeout = open_timeout
        self._streams = streams
        self._thread: threading.Thread | None = None
        self._reported_missing = False
        self.connected = threading.Event()
        self.pokes = 0
        self.attempts = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="manager-link", daemon=True)
            self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _handle(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            if self._streams is not None:
                self._streams.handle_binary(message)
            return
        try:
            data = json.loads(message)
        except ValueError:
            log.debug("link: ignoring a non-JSON frame")
            return
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == LinkMessage.POKE:
            self.pokes += 1
            log.debug("link: poked")
            self._on_poke()
        elif isinstance(kind, str) and kind.startswith("stream.") and self._streams is not None:
            self._streams.handle_text(data)
        else:
            log.debug("link: ignoring a %r frame", kind)

    def _session(self) -> None:
        with connect(self.url, additional_headers={"Authorization": self._authorization}, proxy=None,
                     open_timeout=self._open_timeout, close_timeout=1, ping_interval=20, ping_timeout=20) as ws:
            log.info("link to the manager is open")
            self._backoff.reset()
            self._reported_missing = False
            self.connected.set()
            if self._streams is not None:
                self._streams.attach(ws.send)
            try:
                self._on_poke()  # pokes may have been missed while disconnected
                while not self._stop.is_set():
                    try:
                        message = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    self._handle(message)
            finally:
                if self._streams is not None:
                    self._streams.detach()

    def run(self) -> None:
        while not self._stop.is_set():
            self.attempts += 1
            try:
                self._session()
                delay = 0.0
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in _MISSING:
                    if not self._reported_missing:
                        log.info("the manager has no link endpoint (HTTP %d): polling only, retrying in %.0fs",
                                 status, self._missing_retry)
                        self._reported_missing = True
                    delay = self._missing_retry
                else:
                    delay = self._backoff.next()
                    level = logging.WARNING if status in (401, 403) and self._backoff.failures > 3 else logging.INFO
                    log.log(level, "link refused (HTTP %d); retrying in %.1fs", status, delay)
            except ConnectionClosed as exc:
                delay = self._backoff.next()
                log.info("link closed (%s); reconnecting in %.1fs", exc, delay)
            except (OSError, InvalidHandshake, TimeoutError, EOFError) as exc:
                delay = self._backoff.next()
                log.debug("link unavailable (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
            except Exception:  # noqa: BLE001 - the link must never die for good
                delay = self._backoff.next()
                log.exception("link failed unexpectedly; retrying in %.1fs", delay)
            finally:
                self.connected.clear()
            if delay:
                self._stop.wait(delay)
