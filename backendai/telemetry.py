"""The ``backendai_*`` Prometheus metrics of the reference (§12), in one place.

Plumbing: it imports no app.  Every metric object lives in prometheus_client's
default registry and is multiprocess-safe: counters and histograms are shared
through ``PROMETHEUS_MULTIPROC_DIR`` when it is set (daphne, celery, the daemons
of ``manage.py stack`` each write their own files; whoever scrapes sums them);
gauges name their ``multiprocess_mode``.  The process gauges (CPU, memory) are
a collector read at scrape time; in multiprocess mode it reads each live
process that writes into the directory and labels it with its ``pid``.

The ``observe_*`` helpers never raise: a metrics failure must not fail the work
it measures.  Labels are bounded (route patterns, problem slugs, event and task
names from our code, never ids or raw paths).
"""
from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://api.backend.ai/probs/"
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SLOW_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600)

# --- API ----------------------------------------------------------------------------------------
API_LABELS = ["method", "endpoint", "domain", "operation", "error_detail", "status_code"]
API_REQUEST_COUNT = Counter("backendai_api_request_count", "API requests by route pattern and outcome", API_LABELS)
API_REQUEST_DURATION = Histogram("backendai_api_request_duration_sec", "API request duration in seconds",
                                 API_LABELS, buckets=FAST_BUCKETS)

GRAPHQL_LABELS = ["operation_type", "field_name", "error_detail", "success"]
GRAPHQL_REQUEST_COUNT = Counter("backendai_graphql_request_count",
                                "GraphQL operations by type, top-level field and outcome", GRAPHQL_LABELS)
GRAPHQL_REQUEST_DURATION = Histogram("backendai_graphql_request_duration_sec",
                                     "GraphQL operation duration in seconds", GRAPHQL_LABELS, buckets=FAST_BUCKETS)

# --- actions (service layer; backendai.actions calls observe_action) ---------------------------
ACTION_COUNT = Counter("backendai_action_count", "Service-layer actions by domain, operation and outcome",
                       ["domain", "operation", "success", "error_detail"])
ACTION_DURATION = Histogram("backendai_action_duration_sec", "Service-layer action duration in seconds",
                            ["domain", "operation", "success"], buckets=FAST_BUCKETS)
ACTION_ENTITY_COUNT = Counter("backendai_action_entity_count", "Entities touched by service-layer actions",
                              ["domain", "operation"])

# --- layers (DB, Redis, agent link, storage proxy) ---------------------------------------------
LAYER_OPERATION_COUNT = Counter("backendai_layer_operation_count", "Layer operations that completed",
                                ["layer", "operation", "success"])
LAYER_OPERATION_DURATION = Histogram("backendai_layer_operation_duration_sec", "Layer operation duration in seconds",
                                     ["layer", "operation", "success"], buckets=FAST_BUCKETS)
LAYER_OPERATION_ERROR_COUNT = Counter("backendai_layer_operation_error_count", "Layer operations that failed",
                                      ["layer", "operation", "error_detail"])
LAYER_OPERATION_TRIGGERED_COUNT = Counter("backendai_layer_operation_triggered_count", "Layer operations started",
                                          ["layer", "operation"])
LAYER_RETRY_COUNT = Counter("backendai_layer_retry_count", "Layer operations retried", ["layer", "operation"])

# --- events -------------------------------------------------------------------------------------
EVENT_COUNT = Counter("backendai_event_count", "Events handled by name", ["event_name"])
EVENT_FAILURE_COUNT = Counter("backendai_event_failure_count", "Events whose handling failed", ["event_name"])
EVENT_PROCESSING_TIME = Histogram("backendai_event_processing_time_sec", "Event handling time in seconds",
                                  ["event_name"], buckets=FAST_BUCKETS)
EVENT_PROPAGATOR_COUNT = Gauge("backendai_event_propagator_count",
                               "Event propagators (SSE and in-process subscribers) open now", ["kind"],
                               multiprocess_mode="livesum")
EVENT_PROPAGATOR_ALIAS_COUNT = Gauge("backendai_event_propagator_alias_count",
                                     "Aliases (subscribed event names) of the open propagators", ["kind"],
                                     multiprocess_mode="livesum")
EVENT_PROPAGATOR_REGISTRATION_COUNT = Counter("backendai_event_propagator_registration_count",
                                              "Event propagators registered", ["kind"])
EVENT_PROPAGATOR_UNREGISTRATION_COUNT = Counter("backendai_event_propagator_unregistration_count",
                                                "Event propagators unregistered", ["kind"])

# --- background and async tasks -----------------------------------------------------------------
BGTASK_COUNT = Counter("backendai_bgtask_count", "Background tasks started by a worker, by name", ["name"])
BGTASK_DONE_COUNT = Counter("backendai_bgtask_done_count", "Background tasks that ended, by name and final status",
                            ["name", "status"])
BGTASK_PROCESSING_TIME = Histogram("backendai_bgtask_processing_time_sec",
                                   "Time from a worker claiming a background task to its end, in seconds",
                                   ["name"], buckets=SLOW_BUCKETS)
ASYNC_TASK_COUNT = Gauge("backendai_async_task_count", "asyncio tasks and daemon loops running now", ["kind"],
                         multiprocess_mode="livesum")

# --- sweepers and scheduler stages ---------------------------------------------------------------
SWEEP_SESSION_COUNT = Counter("backendai_sweep_session_count", "Sessions swept (ended by a sweeper)", ["reason"])
SWEEP_KERNEL_COUNT = Counter("backendai_sweep_kernel_count", "Kernels swept (ended by a sweeper)", ["reason"])
STAGE_COUNT = Counter("backendai_stage_count", "Scheduler stages run, by stage and result", ["stage", "result"])
STAGE_DURATION = Histogram("backendai_stage_duration_sec", "Scheduler stage duration in seconds", ["stage"],
                           buckets=FAST_BUCKETS)


# --- error labels --------------------------------------------------------------------------------
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
_DETAIL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# slug -> (domain, operation, error_detail); a slug not listed: ("api", "generic", slug)
_KNOWN: dict[str, tuple[str, str, str]] = {
    "url-not-found": ("api", "route", "not-found"),
    "object-not-found": ("api", "read", "not-found"),
    "generic-bad-request": ("api", "generic", "bad-request"),
    "invalid-api-params": ("api", "parsing", "invalid-parameters"),
    "invalid-auth-params": ("auth", "auth", "invalid-parameters"),
    "invalid-credentials": ("auth", "auth", "invalid-credentials"),
    "auth-failed": ("auth", "auth", "unauthorized"),
    "password-expired": ("auth", "auth", "password-expired"),
    "generic-forbidden": ("api", "access", "forbidden"),
    "insufficient-privilege": ("api", "access", "forbidden"),
    "method-not-allowed": ("api", "route", "method-not-allowed"),
    "quota-exceeded": ("api", "create", "quota-exceeded"),
    "rate-limit-exceeded": ("api", "generic", "rate-limited"),
    "internal-server-error": ("api", "generic", "internal-error"),
    "service-unavailable": ("api", "generic", "unavailable"),
    "instance-not-available": ("agent", "schedule", "unavailable"),
    "session-already-exists": ("session", "create", "already-exists"),
    "too-many-sessions-matched": ("session", "read", "ambiguous"),
    "too-many-vfolders": ("vfolder", "read", "ambiguous"),
    "vfolder-creation-failed": ("vfolder", "create", "failed"),
    "vfolder-already-exists": ("vfolder", "create", "already-exists"),
    "vfolder-operation-failed": ("vfolder", "generic", "failed"),
    "vfolder-permission-error": ("vfolder", "access", "forbidden"),
    "upload-offset-conflict": ("vfolder", "upload", "conflict"),
    "payload-too-large": ("api", "parsing", "too-large"),
    "unsupported-media-type": ("api", "parsing", "unsupported-media-type"),
    "range-not-satisfiable": ("vfolder", "download", "range-not-satisfiable"),
    "unsupported-tus-version": ("vfolder", "upload", "unsupported-version"),
    "graphql-error": ("graphql", "generic", "bad-request"),
}
_DOMAIN_PREFIXES = ("session", "kernel", "vfolder", "agent", "image", "user", "group", "domain", "keypair",
                    "endpoint", "model", "storage", "bgtask", "graphql", "auth", "resource", "scaling-group")


def error_from_problem(type_url: str) -> tuple[str, str, str]:
    """``(domain, operation, error_detail)`` of a problem+json ``type`` URL; ``("", "", "")`` for none.

    A slug this module does not know gives its domain from its first word when that names one of
    ours (else ``api``), operation ``generic`` and the slug itself as the detail; anything that is not
    a well-formed slug is ``unknown`` (the label set stays bounded whatever a body says).
    """
    try:
        if not type_url:
            return ("", "", "")
        slug = type_url[len(PROBLEM_BASE):] if type_url.startswith(PROBLEM_BASE) else type_url.rsplit("/", 1)[-1]
        known = _KNOWN.get(slug)
        if known:
            return known
        if not _SLUG.match(slug):
            return ("api", "generic", "unknown")
        domain = next((d for d in _DOMAIN_PREFIXES if slug == d or slug.startswith(d + "-")), "api")
        return (domain, "generic", slug)
    except Exception:  # noqa: BLE001 - metrics never fail the work
        return ("api", "generic", "unknown")


# --- recording helpers (never raise) -------------------------------------------------------------

def _guard(what: str):
    log.debug("metrics: recording %s failed", what, exc_info=True)


def observe_api_request(method: str, endpoint: str, status_code: int, seconds: float,
                        domain: str = "", operation: str = "", error_detail: str = "") -> None:
    try:
        labels = dict(method=method, endpoint=endpoint, domain=domain, operation=operation,
                      error_detail=error_detail, status_code=str(status_code))
        API_REQUEST_COUNT.labels(**labels).inc()
        API_REQUEST_DURATION.labels(**labels).observe(max(seconds, 0.0))
    except Exception:  # noqa: BLE001
        _guard("api request")


def observe_graphql(operation_type: str, field_name: str, *, success: bool, seconds: float,
                    error_detail: str = "") -> None:
    try:
        labels = dict(operation_type=operation_type, field_name=field_name, error_detail=error_detail,
                      success="true" if success else "false")
        GRAPHQL_REQUEST_COUNT.labels(**labels).inc()
        GRAPHQL_REQUEST_DURATION.labels(**labels).observe(max(seconds, 0.0))
    except Exception:  # noqa: BLE001
        _guard("graphql")


def observe_action(domain: str, operation: str, *, success: bool, seconds: float, error_detail: str = "",
                   entity_count: int = 1) -> None:
    try:
        flag = "true" if success else "false"
        if error_detail and not _DETAIL.match(error_detail):  # a slug or a class name; never free text
            error_detail = "unknown"
        ACTION_COUNT.labels(domain=domain, operation=operation, success=flag, error_detail=error_detail).inc()
        ACTION_DURATION.labels(domain=domain, operation=operation, success=flag).observe(max(seconds, 0.0))
        if entity_count > 0:
            ACTION_ENTITY_COUNT.labels(domain=domain, operation=operation).inc(entity_count)
    except Exception:  # noqa: BLE001
        _guard("action")


def _error_detail(exc: BaseException) -> str:
    slug = getattr(exc, "error_type", None)
    if isinstance(slug, str) and _SLUG.match(slug):
        return slug
    return type(exc).__name__[:48]


@contextmanager
def layer_operation(layer: str, operation: str) -> Iterator[None]:
    """Measure one operation of a layer (``db``, ``redis``, ``agent``, ``storage_proxy``, ...).

    Counts it as triggered on entry; on exit as completed (with ``success``) and its duration, and as
    an error (``error_detail``: the exception's problem slug or class name) when it raised.  The
    exception goes on unchanged.
    """
    try:
        LAYER_OPERATION_TRIGGERED_COUNT.labels(layer=layer, operation=operation).inc()
    except Exception:  # noqa: BLE001
        _guard("layer trigger")
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        _layer_done(layer, operation, time.perf_counter() - started, exc)
        raise
    _layer_done(layer, operation, time.perf_counter() - started, None)


def _layer_done(layer: str, operation: str, seconds: float, exc: BaseException | None) -> None:
    try:
        flag = "true" if exc is None else "false"
        LAYER_OPERATION_COUNT.labels(layer=layer, operation=operation, success=flag).inc()
        LAYER_OPERATION_DURATION.labels(layer=layer, operation=operation, success=flag).observe(max(seconds, 0.0))
        if exc is not None:
            LAYER_OPERATION_ERROR_COUNT.labels(layer=layer, operation=operation,
                                               error_detail=_error_detail(exc)).inc()
    except Exception:  # noqa: BLE001
        _guard("layer operation")


def observe_retry(layer: str, operation: str) -> None:
    try:
        LAYER_RETRY_COUNT.labels(layer=layer, operation=operation).inc()
    except Exception:  # noqa: BLE001
        _guard("retry")


def observe_event(name: str, *, seconds: float, failed: bool = False) -> None:
    try:
        EVENT_COUNT.labels(event_name=name).inc()
        EVENT_PROCESSING_TIME.labels(event_name=name).observe(max(seconds, 0.0))
        if failed:
            EVENT_FAILURE_COUNT.labels(event_name=name).inc()
    except Exception:  # noqa: BLE001
        _guard("event")


@contextmanager
def handling_event(name: str) -> Iterator[None]:
    """Measure the handling of one event; an exception counts as a failure and goes on."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        observe_event(name, seconds=time.perf_counter() - started, failed=True)
        raise
    observe_event(name, seconds=time.perf_counter() - started)


def propagator_registered(kind: str, aliases: int = 1) -> None:
    try:
        EVENT_PROPAGATOR_REGISTRATION_COUNT.labels(kind=kind).inc()
        EVENT_PROPAGATOR_COUNT.labels(kind=kind).inc()
        EVENT_PROPAGATOR_ALIAS_COUNT.labels(kind=kind).inc(aliases)
    except Exception:  # noqa: BLE001
        _guard("propagator registration")


def propagator_unregistered(kind: str, aliases: int = 1) -> None:
    try:
        EVENT_PROPAGATOR_UNREGISTRATION_COUNT.labels(kind=kind).inc()
        EVENT_PROPAGATOR_COUNT.labels(kind=kind).dec()
        EVENT_PROPAGATOR_ALIAS_COUNT.labels(kind=kind).dec(aliases)
    except Exception:  # noqa: BLE001
        _guard("propagator unregistration")


@contextmanager
def propagating(kind: str, aliases: int = 1) -> Iterator[None]:
    """An event propagator (an SSE stream, an in-process subscriber) open for the block."""
    propagator_registered(kind, aliases)
    try:
        yield
    finally:
        propagator_unregistered(kind, aliases)


async def propagated(stream, kind: str):
    """Relay an async stream (an SSE response's body) as an event propagator and an async task in
    flight, for as long as the client follows it (the server closes the generator when it leaves)."""
    with propagating(kind), async_task(kind):
        async for chunk in stream:
            yield chunk


def observe_bgtask_started(name: str) -> None:
    try:
        BGTASK_COUNT.labels(name=name).inc()
    except Exception:  # noqa: BLE001
        _guard("bgtask start")


def observe_bgtask_done(name: str, status: str, seconds: float | None) -> None:
    try:
        BGTASK_DONE_COUNT.labels(name=name, status=status).inc()
        if seconds is not None:
            BGTASK_PROCESSING_TIME.labels(name=name).observe(max(seconds, 0.0))
    except Exception:  # noqa: BLE001
        _guard("bgtask done")


@contextmanager
def async_task(kind: str) -> Iterator[None]:
    """An asyncio task or daemon loop in flight for the block (``backendai_async_task_count``)."""
    try:
        ASYNC_TASK_COUNT.labels(kind=kind).inc()
    except Exception:  # noqa: BLE001
        _guard("async task")
    try:
        yield
    finally:
        try:
            ASYNC_TASK_COUNT.labels(kind=kind).dec()
        except Exception:  # noqa: BLE001
            _guard("async task")


async def _tracked(coro, kind: str):
    with async_task(kind):
        return await coro


def spawn(coro, kind: str):
    """``asyncio.create_task(coro)``, counted in ``backendai_async_task_count{kind}`` while it runs."""
    import asyncio

    return asyncio.create_task(_tracked(coro, kind))


def observe_sweep(kind: str, count: int, reason: str = "") -> None:
    """Sessions or kernels (``kind``: ``session``/``kernel``) a sweeper ended."""
    try:
        if count <= 0:
            return
        metric = SWEEP_SESSION_COUNT if kind == "session" else SWEEP_KERNEL_COUNT
        metric.labels(reason=reason or "sweep").inc(count)
    except Exception:  # noqa: BLE001
        _guard("sweep")


def observe_stage(stage: str, result: str, seconds: float | None = None) -> None:
    try:
        STAGE_COUNT.labels(stage=stage, result=result).inc()
        if seconds is not None:
            STAGE_DURATION.labels(stage=stage).observe(max(seconds, 0.0))
    except Exception:  # noqa: BLE001
        _guard("stage")


@contextmanager
def stage(name: str) -> Iterator[None]:
    """One stage of a scheduler pass (``snapshot``, ``decide``, ``write``, ``occupancy``, ...)."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        observe_stage(name, "failure", time.perf_counter() - started)
        raise
    observe_stage(name, "success", time.perf_counter() - started)


# --- the database layer ---------------------------------------------------------------------------

_SQL_KINDS = frozenset({"select", "insert", "update", "delete", "with", "savepoint", "release", "rollback",
                        "set", "begin", "commit", "create", "alter", "drop", "truncate", "lock", "copy"})


def sql_kind(sql) -> str:
    """The statement's first keyword, lower case (``select``, ``update``, ...; ``other``)."""
    try:
        head = str(sql).lstrip(" \t\n(")[:12].split(None, 1)[0].lower()
    except (IndexError, TypeError):
        return "other"
    return head if head in _SQL_KINDS else "other"


def db_execute_wrapper(execute, sql, params, many, context):
    """A Django ``execute_wrapper``: every statement as ``backendai_layer_operation_*{layer="db"}``."""
    with layer_operation("db", sql_kind(sql) + ("_many" if many else "")):
        return execute(sql, params, many, context)


def _wrap_connection(sender, connection, **kwargs) -> None:
    if db_execute_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(db_execute_wrapper)


def install_db_metrics() -> None:
    """Measure every statement of every connection this process opens (``AppConfig.ready``)."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    connection_created.connect(_wrap_connection, dispatch_uid="backendai.telemetry.db")
    for conn in connections.all(initialized_only=True):
        _wrap_connection(None, conn)


# --- process usage (CPU, memory) ------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MULTIPROC_FILE = re.compile(r"_(\d+)\.db$")


def _proc_times(pid: int) -> tuple[float, float, int, int] | None:
    """(cpu seconds, started seconds-after-boot, rss bytes, vms bytes) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): utime=14, stime=15, starttime=22, vsize=23, rss=24
        cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        started = int(fields[19]) / _CLOCK_TICKS
        vms = int(fields[20])
        rss = int(fields[21]) * _PAGE_SIZE
        return cpu, started, rss, vms
    except (OSError, ValueError, IndexError):
        return None


def _uptime() -> float | None:
    try:
        with open("/proc/uptime", "rb") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class ProcessUsageCollector:
    """``backendai_cpu_usage_percent`` and ``backendai_memory_used_rss``/``_vms``, read at scrape time.

    Per process, labelled ``pid``: this process alone, or, in multiprocess mode, every live process
    that writes metrics into ``PROMETHEUS_MULTIPROC_DIR``.  CPU usage is the share of one CPU the
    process used since the previous scrape (since it started, at the first scrape).
    """

    def __init__(self, multiproc_dir: str | None = None):
        self.multiproc_dir = multiproc_dir
        self._last: dict[int, tuple[float, float]] = {}  # pid -> (cpu seconds, wall seconds)

    def pids(self) -> list[int]:
        if not self.multiproc_dir:
            return [os.getpid()]
        found = {os.getpid()}
        try:
            for name in os.listdir(self.multiproc_dir):
                match = _MULTIPROC_FILE.search(name)
                if match:
                    found.add(int(match.group(1)))
        except OSError:
            pass
        return sorted(pid for pid in found if os.path.exists(f"/proc/{pid}"))

    def collect(self):
        cpu = GaugeMetricFamily("backendai_cpu_usage_percent", "CPU usage of the process, percent of one CPU",
                                labels=["pid"])
        rss = GaugeMetricFamily("backendai_memory_used_rss", "Resident memory of the process in bytes",
                                labels=["pid"])
        vms = GaugeMetricFamily("backendai_memory_used_vms", "Virtual memory of the process in bytes",
                                labels=["pid"])
        try:
            uptime = _uptime()
            now = time.monotonic()
            seen = set()
            for pid in self.pids():
                sample = _proc_times(pid)
                if sample is None:
                    continue
                seen.add(pid)
                cpu_s, started, rss_b, vms_b = sample
                last = self._last.get(pid)
                if last is not None and now > last[1]:
                    percent = 100.0 * (cpu_s - last[0]) / (now - last[1])
                elif uptime is not None and uptime > started:
                    percent = 100.0 * cpu_s / (uptime - started)
                else:
                    percent = 0.0
                self._last[pid] = (cpu_s, now)
                label = [str(pid)]
                cpu.add_metric(label, max(percent, 0.0))
                rss.add_metric(label, rss_b)
                vms.add_metric(label, vms_b)
            for pid in set(self._last) - seen:
                del self._last[pid]
        except Exception:  # noqa: BLE001
            _guard("process usage")
        yield cpu
        yield rss
        yield vms


PROCESS_USAGE = ProcessUsageCollector()
_MULTIPROC_USAGE: dict[str, ProcessUsageCollector] = {}


def process_usage_collector(multiproc_dir: str | None = None) -> ProcessUsageCollector:
    """The collector for a scrape: this process's (on ``REGISTRY``), or the one of a multiprocess dir."""
    if not multiproc_dir:
        return PROCESS_USAGE
    collector = _MULTIPROC_USAGE.get(multiproc_dir)
    if collector is None:
        collector = _MULTIPROC_USAGE[multiproc_dir] = ProcessUsageCollector(multiproc_dir)
    return collector


try:
    REGISTRY.register(PROCESS_USAGE)
except ValueError:  # already registered (a module reload in tests)
    pass
