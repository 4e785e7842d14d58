"""The worker process: registration, circuit sync, listeners, the setup endpoint.

Level-triggered like the agent: the coordinator's database is the truth.  At
boot the worker registers and fetches its whole circuit table; then it
heartbeats (with last-access times) and re-reads what changed since its
revision on a timer, at once when a heartbeat shows a newer revision, when the
coordinator pushes a hint, or when a setup link names a circuit it does not
know yet.  If the coordinator is unreachable it keeps serving the table it has.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
import time
from urllib.parse import parse_qs, unquote, urlsplit

from appproxy import tokens

from .client import CoordinatorClient, CoordinatorError, CoordinatorRejected, CoordinatorUnavailable, NotRegistered
from .config import WorkerConfig
from .http1 import MAX_HEAD, HTTPError, error_page, parse_request, simple_response
from .inference import Endpoint, Inference, Route
from .metrics import Metrics
from .proxy import Proxy
from .table import Circuit, CircuitTable

log = logging.getLogger("appproxy.worker")

FAILED_PORT_MEMORY = 600.0
HOUSEKEEPING_INTERVAL = 5.0
# --processes N: the primary starts N-1 followers with this variable set (and the write end of a
# pipe for their reports in FOLLOWER_REPORT_ENV); each serves the app ports through SO_REUSEPORT
FOLLOWER_ENV = "BAI_PROXY_FOLLOWER"
FOLLOWER_REPORT_ENV = "BAI_PROXY_FOLLOWER_REPORT_FD"
RESPAWN_DELAY = 1.0


def merge_counters(total: dict | None, more: dict, inflight: bool = True) -> dict:
    """Two processes' inference counters (``Endpoint.counters()``) as one; ``inflight=False``
    leaves out ``more``'s requests in flight (a process that ended has none)."""
    if total is None:
        total = {**more, "inflight": more.get("inflight", 0) if inflight else 0,
                 "latency_buckets": dict(more.get("latency_buckets") or {}),
                 "routes": {rid: dict(r) for rid, r in (more.get("routes") or {}).items()}}
        return total
    out = dict(total)
    for key in ("requests_total", "errors_total", "latency_sum", "latency_count", *(("inflight",) if inflight else ())):
        out[key] = total.get(key, 0) + more.get(key, 0)
    buckets = dict(total.get("latency_buckets") or {})
    for bound, count in (more.get("latency_buckets") or {}).items():
        buckets[bound] = buckets.get(bound, 0) + count
    out["latency_buckets"] = buckets
    routes = {rid: dict(r) for rid, r in (total.get("routes") or {}).items()}
    for rid, r in (more.get("routes") or {}).items():
        mine = routes.setdefault(rid, {"requests": 0, "errors": 0})
        mine["requests"] += r.get("requests", 0)
        mine["errors"] += r.get("errors", 0)
    out["routes"] = routes
    return out


class Worker:
    """One worker process.  With ``--processes N`` the primary (``follower=False``) registers,
    heartbeats, serves the API port and runs N-1 followers (``python -m appproxy.worker`` with
    ``argv``); a follower serves the app ports only: it reads its circuit table from the
    coordinator (a read), gets the secret and sync nudges from the primary on its stdin and
    reports last-access times and unusable ports to the primary, which heartbeats for all."""

    def __init__(self, config: WorkerConfig, client: CoordinatorClient | None = None, *, follower: bool = False,
                 argv: list[str] | None = None):
        self.config = config
        self.follower = follower
        self.argv = list(argv or ())
        self.reuse_port = config.processes > 1
        self.children: dict[int, asyncio.subprocess.Process] = {}
        # inference counters: each follower's latest (cumulative) and those of followers that ended
        self.follower_counters: dict[int, dict[str, dict]] = {}
        self.retired_counters: dict[str, dict] = {}
        self.report_transport: asyncio.WriteTransport | None = None
        self.client = client or CoordinatorClient(config.coordinator_url, config.token or "", config.name)
        self.table = CircuitTable()
        self.metrics = Metrics()
        self.secret: str | None = None
        self.permit_ttl = 7 * 86400.0
        self.proxy = Proxy(metrics=self.metrics, secret=lambda: self.secret, scheme=config.scheme,
                           trusted_proxies=config.trusted_proxies, connect_timeout=config.connect_timeout,
                           upstream_timeout=config.upstream_timeout, keepalive_timeout=config.keepalive_timeout,
                           webui_url=config.webui_url)
        self.listeners: dict[int, asyncio.AbstractServer] = {}
        self.port_protocol: dict[int, str] = {}
        self.released: dict[int, float] = {}
        self.failed: dict[int, float] = {}
        self.frontend: asyncio.AbstractServer | None = None
        self.api_servers: list[asyncio.AbstractServer] = []
        self.used_nonces: dict[str, float] = {}
        self.reported: dict[str, float] = {}
        self.sync_lock = asyncio.Lock()
        self.sync_event = asyncio.Event()
        self.stopping = asyncio.Event()
        self.registered = False
        self.last_full_sync = 0.0
        self.coordinator_down_since: float | None = None
        self.tasks: list[asyncio.Task] = []
        self.inference = Inference(self._on_flip)
        self.metrics.endpoints = self.inference.endpoints
        self.flips: dict[str, dict[str, dict]] = {}  # health flips not yet reported
        self.flip_event = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("worker %s: shutting down", self.config.name)
            self.stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        try:
            await self.start()
        except OSError as exc:
            log.error("worker %s: cannot listen: %s", self.config.name, exc)
            await self.stop()
            return 1
        await self.stopping.wait()
        await self.stop()
        return 0

    async def start(self) -> None:
        """Listen on the API port, register, load the table, open the frontends, start the loops."""
        self.proxy.start()
        if self.follower:
            await self._follow_primary()
        else:
            await self._start_api()
            await self.register()
        if self.stopping.is_set():
            return
        await self.sync(full=True)
        if self.config.mode == "wildcard":
            self.frontend = await asyncio.get_running_loop().create_server(
                self._wildcard_protocol, self.config.bind_host, self.config.wildcard_port, backlog=1024,
                reuse_address=True, reuse_port=self.reuse_port or None)
            log.info("worker %s: wildcard frontend *.%s on %s:%s", self.config.name, self.config.wildcard_domain,
                     self.config.bind_host, self.config.wildcard_port)
        if self.follower:
            self.tasks = [asyncio.create_task(self._primary_loop(), name="primary"),
                          asyncio.create_task(self._report_loop(), name="report"),
                          asyncio.create_task(self._sync_loop(), name="sync"),
                          asyncio.create_task(self._housekeeping_loop(), name="housekeeping")]
            return
        self.tasks = [asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                      asyncio.create_task(self._sync_loop(), name="sync"),
                      asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
                      asyncio.create_task(self._flip_loop(), name="route-health")]
        self.tasks += [asyncio.create_task(self._keep_follower(index), name=f"follower-{index}")
                       for index in range(1, self.config.processes)]

    async def stop(self) -> None:
        self.stopping.set()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled
                pass
        for server in [*self.listeners.values(), *([self.frontend] if self.frontend else [])]:
            server.close()
        await self._stop_followers()
        self.proxy.close_idle()
        deadline = time.monotonic() + self.config.shutdown_grace
        while self.proxy.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.inference.stop()
        for circuit in self.table.circuits.values():
            self.proxy.close_relays(circuit)
        self.proxy.close_all()
        if self.report_transport is not None:
            self.report_transport.close()
        if self.registered and not self.follower:
            try:
                async with asyncio.timeout(3):
                    await self.client.shutdown()
            except (CoordinatorError, TimeoutError) as exc:
                log.info("worker %s: could not say goodbye to the coordinator: %s", self.config.name, exc)
        await self.client.close()
        for server in self.api_servers:
            server.close()
        log.info("worker %s: stopped", self.config.name)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when it is time to stop."""
        try:
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
            return True
        except TimeoutError:
            return False

    # --- coordinator -------------------------------------------------------------------------

    def registration(self) -> dict:
        c = self.config
        payload = {"frontend_mode": c.mode, "protocols": list(c.protocols), "scheme": c.scheme,
                   "advertised_host": c.advertised_host, "api_endpoint": c.api_endpoint, "hint_url": c.hint_url,
                   "capacity": c.capacity, "metrics_address": self.metrics_address()}
        if c.mode == "port":
            payload["port_range"] = list(c.port_range)
        else:
            payload.update(wildcard_domain=c.wildcard_domain, wildcard_port=c.wildcard_port)
        return payload

    def metrics_address(self) -> str:
        """``host:port`` Prometheus scrapes this worker's ``/metrics`` at (the metrics port when set,
        else the API port; a wildcard API host is replaced by the coordinator with the advertised host)."""
        c = self.config
        host = c.api_host if c.api_host not in ("0.0.0.0", "::") else "0.0.0.0"
        host = f"[{host}]" if ":" in host else host
        port = c.metrics_port or c.api_port
        return f"{host}:{port}"

    async def register(self) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            try:
                answer = await self.client.register(self.registration())
            except CoordinatorRejected as exc:
                log.error("worker %s: the coordinator refused the registration: %s", self.config.name, exc)
            except CoordinatorError as exc:
                log.warning("worker %s: cannot register yet: %s", self.config.name, exc)
            else:
                if self.secret is not None and self.secret != answer["secret"]:
                    log.warning("worker %s: the coordinator rotated the secret: earlier permits are void",
                                self.config.name)
                self.secret = answer["secret"]
                self.permit_ttl = float(answer.get("permit_ttl") or self.permit_ttl)
                self.registered = True
                self._tell_followers({"secret": self.secret, "permit_ttl": self.permit_ttl})
                log.info("worker %s registered with %s (%s mode, setup at %s)", self.config.name,
                         self.config.coordinator_url, self.config.mode, self.config.api_endpoint)
                return
            if await self._sleep(delay):
                return
            delay = min(delay * 2, 30.0)

    def _coordinator_up(self) -> None:
        if self.coordinator_down_since is not None:
            log.info("worker %s: the coordinator answers again (after %.0f s)", self.config.name,
                     time.monotonic() - self.coordinator_down_since)
            self.coordinator_down_since = None

    def _coordinator_down(self, exc: Exception) -> None:
        if self.coordinator_down_since is None:
            self.coordinator_down_since = time.monotonic()
            log.warning("worker %s: the coordinator is unreachable (%s); serving the %d circuits it has",
                        self.config.name, exc, len(self.table))

    async def sync(self, full: bool = False) -> bool:
        """Bring the table up to date; False when the coordinator could not be asked."""
        async with self.sync_lock:
            since = None if full or self.table.revision is None else self.table.revision
            try:
                answer = await self.client.circuits(since)
            except NotRegistered:
                if self.follower:  # the primary registers again on its next heartbeat, then nudges
                    log.warning("worker %s: the coordinator does not know this worker (yet)", self.config.name)
                    return False
                log.warning("worker %s: the coordinator does not know this worker: registering again",
                            self.config.name)
                await self.register()
                try:
                    answer = await self.client.circuits(None)
                except CoordinatorError as exc:
                    self._coordinator_down(exc)
                    return False
            except CoordinatorUnavailable as exc:
                self._coordinator_down(exc)
                return False
            except CoordinatorRejected as exc:
                log.error("worker %s: circuit sync refused: %s", self.config.name, exc)
                return False
            self._coordinator_up()
            if answer.get("full"):
                self.last_full_sync = time.monotonic()
            changes = self.table.apply(answer)
            if changes:
                self._tell_followers({"sync": True})
            for circuit in changes.removed:
                if circuit.is_inference:
                    self.inference.detach(circuit)
                self.proxy.close_relays(circuit)
                self.metrics.forget(circuit)
                self.reported.pop(circuit.id, None)
                log.info("circuit %s (session %s, app %s) removed from worker %s", circuit.id, circuit.session_id,
                         circuit.app, self.config.name)
            for old, new in changes.changed:
                if not old.same_route(new):
                    self.proxy.close_relays(old)
                if new.is_inference:
                    self.inference.attach(new)
                    log.info("endpoint %s: inference circuit %s changed: %d route(s) at %s", new.endpoint_id, new.id,
                             len(new.routes), new.port or new.subdomain)
                    continue
                log.info("circuit %s (session %s, app %s) changed: -> %s:%s at %s", new.id, new.session_id,
                         new.app, new.target_host, new.target_port, new.port or new.subdomain)
            for circuit in changes.added:
                if circuit.is_inference:
                    self.inference.attach(circuit)
                    log.info("endpoint %s: inference circuit %s with %d route(s) at %s", circuit.endpoint_id,
                             circuit.id, len(circuit.routes), circuit.port or circuit.subdomain)
                    continue
                log.info("circuit %s (session %s, app %s, %s) -> %s:%s at %s", circuit.id, circuit.session_id,
                         circuit.app, circuit.protocol, circuit.target_host, circuit.target_port,
                         circuit.port or circuit.subdomain)
            self.metrics.circuits_created.inc(len(changes.added))
            self.metrics.alive_circuits.set(len(self.table))
            if self.config.mode == "port":
                await self.reconcile_listeners()
            return True

    async def _sync_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                async with asyncio.timeout(self.config.sync_interval):
                    await self.sync_event.wait()
            except TimeoutError:
                pass
            self.sync_event.clear()
            full = time.monotonic() - self.last_full_sync >= self.config.full_sync_interval
            try:
                await self.sync(full=full)
            except Exception:  # noqa: BLE001 - keep syncing whatever one answer held
                log.exception("worker %s: circuit sync failed", self.config.name)

    async def _heartbeat_loop(self) -> None:
        while not await self._sleep(self.config.heartbeat_interval):
            await self.heartbeat()

    async def heartbeat(self) -> None:
        reports = {cid: c.last_access for cid, c in self.table.circuits.items()
                   if c.last_access > self.reported.get(cid, 0.0)}
        now = time.time()
        failed = sorted(p for p, when in self.failed.items() if now - when < FAILED_PORT_MEMORY)
        inference = {e.circuit_id: {"health": e.health_report(), "counters": self._counters(e)}
                     for e in self.inference.endpoints.values()}
        try:
            answer = await self.client.heartbeat(reports, failed, inference)
        except NotRegistered:
            log.warning("worker %s: unknown to the coordinator: registering again", self.config.name)
            await self.register()
            self.table.revision = None
            self.sync_event.set()
            return
        except CoordinatorUnavailable as exc:
            self._coordinator_down(exc)
            return
        except CoordinatorRejected as exc:
            log.error("worker %s: heartbeat refused: %s", self.config.name, exc)
            return
        self._coordinator_up()
        self.reported.update(reports)
        if answer.get("revision") != self.table.revision:
            self.sync_event.set()

    def _on_flip(self, endpoint: Endpoint, route: Route) -> None:
        """A route's health flipped: report it now (the heartbeat repeats everything anyway)."""
        self.flips.setdefault(endpoint.circuit_id, {})[route.id] = route.report()
        self.flip_event.set()

    async def _flip_loop(self) -> None:
        while not self.stopping.is_set():
            await self.flip_event.wait()
            self.flip_event.clear()
            reports, self.flips = self.flips, {}
            try:
                async with asyncio.timeout(10):
                    await self.client.route_health(reports)
            except (CoordinatorError, TimeoutError) as exc:
                log.debug("worker %s: route health report failed (the next heartbeat carries it): %s",
                          self.config.name, exc)

    async def _housekeeping_loop(self) -> None:
        while not await self._sleep(HOUSEKEEPING_INTERVAL):
            self.proxy.pool.sweep()
            now = time.time()
            for nonce, expires in list(self.used_nonces.items()):
                if expires < now:
                    del self.used_nonces[nonce]
            if self.config.mode == "port":
                await self.reconcile_listeners()

    # --- several processes (--processes N) ---------------------------------------------------

    def _tell_followers(self, message: dict) -> None:
        line = json.dumps(message).encode() + b"\n"
        for child in self.children.values():
            if child.stdin is not None and not child.stdin.is_closing():
                child.stdin.write(line)

    async def _keep_follower(self, index: int) -> None:
        """Run follower ``index`` (``python -m appproxy.worker`` with our arguments) and start it
        again if it dies; its reports (last access, unusable ports) ride our heartbeats."""
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            read_fd, write_fd = os.pipe()
            env = dict(os.environ, **{FOLLOWER_ENV: "1", FOLLOWER_REPORT_ENV: str(write_fd)})
            try:
                child = await asyncio.create_subprocess_exec(sys.executable, "-m", "appproxy.worker", *self.argv,
                                                             stdin=asyncio.subprocess.PIPE, env=env,
                                                             pass_fds=(write_fd,))
            except OSError as exc:
                os.close(read_fd)
                log.error("worker %s: cannot start follower %d: %s", self.config.name, index, exc)
                child = None
            finally:
                os.close(write_fd)
            if child is not None:
                self.children[index] = child
                child.stdin.write(json.dumps({"secret": self.secret, "permit_ttl": self.permit_ttl}).encode()
                                  + b"\n")
                reports = asyncio.StreamReader()
                transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reports),
                                                            os.fdopen(read_fd, "rb", 0))
                log.info("worker %s: follower %d is process %s", self.config.name, index, child.pid)
                try:  # cancelled at shutdown: the child stays in self.children for _stop_followers
                    while line := await reports.readline():
                        self._follower_report(index, json.loads(line))
                    code = await child.wait()
                finally:
                    transport.close()
                self.children.pop(index, None)
                for cid, counters in self.follower_counters.pop(index, {}).items():
                    # what it counted stays counted (the sums the coordinator sees never go down)
                    self.retired_counters[cid] = merge_counters(self.retired_counters.get(cid), counters,
                                                                inflight=False)
                if self.stopping.is_set():
                    return
                log.error("worker %s: follower %d (process %s) ended with status %s: starting it again",
                          self.config.name, index, child.pid, code)
            if await self._sleep(RESPAWN_DELAY):
                return

    def _counters(self, endpoint: Endpoint) -> dict:
        """An endpoint's counters summed over this process and the followers."""
        total = endpoint.counters()
        for more in (self.retired_counters.get(endpoint.circuit_id),
                     *(c.get(endpoint.circuit_id) for c in self.follower_counters.values())):
            if more:
                total = merge_counters(total, more)
        return total

    def _follower_report(self, index: int, report: dict) -> None:
        if "inference" in report:
            self.follower_counters[index] = report["inference"]
        for cid, when in (report.get("access") or {}).items():
            circuit = self.table.get(cid)
            if circuit is not None and when > circuit.last_access:
                circuit.last_access = when
        now = time.time()
        for port in report.get("failed") or ():
            self.failed[int(port)] = now

    async def _stop_followers(self) -> None:
        children = list(self.children.values())
        for child in children:
            if child.returncode is None:
                child.terminate()
        for child in children:
            try:
                async with asyncio.timeout(self.config.shutdown_grace + 5):
                    await child.wait()
            except TimeoutError:
                child.kill()
                await child.wait()

    async def _follow_primary(self) -> None:
        """A follower: the primary's messages come on stdin (the secret first), reports go to its pipe."""
        loop = asyncio.get_running_loop()
        self.primary = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.primary), sys.stdin)
        fd = int(os.environ.pop(FOLLOWER_REPORT_ENV))
        self.report_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(fd, "wb", 0))
        while self.secret is None and not self.stopping.is_set():
            if not await self._from_primary():
                return

    async def _from_primary(self) -> bool:
        line = await self.primary.readline()
        if not line:
            log.warning("worker %s: the primary process is gone: stopping", self.config.name)
            self.request_stop()
            return False
        message = json.loads(line)
        if message.get("secret"):
            self.secret = message["secret"]
            self.permit_ttl = float(message.get("permit_ttl") or self.permit_ttl)
            self.registered = True
        if message.get("sync"):
            self.sync_event.set()
        return True

    async def _primary_loop(self) -> None:
        while await self._from_primary():
            pass

    async def _report_loop(self) -> None:
        while not await self._sleep(self.config.heartbeat_interval):
            reports = {cid: c.last_access for cid, c in self.table.circuits.items()
                       if c.last_access > self.reported.get(cid, 0.0)}
            now = time.time()
            failed = sorted(p for p, when in self.failed.items() if now - when < FAILED_PORT_MEMORY)
            report = {"access": reports, "failed": failed}
            if self.inference.endpoints:
                report["inference"] = {e.circuit_id: e.counters() for e in self.inference.endpoints.values()}
            if reports or failed or self.inference.endpoints:
                self.report_transport.write(json.dumps(report).encode() + b"\n")
                self.reported.update(reports)

    # --- frontends ---------------------------------------------------------------------------

    async def reconcile_listeners(self) -> None:
        """Listen on every circuit's port; keep a freed port answering 404 for a while, then close it."""
        now = time.monotonic()
        wanted = self.table.by_port
        for port, circuit in wanted.items():
            self.released.pop(port, None)
            self.port_protocol[port] = circuit.protocol
            if port in self.listeners or self.stopping.is_set():
                continue
            try:
                self.listeners[port] = await asyncio.get_running_loop().create_server(
                    functools.partial(self._port_protocol, port), self.config.bind_host, port, backlog=1024,
                    reuse_address=True, reuse_port=self.reuse_port or None)
                if self.failed.pop(port, None):
                    log.info("worker %s: port %s is usable again", self.config.name, port)
            except OSError as exc:
                if port not in self.failed:
                    log.error("worker %s: cannot listen on port %s for circuit %s (session %s): %s",
                              self.config.name, port, circuit.id, circuit.session_id, exc)
                self.failed[port] = time.time()
        for port in list(self.listeners):
            if port not in wanted:
                since = self.released.setdefault(port, now)
                if now - since >= self.config.release_after:
                    self.listeners.pop(port).close()
                    self.released.pop(port, None)
                    self.port_protocol.pop(port, None)

    def _port_protocol(self, port: int) -> asyncio.Protocol:
        """The protocol for a connection to an app port: HTTP on the proxy's callback path, a raw
        TCP circuit (or a freed TCP port) on streams."""
        circuit = self.table.by_port.get(port)
        if (circuit is not None and circuit.protocol == "tcp") or (circuit is None
                                                                  and self.port_protocol.get(port) == "tcp"):
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=MAX_HEAD),
                                                functools.partial(self._on_tcp_port, port))
        return self.proxy.http_protocol(lambda _request: self.table.by_port.get(port), f"port {port}")

    async def _on_tcp_port(self, port: int, reader, writer) -> None:
        circuit = self.table.by_port.get(port)
        if circuit is not None and circuit.protocol == "tcp":
            await self.proxy.serve_tcp(reader, writer, circuit)
            return
        if circuit is None and self.port_protocol.get(port) == "tcp":
            writer.close()  # a TCP client would wait for a banner: close at once instead
            return
        await self.proxy.serve_http(reader, writer, lambda _request: self.table.by_port.get(port), f"port {port}")

    def _resolve_host(self, request) -> Circuit | None:
        host = (request.host or b"").decode("latin-1").lower()
        name, sep, port = host.rpartition(":")
        if sep and port.isdigit() and not name.endswith("]"):
            host = name
        suffix = "." + self.config.wildcard_domain
        if not host.endswith(suffix):
            return None
        return self.table.by_subdomain.get(host[:-len(suffix)])

    def _wildcard_protocol(self) -> asyncio.Protocol:
        return self.proxy.http_protocol(self._resolve_host, f"*.{self.config.wildcard_domain}")

    def frontend_url(self, circuit: Circuit) -> str:
        c = self.config
        default = 443 if c.scheme == "https" else 80
        if c.mode == "wildcard":
            port = "" if c.wildcard_port == default else f":{c.wildcard_port}"
            return f"{c.scheme}://{circuit.subdomain}.{c.wildcard_domain}{port}"
        port = "" if circuit.port == default else f":{circuit.port}"
        return f"{c.scheme}://{c.advertised_host}{port}"

    # --- API: setup, health, metrics, hints --------------------------------------------------

    async def _redeem(self, token: str, as_json: bool) -> bytes | None:
        """Mark the link used at the coordinator, the memory no worker restart loses;
        an error page when it must be refused (None: go on)."""
        try:
            async with asyncio.timeout(10):
                await self.client.redeem_setup(token)
        except CoordinatorRejected as exc:
            log.info("worker %s: the coordinator refused a setup link: %s", self.config.name, exc)
            if exc.slug == "setup-token-used" or exc.status == 410:
                return self.error_page(403, "This app link was already used. Open the app again from the session "
                                            "page.", as_json, "setup-token-used")
            return self.error_page(403, f"{exc.detail or 'This app link is not valid'}. Open the app again from "
                                        "the session page.", as_json, "setup-token-invalid")
        except (CoordinatorUnavailable, NotRegistered, TimeoutError) as exc:
            log.warning("worker %s: cannot redeem a setup link now: %s", self.config.name, exc)
            return self.error_page(503, "The app proxy cannot check this link right now; try it again in a "
                                        "moment.", as_json, "coordinator-unavailable")
        return None

    def error_page(self, *args, **kwargs) -> bytes:
        """http1.error_page with the manager's web UI as the browser's way back."""
        return error_page(*args, back=self.config.webui_url, **kwargs)

    async def _start_api(self) -> None:
        c = self.config
        self.api_servers.append(await asyncio.start_server(self._on_api, c.api_host, c.api_port, limit=MAX_HEAD,
                                                           reuse_address=True))
        if c.metrics_port:
            self.api_servers.append(await asyncio.start_server(self._on_api, c.api_host, c.metrics_port,
                                                               limit=MAX_HEAD, reuse_address=True))
        log.info("worker %s: setup/health/metrics on %s:%s", c.name, c.api_host, c.api_port)

    async def _on_api(self, reader, writer) -> None:
        try:
            async with asyncio.timeout(30):
                head = await reader.readuntil(b"\r\n\r\n")
                request = parse_request(head)
                answer = await self._api(request, reader, writer)
        except HTTPError as exc:
            answer = self.error_page(exc.status, exc.message, reason=exc.reason)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            answer = b""
        try:
            if answer:
                writer.write(answer)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _api(self, request, reader, writer) -> bytes:
        url = urlsplit(request.target.decode("latin-1"))
        path = url.path
        if request.method == b"GET" and path == "/health":
            body = json.dumps({"status": "ok" if self.registered else "starting", "name": self.config.name,
                               "mode": self.config.mode, "revision": self.table.revision,
                               "circuits": len(self.table), "event_loop": type(asyncio.get_running_loop()).__module__,
                               "processes": 1 + len(self.children),
                               "coordinator": "down" if self.coordinator_down_since else "up"}).encode()
            return simple_response(200 if self.registered else 503, body, b"application/json")
        if request.method == b"GET" and path == "/metrics":
            return simple_response(200, self.metrics.exposition(), b"text/plain; version=0.0.4; charset=utf-8")
        if request.method == b"POST" and path == "/v1/hint":
            length = request.content_length or 0
            if length > 4096:
                raise HTTPError(413, "hint too large")
            body = await reader.readexactly(length) if length else b""
            signature = next((v for _, n, v in request.headers if n == b"x-appproxy-signature"), b"")
            if not self.secret or not tokens.verify_hint(self.secret, body, signature.decode("latin-1")):
                raise HTTPError(403, "bad hint signature")
            self.sync_event.set()
            return simple_response(202, b'{"accepted": true}', b"application/json")
        if request.method in (b"GET", b"HEAD"):
            token = None
            if path == "/setup":
                token = (parse_qs(url.query).get("token") or [""])[0]
            elif path.startswith("/v2/proxy/"):
                token = unquote(path[len("/v2/proxy/"):].split("/", 1)[0])
            if token is not None:
                peer = (writer.get_extra_info("peername") or ("?", 0))[0]
                return await self.setup(token, request.wants_json, secure=self.over_tls(request, peer))
        raise HTTPError(404, f"Nothing at {path} on this app proxy worker.")

    def over_tls(self, request, peer: str) -> bool:
        """Whether the browser reached us over TLS: the advertised scheme is https, or a
        trusted proxy in front says so with ``X-Forwarded-Proto: https``."""
        if self.config.scheme == "https":
            return True
        if not self.proxy.is_trusted(peer):
            return False
        proto = next((v for _, n, v in reversed(request.headers) if n == b"x-forwarded-proto"), b"")
        return proto.split(b",")[-1].strip().lower() == b"https"

    async def setup(self, token: str, as_json: bool = False, secure: bool = False) -> bytes:
        """Check a setup token, redeem it at the coordinator (once, ever), set the permit
        cookie and send the browser to the app."""
        if not self.secret:
            raise HTTPError(503, "The proxy worker is starting; try again in a moment.")
        try:
            claims = tokens.verify(self.secret, "setup", token)
        except tokens.TokenError as exc:
            log.info("worker %s: refused a setup link: %s", self.config.name, exc)
            return self.error_page(403, f"This app link is not valid ({exc}). Open the app again from the session "
                                        "page.", as_json, "setup-token-invalid")
        if claims.nonce in self.used_nonces:
            return self.error_page(403, "This app link was already used. Open the app again from the session page.",
                                   as_json, "setup-token-used")
        problem = tokens.redirect_problem(claims.redirect)
        if problem:
            log.warning("worker %s: refused a setup link whose redirect %s: %r", self.config.name, problem,
                        claims.redirect[:100])
            return self.error_page(400, f"This app link's redirect target {problem}.", as_json, "bad-redirect")
        circuit = self.table.get(claims.circuit)
        if circuit is None or not circuit.admits_user(claims.user):
            try:
                async with asyncio.timeout(5):
                    await self.sync()
            except TimeoutError:
                pass
            circuit = self.table.get(claims.circuit)
        if circuit is None:
            return self.error_page(404, "This app is not available on this proxy any more (its session may have "
                                        "ended). Open it again from the session page.", as_json, "no-circuit")
        if not circuit.admits_user(claims.user):
            return self.error_page(403, "This link was not issued for this app's users.", as_json,
                                   "permit-wrong-user")
        refused = await self._redeem(token, as_json)
        if refused is not None:
            return refused
        self.used_nonces[claims.nonce] = claims.expires
        log.info("worker %s: setup for circuit %s (session %s, app %s) by user %s", self.config.name, circuit.id,
                 circuit.session_id, circuit.app, claims.user)
        app_url = self.frontend_url(circuit)
        if circuit.protocol == "tcp":
            address = f"{self.config.advertised_host}:{circuit.port}"
            if as_json:
                return simple_response(200, json.dumps({"protocol": "tcp", "address": address,
                                                        "url": app_url}).encode(), b"application/json")
            body = (f"<!doctype html><title>{circuit.app}</title><h1>{circuit.app}</h1>"
                    f"<p>This is a TCP app: connect your client to <code>{address}</code>.</p>").encode()
            return simple_response(200, body, b"text/html; charset=utf-8")
        permit = tokens.make_permit(self.secret, circuit.id, claims.user, self.permit_ttl)
        cookie = (f"{circuit.cookie_name.decode()}={permit}; Path=/; Max-Age={int(self.permit_ttl)}; HttpOnly; "
                  "SameSite=Lax")
        if secure:
            cookie += "; Secure"
        if self.config.mode == "wildcard":
            cookie += f"; Domain={self.config.wildcard_domain}"
        location = app_url + claims.redirect
        if as_json:
            return simple_response(200, json.dumps({"redirect_url": location}).encode(), b"application/json",
                                   [(b"Set-Cookie", cookie.encode())])
        return simple_response(302, b"", b"text/plain", [(b"Location", location.encode()),
                                                          (b"Set-Cookie", cookie.encode()),
                                                          (b"Referrer-Policy", b"no-referrer")])
