"""The data plane: an HTTP/1.1 reverse proxy (keep-alive, streaming bodies,
websocket and other upgrades) and a raw TCP relay, on asyncio streams.

Nothing here waits for the coordinator: circuits are looked up in the
in-memory table, permits are verified with the worker's secret (and cached
per circuit), upstream connections are pooled per target.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Callable

from appproxy import tokens
from backendai import forwarded

from .http1 import HOP_BY_HOP, MAX_HEAD, HTTPError, Request, error_page, parse_request, parse_response, problem_page
from .metrics import Metrics
from .table import Circuit

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
HIGH_WATER = 512 * 1024
POOL_PER_TARGET = 64
POOL_IDLE_SECONDS = 30.0
REAP_INTERVAL = 1.0
PERMIT_PREFIX = tokens.PERMIT_COOKIE_PREFIX.encode()
_STALE = (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)


class ClientGone(Exception):
    """The client went away mid-request: nothing more to answer."""


class ConnectFailed(HTTPError):
    """The app could not be reached at all: nothing of the request was sent (an inference
    circuit tries another route)."""


WWW_AUTHENTICATE = ((b"WWW-Authenticate", b'BackendAI realm="model-serving"'), (b"WWW-Authenticate", b"Bearer"))
NO_REPLICA = ("No healthy replica of this endpoint can take the request now; try again shortly.")


class UpstreamPool:
    """Idle keep-alive connections to the apps per (host, port): ``(UpstreamConn, transport, idle since)``.
    The callback path takes them as they are; the stream path (``take_streams``/``put_streams``)
    wraps one in a reader and writer for an exchange and unwraps it when it is returned."""

    def __init__(self):
        self.idle: dict[tuple[str, int], list] = defaultdict(list)

    def take(self, key) -> UpstreamConn | None:
        stack = self.idle.get(key)
        while stack:
            conn, transport, _ = stack.pop()
            if conn.closed or transport.is_closing():
                transport.close()
                continue
            return conn
        return None

    def put(self, key, conn: UpstreamConn) -> None:
        stack = self.idle[key]
        transport = conn.transport
        if len(stack) >= POOL_PER_TARGET or conn.closed or transport.is_closing():
            transport.close()
            return
        conn.client = None
        stack.append((conn, transport, time.monotonic()))

    def take_streams(self, key):
        """A pooled connection as ``(reader, writer)`` (or None) for the stream path."""
        conn = self.take(key)
        if conn is None:
            return None
        return _streams(conn.transport, b"", False, False, MAX_HEAD)

    def put_streams(self, key, reader, writer) -> None:
        transport = writer.transport
        if transport.is_closing() or reader.at_eof() or reader._buffer:  # noqa: SLF001 - unread bytes: unusable
            writer.close()
            return
        conn = UpstreamConn()
        transport.set_protocol(conn)
        conn.transport = transport
        if not transport.is_reading():
            transport.resume_reading()
        self.put(key, conn)

    def sweep(self, max_idle: float = POOL_IDLE_SECONDS) -> None:
        cutoff = time.monotonic() - max_idle
        for key in list(self.idle):
            keep = []
            for conn, transport, since in self.idle[key]:
                if since < cutoff or conn.closed or transport.is_closing():
                    transport.close()
                else:
                    keep.append((conn, transport, since))
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]

    def close_target(self, key) -> None:
        for _, transport, _ in self.idle.pop(key, []):
            transport.close()

    def close(self) -> None:
        for key in list(self.idle):
            self.close_target(key)


_in_networks = forwarded.in_networks


class _Splice(asyncio.Protocol):
    """One direction of a relay (a websocket after its 101, a raw TCP connection): what the
    ``source`` transport receives is written to ``sink`` from the callback itself, with no
    stream buffer, task or future in between.  Flow control: when ``source``'s own write buffer
    is full (it is the other direction's sink), the other direction stops reading."""

    __slots__ = ("relay", "source", "sink", "counter", "eof", "peer")

    def __init__(self, relay: _Relay, source, sink, counter):
        self.relay, self.source, self.sink, self.counter = relay, source, sink, counter
        self.eof = False
        self.peer: _Splice | None = None

    def data_received(self, data: bytes) -> None:
        self.sink.write(data)
        self.counter.inc(len(data))

    def eof_received(self) -> bool:
        """Half-close: pass the EOF on and keep the other direction going."""
        self.eof = True
        try:
            if self.sink.can_write_eof() and not self.sink.is_closing():
                self.sink.write_eof()
        except (OSError, RuntimeError):
            self.relay.finish()
        if self.peer.eof:
            self.relay.finish()
        return True

    def connection_lost(self, exc) -> None:
        self.relay.finish()

    def pause_writing(self) -> None:
        self.peer.source.pause_reading()

    def resume_writing(self) -> None:
        if not self.peer.source.is_closing():
            self.peer.source.resume_reading()


class _Relay:
    """Two spliced transports; ``done`` when both directions ended or either connection was lost."""

    def __init__(self, creader, cwriter, ureader, uwriter, counter):
        self.done = asyncio.get_running_loop().create_future()
        client, app = cwriter.transport, uwriter.transport
        self.transports = (client, app)
        up = _Splice(self, client, app, counter)
        down = _Splice(self, app, client, counter)
        up.peer, down.peer = down, up
        for splice, reader in ((up, creader), (down, ureader)):
            buffered = reader._buffer  # noqa: SLF001 - bytes the stream read ahead: they go first
            if buffered:
                splice.data_received(bytes(buffered))
                buffered.clear()
            splice.source.set_protocol(splice)
        for splice, reader in ((up, creader), (down, ureader)):
            sink = splice.sink
            if sink.get_write_buffer_size() >= sink.get_write_buffer_limits()[1]:
                splice.source.pause_reading()
            elif not splice.source.is_closing() and not splice.source.is_reading():
                splice.source.resume_reading()  # the stream may have paused it (buffer over its limit)
            if reader._eof:  # noqa: SLF001 - the stream saw the EOF already
                splice.eof_received()
        if client.is_closing() or app.is_closing():
            self.finish()

    def finish(self) -> None:
        for transport in self.transports:
            transport.close()  # writes what is buffered first
        if not self.done.done():
            self.done.set_result(None)


class Proxy:
    """Serves client connections for the worker; ``secret()`` returns the current permit secret."""

    def __init__(self, *, metrics: Metrics, secret: Callable[[], str | None], scheme: str, trusted_proxies=(),
                 connect_timeout: float = 10.0, upstream_timeout: float = 300.0, keepalive_timeout: float = 75.0,
                 webui_url: str = ""):
        self.metrics = metrics
        self.webui_url = webui_url  # the error pages' way back (the manager's web UI)
        self.secret = secret
        self.scheme = scheme.encode()
        self.trusted = tuple(trusted_proxies)
        self.connect_timeout = connect_timeout
        self.upstream_timeout = upstream_timeout
        self.keepalive_timeout = keepalive_timeout
        self.pool = UpstreamPool()
        # writer -> [busy, idle since]: the reaper closes connections idle past keepalive_timeout
        self.connections: dict[asyncio.StreamWriter, list] = {}
        # app-side writer -> deadline for its response head; the reaper closes late ones (504)
        self.waiting: dict[asyncio.StreamWriter, float] = {}
        self.timed_out: set[asyncio.StreamWriter] = set()
        self.stopping = False
        self.tasks: set[asyncio.Task] = set()
        self._reaper: asyncio.Task | None = None

    # --- connections -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the reaper (timeouts are checked once a second instead of timers per request)."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            self.reap()

    def reap(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        idle_cutoff = now - self.keepalive_timeout
        for writer, (busy, since) in list(self.connections.items()):
            if not busy and since < idle_cutoff:
                writer.close()
        for uwriter, deadline in list(self.waiting.items()):
            if deadline < now:
                self.timed_out.add(uwriter)
                del self.waiting[uwriter]
                uwriter.close()

    def close_idle(self) -> None:
        """Shutdown: idle keep-alive connections close now; busy ones after their response."""
        self.stopping = True
        for writer, (busy, _) in list(self.connections.items()):
            if not busy:
                writer.close()

    def close_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for writer in list(self.connections):
            writer.close()
        self.pool.close()

    @staticmethod
    def close_relays(circuit: Circuit) -> None:
        for writers in list(circuit.relays):
            for writer in writers:
                writer.close()
        circuit.relays.clear()

    def is_trusted(self, peer: str) -> bool:
        """Whether ``peer`` is a proxy whose forwarding headers we believe (``--trusted-proxies``)."""
        return bool(self.trusted) and _in_networks(peer, self.trusted)

    def client_address(self, peer: str, request: Request | None) -> str:
        """The client's address: the peer, unless the peer is a trusted proxy; then the
        right-most ``X-Forwarded-For`` hop that is not a trusted proxy (or ``X-Real-IP``
        when there is no ``X-Forwarded-For``).  Headers from anyone else are ignored."""
        if request is None or not self.trusted:
            return peer  # (what resolve_client answers for an untrusted peer, without parsing it)
        chain = ", ".join(value.decode("latin-1") for value in request.forwarded_for)
        real = next((v for _, n, v in reversed(request.headers) if n == b"x-real-ip"), b"").decode("latin-1")
        return forwarded.resolve_client(peer, chain, real, self.trusted)

    async def serve_tcp(self, reader, writer, circuit: Circuit) -> None:
        """A raw TCP connection to a tcp circuit (port mode)."""
        peer = (writer.get_extra_info("peername") or ("?", 0))[0]
        m = self.metrics.for_circuit(circuit)
        if not circuit.admits_address(peer):
            self.metrics.refused.labels("client-ip").inc()
            log.info("circuit %s (session %s): refused TCP client %s (not in allowed_client_ips)", circuit.id,
                     circuit.session_id, peer)
            writer.close()
            return
        try:
            async with asyncio.timeout(self.connect_timeout):
                ureader, uwriter = await asyncio.open_connection(circuit.target_host, circuit.target_port,
                                                                 limit=CHUNK)
        except (OSError, TimeoutError) as exc:
            log.warning("circuit %s (session %s): cannot reach %s:%s for a TCP client: %s", circuit.id,
                        circuit.session_id, circuit.target_host, circuit.target_port, exc)
            writer.close()
            return
        await self._relay(reader, writer, ureader, uwriter, circuit, m.tcp_established, m.tcp_closed,
                          m.tcp_pending, m.tcp_duration, m.tcp_traffic)

    async def _relay(self, creader, cwriter, ureader, uwriter, circuit, established, closed, pending, duration,
                     traffic) -> None:
        started = time.monotonic()
        established.inc()
        pending.inc()
        pair = (cwriter, uwriter)
        circuit.relays.add(pair)
        circuit.last_access = time.time()
        try:
            await _Relay(creader, cwriter, ureader, uwriter, traffic).done
        finally:
            circuit.relays.discard(pair)
            circuit.last_access = time.time()
            uwriter.close()
            cwriter.close()
            pending.dec()
            closed.inc()
            duration.observe(time.monotonic() - started)

    def http_protocol(self, resolve: Callable[[Request], Circuit | None], where: str) -> ClientConn:
        """A protocol for a new client connection (``loop.create_server``'s factory): the callback path."""
        return ClientConn(self, resolve, where)

    def spawn(self, coro) -> None:
        """Run ``coro`` as a task held until it ends (the stream path of a handed-over connection)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def serve_http(self, reader, writer, resolve: Callable[[Request], Circuit | None], where: str,
                         first: bytes | None = None, keep: bool = True) -> None:
        """A client connection on the stream path: requests one after another (keep-alive) until
        either side closes; ``first``: a head the callback path read already (``keep=False``:
        only close)."""
        peer = (writer.get_extra_info("peername") or ("?", 0))[0]
        state = self.connections[writer] = [first is not None, time.monotonic()]
        try:
            if first is not None:
                try:
                    keep = await self.handle(first, reader, writer, resolve, peer, where)
                except ClientGone:
                    return
                state[0] = False
                state[1] = time.monotonic()
            while keep and not self.stopping:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        writer.write(error_page(400, "incomplete request"))
                    break
                except asyncio.LimitOverrunError:
                    writer.write(error_page(431, "request head too large"))
                    break
                except ConnectionError:
                    break
                state[0] = True
                try:
                    keep = await self.handle(head, reader, writer, resolve, peer, where)
                except ClientGone:
                    break
                state[0] = False
                state[1] = time.monotonic()
        finally:
            self.connections.pop(writer, None)
            writer.close()

    async def finish_on_streams(self, request, response, circuit, creader, cwriter, ureader, uwriter, key, m,
                                started: float, resolve, where: str) -> None:
        """The callback path handed over an exchange whose answer is chunked or close-delimited:
        relay it on streams, then serve the connection's next requests on the stream path."""
        self.connections[cwriter] = [True, started]
        keep = False
        try:
            keep = await self._respond(request, response, circuit, cwriter, ureader, uwriter, None, key, m)
        except ClientGone:
            pass
        finally:
            m.pending.dec()
            m.duration.observe(time.monotonic() - started)
            if not keep:
                self.connections.pop(cwriter, None)
                cwriter.close()
        if keep:
            await self.serve_http(creader, cwriter, resolve, where)

    async def handle(self, head: bytes, reader, writer, resolve, peer: str, where: str) -> bool:
        request = None
        try:
            request = parse_request(head)
            circuit = resolve(request)
            if circuit is None or circuit.protocol != "http":
                raise HTTPError(404, f"No app is served at {where} (its session may have ended, or the link "
                                     "expired): open the app again from the session page.", "no-circuit")
            if circuit.inference is not None:
                self.check_token(request, circuit, self.client_address(peer, request))
                return await self.exchange_inference(request, circuit, reader, writer, peer)
            self.check_access(request, circuit, self.client_address(peer, request))
            return await self.exchange(request, circuit, reader, writer, peer)
        except HTTPError as exc:
            return self.refuse(exc, request, writer, peer, where)

    def refuse(self, exc: HTTPError, request: Request | None, writer, peer: str, where: str) -> bool:
        """Answer ``exc`` as an error page (``writer``: a stream writer or a transport); True when
        the client connection may carry another request."""
        self.metrics.refused.labels(exc.reason).inc()
        close = request is None or request.has_body or not request.keep_alive or exc.status >= 500
        if exc.status in (401, 403):
            client = self.client_address(peer, request)
            via = f" (via {peer})" if client != peer else ""
            log.info("refused a request from %s%s at %s: %s", client, via, where, exc.message)
        if exc.problem:
            writer.write(problem_page(exc.status, exc.reason, exc.message, exc.headers, close=close))
        else:
            writer.write(error_page(exc.status, exc.message, bool(request and request.wants_json), exc.reason,
                                    close=close, back=self.webui_url))
        return not close

    def check_token(self, request: Request, circuit: Circuit, client: str) -> None:
        """An inference circuit admits ``Authorization: BackendAI|Bearer <endpoint token>`` (or anyone when public)."""
        if not circuit.admits_address(client):
            raise HTTPError(403, f"Your address {client} may not use this endpoint.", "client-ip-not-allowed",
                            problem=True)
        refused = circuit.inference.admits(request.authorization, time.time())
        if refused is not None:
            raise HTTPError(401, refused, "invalid-api-token", problem=True, headers=WWW_AUTHENTICATE)

    def check_access(self, request: Request, circuit: Circuit, client: str) -> None:
        if not circuit.admits_address(client):
            raise HTTPError(403, f"Your address {client} may not use this app.", "client-ip-not-allowed")
        if circuit.open_to_public:
            return
        permit = None
        name = circuit.cookie_name
        for header in request.cookies:
            start = header.find(name + b"=")
            if start >= 0:
                value = header[start + len(name) + 1:]
                end = value.find(b";")
                permit = (value[:end] if end >= 0 else value).strip()
                break
        if not permit:
            raise HTTPError(403, "This app needs a permit: open it from the session page (the link sets it).",
                            "permit-missing")
        cached = circuit.permits.get(permit)
        now = time.time()
        if cached is None:
            secret = self.secret()
            try:
                claims = tokens.verify(secret or "", "permit", permit.decode("ascii", "replace"), now)
            except tokens.TokenError as exc:
                raise HTTPError(403, f"The permit for this app is not valid ({exc}): open the app again from the "
                                     "session page.", "permit-invalid") from None
            if claims.circuit != circuit.id:
                raise HTTPError(403, "The permit is for another app.", "permit-invalid")
            cached = (claims.user, claims.expires)
            circuit.remember_permit(permit, *cached)
        user, expires = cached
        if expires < now:
            circuit.permits.pop(permit, None)
            raise HTTPError(403, "The permit for this app expired: open the app again from the session page.",
                            "permit-expired")
        if not circuit.admits_user(user):
            raise HTTPError(403, "Your permit does not admit you to this app.", "permit-wrong-user")

    # --- one exchange -------------------------------------------------------------------------

    def upstream_head(self, request: Request, peer: str, strip_auth: bool = False, client: str | None = None) -> bytes:
        """The request head the app gets (``client``: ``client_address(peer, request)`` if the caller has it)."""
        drop = request.connection_tokens
        out = [request.method, b" ", request.target, b" HTTP/1.1\r\n"]
        for name, lname, value in request.headers:
            if lname in HOP_BY_HOP or lname in drop or lname.startswith(b"proxy-"):
                continue
            if strip_auth and lname == b"authorization":
                continue  # an endpoint's API token is the proxy's business, not the model server's
            if lname == b"cookie":
                if PERMIT_PREFIX in value:  # the proxy's own credentials never reach the app
                    value = b"; ".join(p.strip() for p in value.split(b";")
                                       if p.strip() and not p.strip().startswith(PERMIT_PREFIX))
                    if not value:
                        continue
            elif lname in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip"):
                continue
            out += (name, b": ", value, b"\r\n")
        # a chain the client wrote itself is not passed on: only a trusted proxy's hops are
        trusted = self.is_trusted(peer)
        forwarded = b", ".join([*(request.forwarded_for if trusted else ()), peer.encode()])
        client = (self.client_address(peer, request) if client is None else client).encode("latin-1", "replace")
        out += (b"X-Forwarded-For: ", forwarded, b"\r\nX-Real-IP: ", client, b"\r\nX-Forwarded-Proto: ",
                self.scheme, b"\r\n")
        if request.host:
            out += (b"X-Forwarded-Host: ", request.host, b"\r\n")
        if request.chunked:
            out.append(b"Transfer-Encoding: chunked\r\n")
        if request.upgrade is not None:
            out += (b"Connection: Upgrade\r\nUpgrade: ", request.upgrade, b"\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    async def _connect(self, circuit: Circuit, key):
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await _open_streams(*key, limit=MAX_HEAD)
        except (OSError, TimeoutError) as exc:
            log.warning("circuit %s (session %s, app %s): cannot reach %s:%s: %s", circuit.id, circuit.session_id,
                        circuit.app, key[0], key[1], exc)
            raise ConnectFailed(502, f"The app {circuit.app} does not answer (it may be starting or stopped).",
                                "upstream-unreachable", problem=circuit.inference is not None) from None

    async def _send_body(self, request: Request, reader, uwriter, counter) -> None:
        """Stream the request body to the app; on a client failure close the app side too."""
        try:
            if request.chunked:
                await _copy_chunked(reader, uwriter, counter, ClientGone)
            else:
                await _copy_length(reader, uwriter, request.content_length, counter, ClientGone)
        except BaseException:
            uwriter.close()
            raise

    @staticmethod
    async def _final_head(ureader, cwriter, request: Request, head: bytes) -> bytes:
        """The app's final response head; interim 1xx answers (100 Continue) are passed on."""
        while True:
            code = head[9:12]
            if code[:1] != b"1" or code == b"101":
                return head
            if request.version == b"HTTP/1.1":
                cwriter.write(head)
            head = await ureader.readuntil(b"\r\n\r\n")

    async def exchange(self, request: Request, circuit: Circuit, creader, cwriter, peer: str) -> bool:
        m = circuit.metrics or self.metrics.for_circuit(circuit)
        m.requests.inc()
        m.pending.inc()
        started = time.monotonic()
        circuit.last_access = time.time()
        try:
            return await self._exchange(request, circuit, creader, cwriter, peer, m)
        finally:
            m.pending.dec()
            m.duration.observe(time.monotonic() - started)

    async def exchange_inference(self, request: Request, circuit: Circuit, creader, cwriter, peer: str) -> bool:
        """A request to an endpoint: a route by weighted choice among the healthy ones; a route that
        cannot be connected to is marked unhealthy at once and another one takes the request."""
        endpoint = circuit.inference
        m = circuit.metrics or self.metrics.for_circuit(circuit)
        m.requests.inc()
        m.pending.inc()
        endpoint.inflight += 1
        started = time.monotonic()
        circuit.last_access = time.time()
        route = endpoint.pick()
        try:
            while route is not None:
                route.inflight += 1
                try:
                    return await self._exchange(request, circuit, creader, cwriter, peer, m, route.key, route)
                except ConnectFailed as exc:
                    log.warning("endpoint %s: route %s (%s:%s) cannot be reached: trying another one",
                                endpoint.endpoint_id, route.id, route.host, route.port)
                    endpoint.failed(route, f"connect failed: {exc.message}", time.time(), at_once=True)
                except HTTPError as exc:  # no answer from the replica (closed, timed out, garbled)
                    endpoint.count(route, exc.status)
                    exc.problem = True
                    raise
                finally:
                    route.inflight -= 1
                route = endpoint.pick()
            endpoint.count(None, 503)
            raise HTTPError(503, NO_REPLICA, "no-healthy-replica", problem=True)
        finally:
            endpoint.inflight -= 1
            elapsed = time.monotonic() - started
            endpoint.latency.observe(elapsed)
            m.pending.dec()
            m.duration.observe(elapsed)

    async def _exchange(self, request, circuit, creader, cwriter, peer, m, key=None, route=None) -> bool:
        """One request: send it to the app, then relay the answer (or the upgraded stream).
        True when the client connection may carry another request."""
        key = key or (circuit.target_host, circuit.target_port)
        ureader, uwriter, pump, rhead = await self._ask_upstream(request, circuit, creader, cwriter, peer, key, m)
        m.upstream_requests.inc()
        m.upstream_responses.inc()
        try:
            response = parse_response(rhead)
        except HTTPError:
            uwriter.close()
            await _cancel(pump)
            raise
        if route is not None:
            circuit.inference.count(route, response.status)
        if response.status == 101 and request.upgrade is not None:
            await self._upgrade(circuit, creader, cwriter, ureader, uwriter, pump, rhead, m)
            return False
        return await self._respond(request, response, circuit, cwriter, ureader, uwriter, pump, key, m)

    async def _ask_upstream(self, request, circuit, creader, cwriter, peer, key, m):
        """Send the request head to the app (streaming its body alongside) and read the
        final response head: ``(ureader, uwriter, body pump or None, head)``.  A pooled
        connection that turns out stale is retried once on a fresh one."""
        head = self.upstream_head(request, peer, strip_auth=circuit.inference is not None)
        body = request.has_body
        for attempt in (0, 1):
            pooled = self.pool.take_streams(key)
            if pooled is not None:
                ureader, uwriter = pooled
                reused = True
            else:
                ureader, uwriter = await self._connect(circuit, key)
                reused = False
            uwriter.write(head)
            pump = asyncio.ensure_future(self._send_body(request, creader, uwriter, m.request_bytes)) if body else None
            self.waiting[uwriter] = time.monotonic() + self.upstream_timeout
            try:
                rhead = await ureader.readuntil(b"\r\n\r\n")
                if rhead[9:10] == b"1" and rhead[9:12] != b"101":
                    rhead = await self._final_head(ureader, cwriter, request, rhead)
                self.waiting.pop(uwriter, None)
                return ureader, uwriter, pump, rhead
            except asyncio.LimitOverrunError:
                uwriter.close()
                self.waiting.pop(uwriter, None)
                await _cancel(pump)
                raise HTTPError(502, "The app sent a response head that is too large.", "upstream-bad") from None
            except (*_STALE, ConnectionError, OSError) as exc:
                uwriter.close()
                self.waiting.pop(uwriter, None)
                retry = reused and not body and attempt == 0
                await self._upstream_failed(circuit, key, uwriter, pump, exc, retry)
        raise AssertionError("unreachable: the second attempt answers or raises")

    async def _upstream_failed(self, circuit, key, uwriter, pump, exc, retry: bool) -> None:
        """Why the app gave no answer, as the error to raise; returns only when a stale
        pooled connection may be retried on a fresh one."""
        if uwriter in self.timed_out:
            self.timed_out.discard(uwriter)
            await _cancel(pump)
            raise HTTPError(504, f"The app {circuit.app} did not answer in time.", "upstream-timeout") from None
        if _failed(pump):
            raise ClientGone() from None
        await _cancel(pump)
        fresh = isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
        if retry and (fresh or not isinstance(exc, asyncio.IncompleteReadError)):
            return  # the pooled connection had gone stale: once more on a new one
        log.warning("circuit %s (session %s): the app at %s:%s closed without answering: %r", circuit.id,
                    circuit.session_id, key[0], key[1], exc)
        raise HTTPError(502, f"The app {circuit.app} closed the connection without answering.",
                        "upstream-closed") from None

    async def _upgrade(self, circuit, creader, cwriter, ureader, uwriter, pump, rhead, m) -> None:
        """The app switched protocols (a websocket): pass its 101 on and relay both ways until either side ends."""
        await _cancel(pump)
        cwriter.write(rhead)
        m.responses.inc()
        if ureader._buffer:  # noqa: SLF001 - bytes the app sent right after its 101
            cwriter.write(bytes(ureader._buffer))  # noqa: SLF001
            ureader._buffer.clear()  # noqa: SLF001
        await self._relay(creader, cwriter, ureader, uwriter, circuit, m.ws_established, m.ws_closed,
                          m.ws_pending, m.ws_duration, m.ws_traffic)

    async def _respond(self, request, response, circuit, cwriter, ureader, uwriter, pump, key, m) -> bool:
        """Relay the app's response to the client, then pool or close the app connection.
        True when the client connection may carry another request."""
        no_body = request.method == b"HEAD" or response.status in (204, 304) or response.status < 200
        delimited = no_body or response.chunked or response.content_length is not None
        to_chunk = not delimited and request.version == b"HTTP/1.1"
        keep_client = request.keep_alive and (delimited or to_chunk) and not self.stopping
        if pump is not None and not pump.done():
            keep_client = False  # the app answered before reading the whole body: the rest is unread
        head_out = _client_head(request, response, to_chunk, keep_client)
        reusable = not response.close and delimited
        try:
            await _write_response(ureader, cwriter, response, head_out, no_body, to_chunk, m.response_bytes)
        except (*_STALE, ConnectionError, OSError) as exc:
            uwriter.close()
            await _cancel(pump)
            log.info("circuit %s (session %s): response cut short: %r", circuit.id, circuit.session_id, exc)
            raise ClientGone() from None
        m.responses.inc()
        if pump is not None:
            if not pump.done():
                reusable = False
                await _cancel(pump)
            elif _failed(pump):
                uwriter.close()
                raise ClientGone()
        if reusable:
            self.pool.put_streams(key, ureader, uwriter)
        else:
            uwriter.close()
        if cwriter.transport.get_write_buffer_size() > HIGH_WATER:
            await cwriter.drain()
        return keep_client


def _client_head(request: Request, response, to_chunk: bool, keep_client: bool) -> bytes:
    """The response head the client gets: the app's, less hop-by-hop fields, with our framing."""
    out = [b"HTTP/1.1 ", response.status_line, b"\r\n"]
    for name, lname, value in response.headers:
        if lname not in HOP_BY_HOP and not lname.startswith(b"proxy-"):
            out += (name, b": ", value, b"\r\n")
    if response.chunked or to_chunk:
        out.append(b"Transfer-Encoding: chunked\r\n")
    if not keep_client:
        out.append(b"Connection: close\r\n")
    elif request.version == b"HTTP/1.0":
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    return b"".join(out)


async def _write_response(ureader, cwriter, response, head_out: bytes, no_body: bool, to_chunk: bool,
                          counter) -> None:
    """Write the head and relay the body: a small body in one write with the head, a
    larger one streamed by its framing (length, chunks, or until the app closes)."""
    length = response.content_length
    if no_body:
        cwriter.write(head_out)
    elif length is not None and length <= CHUNK:
        buffered = ureader._buffer  # noqa: SLF001 - small bodies usually came with the head
        if len(buffered) >= length:
            payload = bytes(buffered[:length])
            del buffered[:length]
            ureader._maybe_resume_transport()  # noqa: SLF001
        else:
            payload = await ureader.readexactly(length)
        cwriter.write(head_out + payload)
        counter.inc(length)
    else:
        cwriter.write(head_out)
        if length is not None:
            await _copy_length(ureader, cwriter, length, counter, ConnectionError)
        elif response.chunked:
            await _copy_chunked(ureader, cwriter, counter, ConnectionError)
        else:
            await _copy_until_close(ureader, cwriter, counter, to_chunk)


def _failed(task) -> bool:
    return task is not None and task.done() and not task.cancelled() and task.exception() is not None


async def _cancel(task) -> None:
    if task is None:
        return
    if not task.done():
        task.cancel()
    try:
        await task
    except BaseException:  # noqa: BLE001 - its failure is already handled by the caller
        pass


async def _copy_length(reader, writer, length: int, counter, gone: type[Exception]) -> None:
    remaining = length
    while remaining:
        data = await reader.read(min(CHUNK, remaining))
        if not data:
            raise gone(f"connection closed with {remaining} of {length} body bytes missing")
        remaining -= len(data)
        writer.write(data)
        counter.inc(len(data))
        if writer.transport.get_write_buffer_size() > HIGH_WATER:
            await writer.drain()


async def _copy_chunked(reader, writer, counter, gone: type[Exception]) -> None:
    """Relay a chunked body chunk by chunk (trailers are dropped, the last chunk ends it)."""
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise gone("malformed chunk size") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailer fields
                writer.write(b"0\r\n\r\n")
                return
            writer.write(b"%x\r\n" % size)
            remaining = size
            while remaining:
                data = await reader.read(min(CHUNK, remaining))
                if not data:
                    raise gone("connection closed inside a chunk")
                remaining -= len(data)
                writer.write(data)
            if await reader.readexactly(2) != b"\r\n":
                raise gone("malformed chunk ending")
            writer.write(b"\r\n")
            counter.inc(size)
            if writer.transport.get_write_buffer_size() > HIGH_WATER:
                await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise gone(f"bad chunked body: {exc.__class__.__name__}") from None


async def _copy_until_close(reader, writer, counter, as_chunks: bool) -> None:
    while True:
        data = await reader.read(CHUNK)
        if not data:
            break
        writer.write(b"%x\r\n%s\r\n" % (len(data), data) if as_chunks else data)
        counter.inc(len(data))
        if writer.transport.get_write_buffer_size() > HIGH_WATER:
            await writer.drain()
    if as_chunks:
        writer.write(b"0\r\n\r\n")


class _Writer(asyncio.StreamWriter):
    """A stream writer over a transport that may outlive it: a connection to an app goes back to
    the pool (``UpstreamPool.put_streams`` gives the transport another protocol) and its writer
    is dropped.  asyncio's ``StreamWriter.__del__`` closes a transport that is not closing when
    the writer is collected, so the pooled connection would be closed under the pool, and the
    next request would open a new one; this writer leaves alone a transport that has been handed
    on to another protocol, and closes one that is still its own as asyncio's does."""

    def __del__(self):
        if self._transport.get_protocol() is self._protocol and _STREAM_WRITER_DEL is not None:
            _STREAM_WRITER_DEL(self)


_STREAM_WRITER_DEL = getattr(asyncio.StreamWriter, "__del__", None)


async def _open_streams(host: str, port: int, limit: int):
    """``asyncio.open_connection`` with a ``_Writer``: a connection to an app, for the stream path."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return reader, _Writer(transport, protocol, reader, loop)


def _streams(transport, data: bytes, eof: bool, write_paused: bool, limit: int):
    """Hand a transport over to a stream reader and writer (the stream path), with the bytes
    already read from it (``data``) and whether its EOF came already."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    protocol._paused = write_paused  # noqa: SLF001 - the transport will call resume_writing once drained
    writer = _Writer(transport, protocol, reader, loop)
    if not transport.is_closing() and not transport.is_reading():
        transport.resume_reading()
    if data:
        reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader, writer


class UpstreamConn(asyncio.Protocol):
    """A connection to an app on the callback path: its bytes go to the client connection whose
    exchange holds it (``client``); idle in the pool, anything from the app makes it unusable."""

    __slots__ = ("transport", "client", "closed")

    def __init__(self):
        self.transport = None
        self.client: ClientConn | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            self.closed = True  # idle: bytes nobody asked for
            self.transport.close()
        else:
            client.upstream_data(self, data)

    def eof_received(self) -> bool:
        return False  # the transport closes: connection_lost says the rest

    def connection_lost(self, exc) -> None:
        self.closed = True
        client = self.client
        if client is not None:
            client.upstream_lost(self, exc)


_HEAD, _SMALL_BODY, _BODY = 0, 1, 2


class ClientConn(asyncio.Protocol):
    """A client connection on the callback path: request heads are parsed in ``data_received``,
    sent to a pooled app connection, and the answer is relayed from that connection's
    ``data_received`` straight to this transport (no stream, task or future per request).
    The common case stays here: a request without a body or upgrade to a plain (not inference)
    circuit, answered with a Content-Length (or no body).  Anything else hands the connection
    over to the stream path (``Proxy.serve_http``) for the rest of its life."""

    def __init__(self, proxy: Proxy, resolve, where: str):
        self.proxy, self.resolve, self.where = proxy, resolve, where
        self.transport = None
        self.buffer = b""
        self.busy = self.eof = self.closed = self.detached = self.in_next = False
        self.write_paused = self.read_paused = False
        self.upstream: UpstreamConn | None = None
        self.connecting = None
        self.request = self.circuit = self.m = None

    # --- client side ---------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = (transport.get_extra_info("peername") or ("?", 0))[0]
        self.state = self.proxy.connections[transport] = [False, time.monotonic()]

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        if self.busy:
            if len(self.buffer) > MAX_HEAD and not self.read_paused:
                self.read_paused = True  # pipelined requests pile up: wait for the answer first
                self.transport.pause_reading()
            return
        self._next()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.busy:
            self._next()
        return True  # the answer in progress (if any) still goes out

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.proxy.connections.pop(self.transport, None)
        if self.detached or not self.busy:
            return
        self._drop_upstream()  # a connect under way finds the client gone and closes what it got
        self._finished()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        upstream = self.upstream
        if upstream is not None and not upstream.transport.is_closing():
            upstream.transport.resume_reading()

    def _close(self) -> None:
        self.closed = True
        self.proxy.connections.pop(self.transport, None)
        self.transport.close()

    def _next(self) -> None:
        """Serve the next request in the buffer, if a whole head is there."""
        if self.in_next:
            return
        self.in_next = True
        try:
            while not (self.busy or self.closed or self.detached):
                buffer = self.buffer
                end = buffer.find(b"\r\n\r\n")
                if end < 0 or end > MAX_HEAD:
                    if end > MAX_HEAD or len(buffer) > MAX_HEAD:
                        self.transport.write(error_page(431, "request head too large"))
                        self._close()
                    elif self.eof:
                        if buffer.strip():
                            self.transport.write(error_page(400, "incomplete request"))
                        self._close()
                    elif self.read_paused:
                        self.read_paused = False
                        self.transport.resume_reading()
                    return
                if self.proxy.stopping:
                    self._close()
                    return
                self.buffer = buffer[end + 4:]
                self.state[0] = True
                self._start(buffer[:end + 4])
        finally:
            self.in_next = False

    def _start(self, head: bytes) -> None:
        proxy = self.proxy
        request = None
        try:
            request = parse_request(head)
            circuit = self.resolve(request)
            if circuit is None or circuit.protocol != "http":
                raise HTTPError(404, f"No app is served at {self.where} (its session may have ended, or the link "
                                     "expired): open the app again from the session page.", "no-circuit")
            if circuit.inference is not None or request.upgrade is not None or request.has_body:
                self._hand_over(head)
                return
            client = proxy.client_address(self.peer, request)
            proxy.check_access(request, circuit, client)
        except HTTPError as exc:
            self._done(proxy.refuse(exc, request, self.transport, self.peer, self.where))
            return
        m = self.m = circuit.metrics or proxy.metrics.for_circuit(circuit)
        m.requests.inc()
        m.pending.inc()
        self.started = time.monotonic()
        circuit.last_access = time.time()
        self.request, self.circuit = request, circuit
        self.key = (circuit.target_host, circuit.target_port)
        self.upstream_head = proxy.upstream_head(request, self.peer, client=client)
        self.busy = True
        self.attempt = 0
        self._ask()

    def _hand_over(self, head: bytes) -> None:
        """The rest of this connection goes the stream path, starting with ``head``."""
        self.detached = True
        proxy = self.proxy
        proxy.connections.pop(self.transport, None)
        if self.read_paused:
            self.transport.resume_reading()
        reader, writer = _streams(self.transport, self.buffer, self.eof, self.write_paused, MAX_HEAD)
        self.buffer = b""
        proxy.spawn(proxy.serve_http(reader, writer, self.resolve, self.where, first=head))

    # --- the app side --------------------------------------------------------------------------

    def _ask(self) -> None:
        conn = self.proxy.pool.take(self.key)
        if conn is None:
            self.reused = False
            self.connecting = asyncio.get_running_loop().create_task(self._connect())
        else:
            self.reused = True
            self._send(conn)

    async def _connect(self) -> None:
        proxy, circuit, key = self.proxy, self.circuit, self.key
        try:
            async with asyncio.timeout(proxy.connect_timeout):
                _, conn = await asyncio.get_running_loop().create_connection(UpstreamConn, *key)
        except (OSError, TimeoutError) as exc:
            self.connecting = None
            if self.closed:
                return  # the client went away meanwhile: its exchange is over already
            log.warning("circuit %s (session %s, app %s): cannot reach %s:%s: %s", circuit.id, circuit.session_id,
                        circuit.app, key[0], key[1], exc)
            self._fail(ConnectFailed(502, f"The app {circuit.app} does not answer (it may be starting or "
                                          "stopped).", "upstream-unreachable"))
            return
        self.connecting = None
        if self.closed:
            conn.transport.close()
            return
        self._send(conn)

    def _send(self, conn: UpstreamConn) -> None:
        self.upstream = conn
        conn.client = self
        self.phase = _HEAD
        self.got = b""
        self.proxy.waiting[conn.transport] = time.monotonic() + self.proxy.upstream_timeout
        conn.transport.write(self.upstream_head)
        if self.write_paused:
            conn.transport.pause_reading()

    def _drop_upstream(self) -> None:
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.client = None
            self.proxy.waiting.pop(conn.transport, None)
            conn.transport.close()

    def upstream_data(self, conn: UpstreamConn, data: bytes) -> None:
        phase = self.phase
        if phase == _BODY:
            remaining = self.remaining
            size = len(data)
            if size >= remaining:
                if size > remaining:
                    self.reusable = False  # bytes after the body: the connection is not clean
                    data = data[:remaining]
                    size = remaining
                self.transport.write(data)
                self.m.response_bytes.inc(size)
                self._complete()
            else:
                self.transport.write(data)
                self.remaining = remaining - size
                self.m.response_bytes.inc(size)
            return
        got = self.got + data if self.got else data
        if phase == _SMALL_BODY:
            self._small_body(got)
        else:
            self._response_head(conn, got)

    def _response_head(self, conn: UpstreamConn, got: bytes) -> None:
        proxy, request = self.proxy, self.request
        while True:
            end = got.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD:
                if end > MAX_HEAD or len(got) > MAX_HEAD:
                    self._drop_upstream()
                    self._fail(HTTPError(502, "The app sent a response head that is too large.", "upstream-bad"))
                else:
                    self.got = got
                return
            head, got = got[:end + 4], got[end + 4:]
            code = head[9:12]
            if code[:1] != b"1" or code == b"101":
                break
            if request.version == b"HTTP/1.1":  # an interim answer (100 Continue): passed on
                self.transport.write(head)
        self.got = b""
        proxy.waiting.pop(conn.transport, None)
        m = self.m
        m.upstream_requests.inc()
        m.upstream_responses.inc()
        try:
            response = parse_response(head)
        except HTTPError as exc:
            self._drop_upstream()
            self._fail(exc)
            return
        no_body = request.method == b"HEAD" or response.status in (204, 304) or response.status < 200
        length = response.content_length
        if not no_body and length is None:
            self._slow_response(conn, response, got)  # chunked or until the app closes
            return
        keep = self.keep_client = request.keep_alive and not proxy.stopping
        head_out = _client_head(request, response, False, keep)
        self.reusable = not response.close
        if no_body:
            if got:
                self.reusable = False
            self.transport.write(head_out)
            self._complete()
        elif length <= CHUNK:  # a small body goes out with the head in one write, once it is all here
            self.head_out = head_out
            self.remaining = length
            self._small_body(got)
        else:
            self.phase = _BODY
            self.remaining = length
            self.transport.write(head_out)
            if got:
                self.upstream_data(conn, got)

    def _small_body(self, got: bytes) -> None:
        length = self.remaining
        if len(got) < length:
            self.phase = _SMALL_BODY
            self.got = got
            return
        if len(got) > length:
            self.reusable = False
            got = got[:length]
        self.got = b""
        self.transport.write(self.head_out + got)
        self.m.response_bytes.inc(length)
        self._complete()

    def _complete(self) -> None:
        """The whole answer went out: the app connection back to the pool, the next request."""
        conn = self.upstream
        self.upstream = None
        self.m.responses.inc()
        if self.reusable:
            if self.write_paused:
                conn.transport.resume_reading()
            self.proxy.pool.put(self.key, conn)
        else:
            conn.client = None
            conn.transport.close()
        self._finished()
        self._done(self.keep_client)

    def _finished(self) -> None:
        m = self.m
        m.pending.dec()
        m.duration.observe(time.monotonic() - self.started)
        self.busy = False

    def _done(self, keep: bool) -> None:
        self.busy = False
        state = self.state
        state[0] = False
        state[1] = time.monotonic()
        if self.closed:
            return
        if not keep or self.proxy.stopping:
            self._close()
        elif self.buffer or self.eof or self.read_paused:
            self._next()

    def _fail(self, exc: HTTPError) -> None:
        """No answer from the app: the client gets an error page."""
        self._finished()
        if not self.closed:
            self._done(self.proxy.refuse(exc, self.request, self.transport, self.peer, self.where))

    def upstream_lost(self, conn: UpstreamConn, exc) -> None:
        if conn is not self.upstream:
            return
        proxy, circuit = self.proxy, self.circuit
        self.upstream = None
        conn.client = None
        transport = conn.transport
        proxy.waiting.pop(transport, None)
        if self.phase != _HEAD:
            log.info("circuit %s (session %s): response cut short: %r", circuit.id, circuit.session_id,
                     exc or ConnectionError("the app closed the connection"))
            self._finished()
            self._close()
            return
        if transport in proxy.timed_out:
            proxy.timed_out.discard(transport)
            self._fail(HTTPError(504, f"The app {circuit.app} did not answer in time.", "upstream-timeout"))
            return
        if self.reused and self.attempt == 0 and not self.got:
            self.attempt = 1  # the pooled connection had gone stale: once more on a new one
            self._ask()
            return
        log.warning("circuit %s (session %s): the app at %s:%s closed without answering: %r", circuit.id,
                    circuit.session_id, self.key[0], self.key[1], exc)
        self._fail(HTTPError(502, f"The app {circuit.app} closed the connection without answering.",
                             "upstream-closed"))

    def _slow_response(self, conn: UpstreamConn, response, got: bytes) -> None:
        """A chunked or close-delimited answer: both connections go the stream path for it (and
        the client connection for the rest of its life)."""
        self.detached = True
        self.upstream = None
        conn.client = None
        proxy = self.proxy
        proxy.connections.pop(self.transport, None)
        if self.write_paused:
            conn.transport.resume_reading()
        if self.read_paused:
            self.transport.resume_reading()
        creader, cwriter = _streams(self.transport, self.buffer, self.eof, self.write_paused, MAX_HEAD)
        ureader, uwriter = _streams(conn.transport, got, False, False, CHUNK)
        self.buffer = b""
        proxy.spawn(proxy.finish_on_streams(self.request, response, self.circuit, creader, cwriter, ureader, uwriter,
                                            self.key, self.m, self.started, self.resolve, self.where))
