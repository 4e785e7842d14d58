#!/usr/bin/env python
"""Benchmark: what observability costs on the hot path of the signed API, beside a baseline without it.

    .venv/bin/python bench/observability/run.py [--requests 200] [--sessions 1000] [--agents 100]
        [--scrapes 20] [--breakdown] [--db bai_bench_observability]

The PostgreSQL server is the one ``DATABASE_URL`` names (default ``postgres://postgres@127.0.0.1:5432``);
the bench creates its own scratch database there (``--db``, dropped at the end), migrates it and
seeds one user with a PENDING session.  Through Django's test client in this process (the time is
the server's: middleware, authentication, view, queries; no network), signed like the official
client, it times

* ``read``: ``GET /session/<name>`` (the session's info),
* ``write``: ``POST /session/<name>/rename`` (renamed back and forth; one audited service action),
* ``refused``: ``POST /session/<missing>/rename`` (404 before any service: the audit log's refusal middleware),

once with everything on (the settings' ``MIDDLEWARE``, the telemetry ``execute_wrapper`` on the
connection, audit entries written) and once as a baseline with all of it off:

* the middlewares ``backendai.requestlog.RequestLogMiddleware`` (request id, access-log line),
  django-prometheus' two, ``backendai.api.metrics_middleware.APIMetricsMiddleware`` and
  ``backendai.auditlog.AuditRefusalMiddleware`` left out with ``override_settings(MIDDLEWARE=...)``
  (a client of its own, since a client keeps the middleware chain it loaded first);
* ``telemetry.db_execute_wrapper`` removed from the connection and its ``connection_created``
  receiver disconnected (how ``telemetry.install_db_metrics`` installs it);
* the audit INSERT skipped by running the requests as if inside an action already
  (``actions._depth`` at 1: the nesting rule records only the outermost action).  There is no
  setting that turns the audit log off; what this leaves on is the ``backendai_action_*`` counter
  and histogram update of the action (two metric updates, no query).

The modes take turns request by request (``--requests`` per case and mode, after five warm-ups; a
mode is switched on around each of its requests, outside the timed part), so a machine that is
busy with something else slows them alike.  The access log goes to a file in a
temporary directory (``ACCESS_LOG_FILE``), as the embedded stack writes it, and the console log
(the 404s' warnings, in every mode) to another.  It prints p50/p95 per request, SQL statements and
audit entries per request for both modes and the difference; then the time of
``backendai.metrics.exposition()`` (what ``/metrics`` answers: every family plus the database
gauges) with ``--sessions`` sessions and ``--agents`` agents in the database.

``--breakdown`` adds four modes, each with one part off alone (``requestlog``; ``metrics``: the
API metrics and django-prometheus middlewares; ``audit``: the refusal middleware and the INSERT;
``dbwrapper``), and prints what each saves; on a busy machine these differences are within the noise.
Not a test: it exits 0 unless it could not run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import percentile, scratch_database  # noqa: E402  (no Django)

GiB = 2**30
IMAGE = "cr.example.com/stable/python:3.11"
HOST = "testserver"

#: the parts that can be switched off, and their middlewares (the baseline's MIDDLEWARE is the settings' without them)
PARTS = {
    "requestlog": ("backendai.requestlog.RequestLogMiddleware",),
    "metrics": ("django_prometheus.middleware.PrometheusBeforeMiddleware",
                "backendai.api.metrics_middleware.APIMetricsMiddleware",
                "django_prometheus.middleware.PrometheusAfterMiddleware"),
    "audit": ("backendai.auditlog.AuditRefusalMiddleware",),  # + the audit INSERT of the services' actions
    "dbwrapper": (),  # telemetry.db_execute_wrapper
}


def default_server() -> str:
    url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432"
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per case and mode (default 200)")
    parser.add_argument("--sessions", type=int, default=1000,
                        help="sessions in the database for /metrics (default 1000)")
    parser.add_argument("--agents", type=int, default=100, help="agents in the database for /metrics (default 100)")
    parser.add_argument("--scrapes", type=int, default=20, help="timed exposition() calls (default 20)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time each part switched off alone (four more modes)")
    parser.add_argument("--pg", default=default_server(),
                        help="PostgreSQL server URL without a database name (default: DATABASE_URL's server)")
    parser.add_argument("--db", default="bai_bench_observability", help="scratch database (created and dropped)")
    parser.add_argument("--short", action="store_true",
                        help="seconds, for CI (tests/test_bench_short_modes.py): 20 requests, 50 sessions, 5 agents, 3 scrapes")
    args = parser.parse_args(argv)
    if args.short:
        args.requests, args.sessions, args.agents, args.scrapes = 20, 50, 5, 3
    if not 1 <= args.requests <= 100_000 or not 1 <= args.scrapes <= 10_000:
        parser.error("need 1 <= --requests <= 100000 and 1 <= --scrapes <= 10000")
    if not 1 <= args.sessions <= 1_000_000 or not 1 <= args.agents <= 100_000:
        parser.error("need 1 <= --sessions <= 1000000 and 1 <= --agents <= 100000")
    return args


def setup_django(server: str, name: str, data_dir: str) -> None:
    os.environ["DATABASE_URL"] = f"{server.rstrip('/')}/{name}"
    os.environ["BACKEND_DATA_DIR"] = data_dir
    os.environ["ACCESS_LOG_FILE"] = str(Path(data_dir) / "requests.log")
    os.environ.pop("REDIS_URL", None)  # in-process cache and rate limiter in both modes
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process: its own registry
    os.environ["LOG_LEVEL"] = "WARNING"  # the access log (its own file, INFO) stays on
    os.environ["DEBUG"] = "0"  # no connection.queries bookkeeping
    os.environ["DJANGO_SETTINGS_MODULE"] = "backendai.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, HOST]
    call_command("migrate", verbosity=0)
    import logging

    # the 404s' "Not Found" warnings (both modes) still get formatted and written, into a file, not the table
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(open(Path(data_dir) / "console.log", "a", encoding="utf-8"))  # noqa: SIM115 (kept open)


def seed():
    from django.utils import timezone

    from accounts import services as account_services
    from accounts.models import UserRole
    from agents import services as agent_services
    from agents.models import Agent, Image
    from sessions.enqueue import EnqueueRequest, enqueue

    account_services.ensure_defaults()
    owner = account_services.create_user(email="owner@bench.example.com", password="bench-pass-1234",
                                         role=UserRole.USER)
    group = agent_services.ensure_default_scaling_group()
    Image.objects.create(name=IMAGE, registry_name="cr.example.com", repository="stable/python", tag="3.11",
                         architecture="x86_64", resources={"cpu": {"min": "1", "max": None}})
    Agent.objects.create(id="bench-node", scaling_group=group, available_slots={"cpu": "4096", "mem": str(4096 * GiB)},
                         last_heartbeat=timezone.now())
    session = enqueue(owner, owner.main_keypair, EnqueueRequest(image=IMAGE, name="bench-a", enqueue_only=True)).session
    return owner, session


def add_population(template, sessions: int, agents: int) -> None:
    """``sessions`` more sessions (a status mix) and ``agents`` more agents, for the /metrics gauges."""
    from django.utils import timezone

    from agents.models import Agent
    from sessions.models import Session

    statuses = ("RUNNING", "PENDING", "TERMINATED", "PREPARING", "SCHEDULED")
    now = timezone.now()
    for offset in range(0, sessions, 1000):
        Session.objects.bulk_create([
            Session(name=f"pop-{i:07d}", domain_id=template.domain_id, project_id=template.project_id,
                    user_id=template.user_id, access_key_id=template.access_key_id, image=IMAGE,
                    scaling_group=template.scaling_group, requested_slots={"cpu": "1", "mem": str(GiB)},
                    status=statuses[i % len(statuses)])
            for i in range(offset, min(offset + 1000, sessions))])
    Agent.objects.bulk_create([
        Agent(id=f"pop-node-{i:05d}", scaling_group=template.scaling_group, status="ALIVE" if i % 10 else "LOST",
              available_slots={"cpu": "64", "mem": str(256 * GiB)}, last_heartbeat=now)
        for i in range(agents - 1)])  # with the seed's bench-node: ``agents`` in all


# --- the two modes ----------------------------------------------------------------------------------

class Mode:
    """The settings as they are with the ``off`` parts switched off: none (``on``), all (``off``), one."""

    def __init__(self, name: str, keypair, off=()):
        from django.conf import settings
        from django.test import Client

        self.name, self.keypair, self.off = name, keypair, frozenset(off)
        self.client = Client()  # one per mode: a client keeps the middleware chain it loaded first
        removed = {m for part in self.off for m in PARTS[part]}
        self.middleware = [m for m in settings.MIDDLEWARE if m not in removed]

    def __enter__(self):
        from django.db import connection
        from django.db.backends.signals import connection_created
        from django.test.utils import override_settings

        from backendai import actions, telemetry

        self._settings = override_settings(MIDDLEWARE=self.middleware)
        self._settings.enable()
        connection.ensure_connection()
        if "dbwrapper" in self.off:
            connection_created.disconnect(dispatch_uid="backendai.telemetry.db")
            while telemetry.db_execute_wrapper in connection.execute_wrappers:
                connection.execute_wrappers.remove(telemetry.db_execute_wrapper)
        else:
            telemetry.install_db_metrics()
        # "audit" off: as if inside an action already, so the services' actions write no entry of their own
        self._depth = actions._depth.set(1 if "audit" in self.off else 0)
        return self

    def __exit__(self, *exc):
        from backendai import actions

        actions._depth.reset(self._depth)
        self._settings.disable()
        return False

    def call(self, method: str, target: str):
        from backendai import signing

        headers = signing.signed_headers(self.keypair.access_key, self.keypair.secret_key, method, target, HOST,
                                         "text/plain")
        # CONTENT_TYPE: the test client drops it on empty bodies; the official client sends it (and signs it)
        meta = {"CONTENT_TYPE": "text/plain", "HTTP_HOST": HOST, "HTTP_DATE": headers["Date"],
                "HTTP_USER_AGENT": "bench/observability",
                "HTTP_X_BACKENDAI_VERSION": headers["X-BackendAI-Version"],
                "HTTP_AUTHORIZATION": headers["Authorization"]}
        begin = time.perf_counter()
        response = self.client.generic(method, target, b"", content_type="text/plain", **meta)
        return (time.perf_counter() - begin) * 1000, response


class Statements:
    """Counts the statements of a connection, and the INSERTs into the audit log's table among them."""

    def __init__(self, audit_table: str = ""):
        self.count = self.audit = 0
        self.audit_insert = f'INSERT INTO "{audit_table}"' if audit_table else None

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        if self.audit_insert and str(sql).startswith(self.audit_insert):
            self.audit += 1
        return execute(sql, params, many, context)


class Case:
    def __init__(self, name: str, label: str, expected: int, request):
        self.name, self.label, self.expected, self.request = name, label, expected, request


def cases(session) -> list[Case]:
    names = [session.name, session.name + "-b"]  # the session's name now, the next one (both modes share it)

    def read(mode, i):
        return "GET", f"/session/{names[0]}"

    def write(mode, i):
        current, new = names
        names[:] = [new, current]
        return "POST", f"/session/{current}/rename?name={new}"

    def refused(mode, i):
        return "POST", "/session/no-such-session/rename?name=whatever"

    return [Case("read", "GET  /session/<name>", 200, read),
            Case("write", "POST /session/<name>/rename", 204, write),
            Case("refused", "POST /session/<missing>/rename (404)", 404, refused)]


def run_one(mode: Mode, case: Case, i: int, into: dict) -> None:
    """One request of ``case`` in ``mode`` (switched on around it), its time and statements into ``into``."""
    from django.db import connection

    from backendai import telemetry
    from backendai.models import AuditEntry

    with mode:
        if (telemetry.db_execute_wrapper in connection.execute_wrappers) == ("dbwrapper" in mode.off):
            raise SystemExit(f"{mode.name}: the telemetry execute_wrapper is not as the mode says")
        counter = Statements(AuditEntry._meta.db_table)
        with connection.execute_wrapper(counter):
            method, target = case.request(mode, i)
            ms, response = mode.call(method, target)
    if response.status_code != case.expected:
        raise SystemExit(f"{mode.name} {method} {target}: HTTP {response.status_code} {response.content[:300]!r}")
    into["times"].append(ms)
    into["statements"] += counter.count
    into["audit"] += counter.audit
    into["requests"] += 1


def measure(modes: dict[str, Mode], session, requests: int) -> dict:
    """Request by request, every mode in turn (each first in turn), so that a machine busy with
    something else slows every mode alike."""
    the_cases = cases(session)
    results = {(case.name, m): {"times": [], "statements": 0, "audit": 0, "requests": 0}
               for case in the_cases for m in modes}
    order = list(modes)
    for i in range(-5, requests):  # five warm-ups: middleware chains loaded, connection open, code paths hot
        for case in the_cases:
            for name in order[i % len(order):] + order[:i % len(order)]:
                into = results[(case.name, name)] if i >= 0 else {"times": [], "statements": 0, "audit": 0,
                                                                  "requests": 0}
                run_one(modes[name], case, i, into)
    return results


def time_exposition(scrapes: int) -> dict:
    from django.db import connection

    from backendai import metrics

    metrics.exposition()  # warm-up
    counter = Statements()
    times = []
    with connection.execute_wrapper(counter):
        for _ in range(scrapes):
            begin = time.perf_counter()
            body = metrics.exposition()
            times.append((time.perf_counter() - begin) * 1000)
    return {"p50": statistics.median(times), "p95": percentile(times, 0.95), "max": max(times),
            "statements": counter.count / scrapes, "bytes": len(body),
            "samples": sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))}


def main(argv=None) -> int:
    args = parse_args(argv)
    scratch_database(args.pg, args.db)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-observability-") as data_dir:
            setup_django(args.pg, args.db, data_dir)
            owner, session = seed()
            from sessions.models import Session

            modes = {"on": Mode("on", owner.main_keypair), "off": Mode("off", owner.main_keypair, PARTS)}
            if args.breakdown:
                modes.update({f"-{part}": Mode(f"-{part}", owner.main_keypair, [part]) for part in PARTS})
            started = time.perf_counter()
            results = measure(modes, session, args.requests)
            requests_s = time.perf_counter() - started
            add_population(Session.objects.get(pk=session.pk), args.sessions, args.agents)
            scrape = time_exposition(args.scrapes)
            with open(Path(data_dir) / "requests.log", encoding="utf-8") as access_log:
                access_lines = sum(1 for _ in access_log)
            from django.db import connections

            connections.close_all()
    finally:
        scratch_database(args.pg, args.db, drop_only=True)

    print(f"observability on the hot path: server time per signed API request (ms), {args.requests} requests "
          f"per case and mode, the modes taking turns request by request ({requests_s:.1f} s)")
    print("on: the settings' MIDDLEWARE + telemetry execute_wrapper + audit entries; "
          "off: without the request-log, metrics, django-prometheus and audit-refusal middlewares, "
          "the execute_wrapper and the audit INSERT")
    header = (f"{'case':38s} | {'on p50':>7s} {'p95':>7s} {'sql':>4s} {'audit':>5s} | "
              f"{'off p50':>7s} {'p95':>7s} {'sql':>4s} {'audit':>5s} | {'diff p50':>8s} {'p95':>7s} {'sql':>4s}")
    print(header)
    print("-" * len(header))
    for case in cases(session):
        on, off = results[(case.name, "on")], results[(case.name, "off")]
        row = {}
        for key, r in (("on", on), ("off", off)):
            row[key] = (statistics.median(r["times"]), percentile(r["times"], 0.95), r["statements"] / r["requests"],
                        r["audit"] / r["requests"])
        (p50a, p95a, qa, aa), (p50b, p95b, qb, ab) = row["on"], row["off"]
        print(f"{case.label:38s} | {p50a:7.2f} {p95a:7.2f} {qa:4.1f} {aa:5.2f} | {p50b:7.2f} {p95b:7.2f} {qb:4.1f} "
              f"{ab:5.2f} | {p50a - p50b:+8.2f} {p95a - p95b:+7.2f} {qa - qb:+4.1f}")
    if args.breakdown:
        print("each part off alone: p50 of 'on' minus p50 with only that part off (ms; SQL statements saved)")
        print(f"{'case':38s} | " + " ".join(f"{part:>15s}" for part in PARTS))
        for case in cases(session):
            on = statistics.median(results[(case.name, "on")]["times"])
            cells = []
            for part in PARTS:
                r = results[(case.name, f"-{part}")]
                saved = results[(case.name, "on")]["statements"] / args.requests - r["statements"] / r["requests"]
                cells.append(f"{on - statistics.median(r['times']):+7.2f} {saved:+4.1f}q")
            print(f"{case.label:38s} | " + " ".join(f"{cell:>15s}" for cell in cells))
    print(f"access-log lines written (the modes with the request log on, warm-ups included): {access_lines}")
    print(f"/metrics: backendai.metrics.exposition() with {args.sessions + 1} sessions and {args.agents} agents, "
          f"{args.scrapes} calls: p50 {scrape['p50']:.1f} ms, p95 {scrape['p95']:.1f} ms, max {scrape['max']:.1f} ms, "
          f"{scrape['statements']:.0f} SQL statements, {scrape['bytes']} bytes, {scrape['samples']} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
