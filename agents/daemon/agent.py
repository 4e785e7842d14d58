"""The agent: a level-triggered sync loop between a kernel backend and the manager.

Threads (all daemon threads; Docker SDK calls block):

* ``sync``: builds the sync body, POSTs it, applies the answer, sleeps
  ``sync_interval`` (or backs off), wakes up early on a poke.  With a manager
  that holds syncs (its answers carry ``fingerprint`` and ``max_wait``) the
  loop is a long poll instead: each sync names the fingerprint of the last
  answer and ``wait``, the manager answers when something changed (or the
  wait elapsed), and the next sync goes out at once (``--long-poll 0``: off);
* ``watch``: every second looks at the backend's kernels, enforces batch
  timeouts and turns status changes into events;
* ``events``: posts queued events (a failed post is dropped: the next sync
  carries the same state);
* ``manager-link``: the websocket, started after the first successful sync; it
  also carries terminals and TCP relays (:mod:`.streams`: two threads per stream);
* one short-lived worker per kernel creation or stop.

Kernels are never stopped because the manager is unreachable.  Final states
of kernels the backend no longer has (``ERROR``, or ``TERMINATED`` and
removed) are kept until one successful sync delivered them; their ids are
remembered on disk so the same kernel is never started twice.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import queue
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agents.protocol import KernelSpec, KernelState, ReportedStatus, SpecError, normalize_architecture, tail_text

from . import __version__
from . import commit as _commit_kind  # noqa: F401,E402 - registers the "commit" stream kind
from . import execution as _execute_kind  # noqa: F401,E402 - registers the "execute" stream kind
from . import files as _files_kinds  # noqa: F401,E402 - registers "files", "download", "upload"
from .backends.base import Backend, KernelError
from .backoff import Backoff
from .client import AuthRejected, ManagerClient, ManagerError, ManagerRejected, ManagerUnavailable
from .config import AgentConfig
from .discovery import GpuProbe, HostStats, Resources, kernel_gpu_stats
from .link import ManagerLink
from .metrics import AgentMetrics, AgentMetricsServer
from .streams import StreamMux

__all__ = ["Agent", "AppliedRestarts", "FinishedKernels"]

log = logging.getLogger(__name__)


class FinishedKernels:
    """Ids of kernels that ended here (persisted, bounded): never started again."""

    def __init__(self, path: Path | None, limit: int = 10_000):
        self._path = path
        self._limit = limit
        self._ids: dict[str, None] = {}
        self._lock = threading.Lock()
        if path is not None:
            try:
                self._ids = dict.fromkeys(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                self._ids = {}

    def __contains__(self, kernel_id: object) -> bool:
        with self._lock:
            return kernel_id in self._ids

    def add(self, kernel_id: str) -> None:
        with self._lock:
            if kernel_id in self._ids:
                return
            self._ids[kernel_id] = None
            while len(self._ids) > self._limit:
                self._ids.pop(next(iter(self._ids)))
            if self._path is not None:
                try:
                    self._path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = self._path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(list(self._ids)))
                    os.replace(tmp, self._path)
                except OSError as exc:
                    log.warning("cannot persist finished kernels to %s: %s", self._path, exc)


class AppliedRestarts:
    """The last ``restart_id`` applied per kernel (persisted, so a restarted daemon does not restart again)."""

    def __init__(self, path: Path | None):
        self._path = path
        self._lock = threading.Lock()
        self._ids: dict[str, str] = {}
        if path is not None:
            try:
                data = json.loads(path.read_text())
                self._ids = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._ids = {}

    def get(self, kernel_id: str) -> str | None:
        with self._lock:
            return self._ids.get(kernel_id)

    def _save_locked(self) -> None:
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._ids))
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("cannot persist applied restarts to %s: %s", self._path, exc)

    def set(self, kernel_id: str, restart_id: str) -> None:
        with self._lock:
            self._ids[kernel_id] = restart_id
            self._save_locked()

    def forget(self, kernel_id: str) -> None:
        with self._lock:
            if self._ids.pop(kernel_id, None) is not None:
                self._save_locked()


class Agent:
    """One agent daemon.  :meth:`run` blocks until :meth:`request_stop` (or a signal via the CLI)."""

    def __init__(self, config: AgentConfig, backend: Backend, client: ManagerClient, resources: Resources, *,
                 gpu_probe: GpuProbe | None = None, host_stats: HostStats | None = None,
                 watch_interval: float = 1.0, auth_retry: float = 30.0, backoff: Backoff | None = None,
                 link: bool = True, link_missing_retry: float = 60.0):
        self.config = config
        self.agent_id = config.agent_id
        self.backend = backend
        self.client = client
        self.resources = resources
        self.gpu_probe = gpu_probe
        self.host_stats = host_stats or HostStats()
        self.sync_interval = config.sync_interval
        self.long_poll = config.long_poll
        self.watch_interval = watch_interval
        self.auth_retry = auth_retry
        self.backoff = backoff or Backoff(base=1.0, cap=30.0)
        self.use_link = link
        self.link_missing_retry = link_missing_retry
        self.link: ManagerLink | None = None
        self.streams = StreamMux(backend)
        self.log = logging.LoggerAdapter(log, {"agent_id": self.agent_id})

        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.RLock()
        self._inflight: dict[str, str] = {}  # kernel id -> "create" | "stop"
        self._deferred_stops: dict[str, str] = {}  # stop asked while the kernel was being created
        self._final: dict[str, KernelState] = {}  # final states the backend no longer has, until delivered
        self._reported: dict[str, str] = {}  # last status sent as an event, per kernel
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._sync_thread: threading.Thread | None = None
        self.finished = FinishedKernels(Path(config.scratch_root) / "finished-kernels.json")
        self.restarts = AppliedRestarts(Path(config.scratch_root) / "applied-restarts.json")
        self.metrics = AgentMetrics(self.agent_id)
        self.metrics_server: AgentMetricsServer | None = None  # started by start() with --metrics-listen

        self.syncs = 0  # successful syncs
        self.failures = 0  # failed sync attempts in a row
        self.last_answer: dict[str, Any] | None = None
        self._last_status: tuple[Any, Any] | None = None
        self._fingerprint: str | None = None  # of the last answer applied (the long poll)
        self._manager_max_wait = 0.0  # how long the manager holds a sync (0: it does not)
        self._quick_unchanged = 0  # held syncs in a row that came back at once with nothing new

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Adopt leftover kernels and start the threads (returns at once)."""
        self.log.info("agent %s starting: backend %s, manager %s, capacity %s", self.agent_id, self.backend.name,
                      self.client.base_url, self.resources.capacity())
        for state in self.backend.adopt():
            with self._lock:
                self._reported[state.kernel_id] = state.status.value
            if state.status is ReportedStatus.RUNNING:  # before any new upload: every one left is a leftover
                _files_kinds.sweep_uploads(self.backend, state.kernel_id)
        self._start_metrics()
        for name, target in (("sync", self._sync_loop), ("watch", self._watch_loop), ("events", self._event_loop)):
            thread = threading.Thread(target=target, name=f"agent-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
            if name == "sync":
                self._sync_thread = thread

    def _start_metrics(self) -> None:
        """Serve /metrics at ``--metrics-listen`` (a busy port is logged; the agent runs on without it)."""
        listen = getattr(self.config, "metrics_listen", None)
        if not listen or self.metrics_server is not None:
            return
        try:
            self.metrics_server = AgentMetricsServer(listen, self.metrics)
        except OSError as exc:
            self.log.error("cannot serve /metrics on %s:%s (%s): running without it (--metrics-listen)",
                           listen[0], listen[1], exc.strerror or exc)
            return
        self.metrics_server.start_in_thread()
        self.log.info("agent metrics on http://%s/metrics", self.metrics_server.address)

    def run(self) -> int:
        """Run until asked to stop; then tell the manager and return 0 (kernels keep running)."""
        self.start()
        while not self._stop.wait(0.5):
            pass
        self.shutdown()
        return 0

    def request_stop(self) -> None:
        """Ask the loops to end (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def poke(self) -> None:
        """Sync now (the manager's desired state changed)."""
        self._wake.set()

    def shutdown(self) -> None:
        """Stop the loops, POST /shutdown and release connections; kernels are left running."""
        self.request_stop()
        if self._sync_thread is not None and self._sync_thread is not threading.current_thread():
            self._sync_thread.join(timeout=3.0)  # no sync may land after the shutdown call
        try:
            self.client.shutdown(self.agent_id, timeout=3.0)
            self.log.info("agent %s shut down; kernels keep running", self.agent_id)
        except ManagerError as exc:
            self.log.warning("could not tell the manager about the shutdown: %s", exc)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        for closer in (self.backend.close, self.client.close, getattr(self.gpu_probe, "close", None)):
            if closer is not None:
                try:
                    closer()
                except Exception:  # noqa: BLE001 - best effort at exit
                    self.log.debug("close failed", exc_info=True)

    # -- the sync -------------------------------------------------------------------------------
    def build_sync_body(self) -> tuple[dict[str, Any], list[str]]:
        """The sync request, and the ids of the final states it delivers."""
        kernels = {k.kernel_id: k for k in self.backend.list_kernels()}
        with self._lock:
            for kernel_id, op in self._inflight.items():
                if op == "restart":  # passing through TERMINATED must not reach the manager
                    kernels.pop(kernel_id, None)
            finals = {k: v for k, v in self._final.items() if k not in kernels}
        kernels.update(finals)
        for kernel_id, state in kernels.items():
            state.restart_id = self.restarts.get(kernel_id)
        try:
            with self.metrics.stat_task("container"):
                kernel_stats = self.backend.stats()
        except Exception as exc:  # noqa: BLE001 - stats are optional
            self.log.debug("kernel stats failed: %s", exc)
            kernel_stats = {}
        readings = self.gpu_probe.readings() if self.gpu_probe is not None else []
        bindings = self._gpu_bindings() if readings else {}
        for kernel_id, state in kernels.items():
            state.stats = kernel_stats.get(kernel_id) if state.status is ReportedStatus.RUNNING else None
            if state.stats is not None and kernel_id in bindings:
                state.stats = {**state.stats, **kernel_gpu_stats(readings, bindings[kernel_id])}
        self.metrics.record_kernels(kernels)
        with self.metrics.stat_task("node"):
            stats: dict[str, Any] = dict(self.host_stats.snapshot())
        if readings:
            stats["devices"] = {"cuda.device": [r.to_wire() for r in readings]}
        body: dict[str, Any] = {
            "agent_id": self.agent_id,
            "scaling_group": self.config.scaling_group,
            "region": self.config.region,
            "version": __version__,
            "architecture": normalize_architecture(platform.machine()),
            "backend": self.backend.name,
            "capacity": self.resources.capacity(),
            "slot_types": self.resources.slot_types(),
            "compute_plugins": self.resources.compute_plugins(),
            "devices": self.resources.devices(),
            "images": self.backend.images(),
            "stats": stats,
            "kernels": [k.to_wire() for k in kernels.values()],
        }
        if self.config.address:
            body["address"] = self.config.address
        if self.config.public_host:
            body["public_host"] = self.config.public_host
        if self.metrics_server is not None:  # a wildcard host: the manager puts `address` (or ours) instead
            body["metrics_address"] = self.metrics_server.address
        return body, list(finals)

    def _gpu_bindings(self) -> dict[str, list[str]]:
        """The GPUs each running kernel is bound to (``{}`` when the backend cannot say)."""
        try:
            return self.backend.gpu_bindings()
        except Exception as exc:  # noqa: BLE001 - stats are optional
            self.log.debug("kernel GPU bindings failed: %s", exc)
            return {}

    def sync_once(self) -> float:
        """One sync round; returns how long to wait before the next one."""
        self.metrics.sync_trigger.inc()
        try:
            body, delivered = self.build_sync_body()
        except Exception as exc:  # noqa: BLE001 - e.g. the Docker engine is down
            self.metrics.sync_failure.labels(type(exc).__name__).inc()
            delay = self.backoff.next()
            self.log.error("cannot collect the kernel states (%s: %s); retrying in %.1fs", type(exc).__name__, exc,
                           delay)
            return delay
        wait = self._long_poll_wait()
        sent = self._fingerprint
        if wait:
            body["wait"], body["fingerprint"] = wait, sent
        started = time.monotonic()
        try:
            answer = self.client.sync(body, wait=wait)
        except AuthRejected as exc:
            self.metrics.sync_failure.labels("AuthRejected").inc()
            self.failures += 1
            self.log.error("the manager refused this agent (%s): check the token, agent id %r and scaling group %r; "
                           "retrying in %.0fs", exc, self.agent_id, self.config.scaling_group, self.auth_retry)
            return self.auth_retry
        except ManagerUnavailable as exc:
            self.metrics.sync_failure.labels("ManagerUnavailable").inc()
            self.failures += 1
            delay = self.backoff.next()
            level = logging.WARNING if self.failures == 1 or self.failures % 10 == 0 else logging.DEBUG
            self.log.log(level, "manager unreachable (%s); kernels keep running; retry #%d in %.1fs", exc,
                         self.failures, delay)
            return delay
        except ManagerRejected as exc:
            self.metrics.sync_failure.labels("ManagerRejected").inc()
            self.failures += 1
            delay = self.backoff.next()
            self.log.error("the manager rejected the sync (%s); retrying in %.1fs", exc, delay)
            return delay
        if self.failures:
            self.log.info("manager reachable again after %d failed attempt(s)", self.failures)
        self.failures = 0
        self.backoff.reset()
        self.syncs += 1
        self.log.debug("sync #%d done (%s)", self.syncs, f"held up to {wait:.0f}s" if wait else "not held")
        self._delivered(delivered)
        self.last_answer = answer
        if not self.stopping:
            self.apply(answer)
        self.metrics.sync_success.inc()
        if self.use_link and self.link is None and not self.stopping:
            self.link = ManagerLink(self.client.link_url(self.agent_id), self.client.auth_header, self.poke,
                                    self._stop, missing_retry=self.link_missing_retry, streams=self.streams)
            self.link.start()
        return self._next_delay(answer, sent, wait, time.monotonic() - started)

    def _long_poll_wait(self) -> float:
        """The ``wait`` of the next sync (0: an ordinary sync)."""
        if self.long_poll <= 0 or not self._fingerprint or self._manager_max_wait <= 0:
            return 0.0
        return min(self.long_poll, self._manager_max_wait)

    def _next_delay(self, answer: dict[str, Any], sent: str | None, wait: float, took: float) -> float:
        fingerprint = answer.get("fingerprint")
        max_wait = answer.get("max_wait")
        self._fingerprint = fingerprint if isinstance(fingerprint, str) and fingerprint else None
        self._manager_max_wait = float(max_wait) if isinstance(max_wait, (int, float)) and max_wait > 0 else 0.0
        if self.long_poll <= 0 or self._fingerprint is None or self._manager_max_wait <= 0:
            return self.sync_interval  # the manager does not hold syncs, or long polls are off here
        if wait and self._fingerprint == sent and took < min(1.0, wait / 2):
            self._quick_unchanged += 1  # answered at once although nothing changed (hints without news)
        else:
            self._quick_unchanged = 0
        if self._quick_unchanged >= 3:
            self._quick_unchanged = 0
            self.log.debug("held syncs come back at once without news; pausing %.1fs", self.sync_interval)
            return self.sync_interval
        return 0.0

    def _sync_loop(self) -> None:
        while not self.stopping:
            self._wake.clear()
            try:
                delay = self.sync_once()
            except Exception:  # noqa: BLE001 - the loop must survive anything
                delay = self.backoff.next()
                self.log.exception("sync failed unexpectedly; retrying in %.1fs", delay)
            self._wake.wait(delay)

    def _delivered(self, kernel_ids: Iterable[str]) -> None:
        with self._lock:
            for kernel_id in kernel_ids:
                self._final.pop(kernel_id, None)
                self._reported.pop(kernel_id, None)
        for kernel_id in kernel_ids:
            self.restarts.forget(kernel_id)

    # -- applying the answer --------------------------------------------------------------------
    def apply(self, answer: dict[str, Any]) -> None:
        """Converge towards the manager's answer (idempotent)."""
        interval = answer.get("sync_interval")
        try:
            if interval is not None and float(interval) > 0:
                new = min(max(float(interval), 0.2), 300.0)
                if new != self.sync_interval:
                    self.log.info("sync interval is now %.1fs (manager)", new)
                    self.sync_interval = new
        except (TypeError, ValueError):
            self.log.warning("ignoring a bad sync_interval %r", interval)
        status = (answer.get("status"), answer.get("schedulable"))
        if status != self._last_status:
            self.log.info("manager sees this agent as %s (schedulable: %s)", *status)
            self._last_status = status

        stops = {}
        for item in answer.get("stop") or []:
            if isinstance(item, dict) and item.get("kernel_id"):
                stops[str(item["kernel_id"])] = str(item.get("reason") or "user-requested")
        present = {k.kernel_id: k for k in self.backend.list_kernels()}

        for item in answer.get("desired") or []:
            try:
                spec = KernelSpec.from_wire(item)
            except SpecError as exc:
                self._reject(item, exc)
                continue
            kernel_id = spec.kernel_id
            with self._lock:
                skip = (kernel_id in present or kernel_id in self._inflight or kernel_id in self._final
                        or kernel_id in self.finished or kernel_id in stops)
                if not skip:
                    self._inflight[kernel_id] = "create"
            if not skip:
                self._spawn(self._create_worker, spec, name=f"create-{kernel_id[:8]}")

        for kernel_id, reason in stops.items():
            with self._lock:
                op = self._inflight.get(kernel_id)
                if op == "create":
                    self._deferred_stops[kernel_id] = reason
                    continue
                if op == "stop":
                    continue
                if kernel_id not in present:
                    if kernel_id not in self._final:
                        self.finished.add(kernel_id)  # never start it later
                    continue
                self._inflight[kernel_id] = "stop"
            self._spawn(self._stop_worker, kernel_id, reason, name=f"stop-{kernel_id[:8]}")

        for item in answer.get("restart") or []:
            if not isinstance(item, dict) or not item.get("kernel_id"):
                continue
            kernel_id, restart_id = str(item["kernel_id"]), str(item.get("restart_id") or "")
            if kernel_id in stops or self.restarts.get(kernel_id) == restart_id:
                continue  # already applied (or going away anyway)
            with self._lock:
                if kernel_id in self._inflight or kernel_id not in present:
                    continue  # retried at a later sync
                self._inflight[kernel_id] = "restart"
            self._spawn(self._restart_worker, kernel_id, restart_id, name=f"restart-{kernel_id[:8]}")

        for kernel_id in answer.get("want_logs") or []:
            state = present.get(str(kernel_id))
            if state is None:
                continue
            with self._lock:
                if str(kernel_id) in self._inflight:
                    continue
            state.last_logs = self.backend.logs(state.kernel_id)
            state.restart_id = self.restarts.get(state.kernel_id)
            self.log.info("kernel %s: sending its logs (%d characters) as asked", state.kernel_id,
                          len(state.last_logs or ""))
            self._events.put(state.to_event())

    def _reject(self, item: Any, exc: SpecError) -> None:
        kernel_id = item.get("kernel_id") if isinstance(item, dict) else None
        self.log.error("kernel %s: cannot understand the desired kernel: %s", kernel_id, exc)
        if not kernel_id or kernel_id in self.finished:
            return
        state = KernelState(str(kernel_id), item.get("session_id"), ReportedStatus.ERROR, reason="invalid-spec",
                            last_logs=tail_text(str(exc)))
        with self._lock:
            if str(kernel_id) in self._final:
                return
            self._final[str(kernel_id)] = state
        self.finished.add(str(kernel_id))
        self._observe(state)

    def _spawn(self, target: Any, *args: Any, name: str) -> None:
        threading.Thread(target=target, args=args, name=name, daemon=True).start()

    def _create_worker(self, spec: KernelSpec) -> None:
        kernel_id = spec.kernel_id
        self.log.info("kernel %s: creating (session %s, image %s, slots %s)", kernel_id, spec.session_id, spec.image,
                      {k: str(v) for k, v in spec.slots.items()})
        try:
            state = self.backend.create(spec, emit=self._observe)
            self._observe(state)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an ERROR report
            if isinstance(exc, KernelError):
                reason, detail = exc.reason, exc.detail
                self.log.error("kernel %s: creation failed: %s", kernel_id, exc)
            else:
                reason, detail = "failed-to-start", f"{type(exc).__name__}: {exc}"
                self.log.exception("kernel %s: creation failed unexpectedly", kernel_id)
            state = KernelState(kernel_id, spec.session_id, ReportedStatus.ERROR, host=self.config.kernel_host,
                                reason=reason, last_logs=tail_text(detail) if detail else None)
            with self._lock:
                self._final[kernel_id] = state
            self.finished.add(kernel_id)
            self._observe(state)
        finally:
            with self._lock:
                self._inflight.pop(kernel_id, None)
                deferred = self._deferred_stops.pop(kernel_id, None)
                if deferred is not None:
                    self._inflight[kernel_id] = "stop"
            if deferred is not None:
                self._stop_worker(kernel_id, deferred)

    def _restart_worker(self, kernel_id: str, restart_id: str) -> None:
        try:
            state = self.backend.restart(kernel_id)
            if state is None:
                self.log.warning("kernel %s: asked to restart a kernel this agent does not have", kernel_id)
                return
            self.restarts.set(kernel_id, restart_id)
            state.restart_id = restart_id
            with self._lock:
                self._reported[kernel_id] = state.status.value
            self.log.info("kernel %s restarted (restart id %s): %s", kernel_id, restart_id, state.status.value)
            self._events.put(state.to_event())
        except Exception:  # noqa: BLE001 - not recorded as applied: retried at the next sync
            self.log.exception("kernel %s: restart failed; will retry", kernel_id)
        finally:
            with self._lock:
                self._inflight.pop(kernel_id, None)

    def _stop_worker(self, kernel_id: str, reason: str) -> None:
        try:
            final = self.backend.stop(kernel_id, reason)
            if final is not None:
                with self._lock:
                    self._final[kernel_id] = final
                self.finished.add(kernel_id)
                self._observe(final)
        except Exception:  # noqa: BLE001 - retried at the next sync
            self.log.exception("kernel %s: stopping failed; will retry", kernel_id)
        finally:
            with self._lock:
                self._inflight.pop(kernel_id, None)

    # -- events ---------------------------------------------------------------------------------
    def _observe(self, state: KernelState) -> None:
        """Queue an event if the kernel's status changed since the last one."""
        with self._lock:
            if self._reported.get(state.kernel_id) == state.status.value:
                return
            self._reported[state.kernel_id] = state.status.value
        self.log.info("kernel %s is %s%s", state.kernel_id, state.status.value,
                      f" (exit code {state.exit_code}, {state.reason})" if state.status.final else "")
        self._events.put(state.to_event())

    def _watch_loop(self) -> None:
        while not self._stop.wait(self.watch_interval):
            try:
                self.backend.check_timeouts()
                for state in self.backend.list_kernels():
                    with self._lock:
                        busy = self._inflight.get(state.kernel_id) in ("stop", "restart")
                    if not busy:  # those workers report the outcome themselves
                        state.restart_id = self.restarts.get(state.kernel_id)
                        self._observe(state)
            except Exception as exc:  # noqa: BLE001 - keep watching
                self.log.debug("watch failed: %s", exc, exc_info=True)

    def _event_loop(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._events.get(timeout=0.5)]
            except queue.Empty:
                continue
            while len(batch) < 100:
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            try:
                self.client.post_events(self.agent_id, batch)
            except ManagerRejected as exc:
                self.log.warning("the manager rejected %d event(s) (%s); the next sync carries them", len(batch), exc)
            except ManagerError as exc:
                self.log.debug("posting %d event(s) failed (%s); the next sync carries them", len(batch), exc)
