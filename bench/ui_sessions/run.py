#!/usr/bin/env python
"""Benchmark: the sessions list of the web UI with 1 000 sessions, server-side.

    .venv/bin/python bench/ui_sessions/run.py [--sessions 1000] [--baseline 10] [--requests 40]
        [--pg postgres://postgres@127.0.0.1:5432] [--db bai_bench_ui_sessions]

It creates a scratch PostgreSQL database (dropped at the end), migrates it, and fills it
with one owner's sessions (half RUNNING with a kernel that reported its CPU and memory, and a
published "jupyter" port, half PENDING), first ``--baseline`` of them, then up to
``--sessions``.  For each size it times ``--requests`` GETs (after two warm-ups) of

* the list page (``/ui/sessions/``) and its live rows (``/ui/sessions/rows/``),
* as the owner (their sessions) and as a superadmin (``scope=all``, with the owner column),
* plain, and with a search and a status filter,

through Django's test client in this process: the time is the server's (request to response:
middleware, views, queries, templates), without a network or a browser.  It prints p50/p95/max
and the number of queries per request, the baseline beside the big list, and whether p95 is
under the 300 ms target (issue 16, item 8).  Not a test: it exits 0 unless it could not run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import percentile, scratch_database  # noqa: E402  (no Django)

TARGET_MS = 300.0
GiB = 2**30
IMAGE = "cr.example.com/stable/python:3.11"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000, help="sessions in the big list (default 1000)")
    parser.add_argument("--baseline", type=int, default=10, help="sessions in the baseline list (default 10)")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per case (default 40)")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"),
                        help="PostgreSQL server URL without a database name")
    parser.add_argument("--db", default="bai_bench_ui_sessions", help="scratch database (created and dropped)")
    parser.add_argument("--short", action="store_true",
                        help="seconds, for CI (tests/test_bench_short_modes.py): 50 sessions against 5, 5 requests")
    args = parser.parse_args(argv)
    if args.short:
        args.sessions, args.baseline, args.requests = 50, 5, 5
    if not 1 <= args.baseline < args.sessions <= 100_000 or not 1 <= args.requests <= 10_000:
        parser.error("need 1 <= --baseline < --sessions <= 100000 and 1 <= --requests <= 10000")
    return args


def setup_django(server: str, name: str, data_dir: str) -> None:
    os.environ["DATABASE_URL"] = f"{server.rstrip('/')}/{name}"
    os.environ["BACKEND_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backendai.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    # the test client's host; not setup_test_environment(), whose template instrumentation would cost time
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    call_command("migrate", verbosity=0)


def seed():
    """The users, a group with an agent, an image, and one session to copy from."""
    from django.utils import timezone

    from accounts import services as account_services
    from accounts.models import UserRole
    from agents import services as agent_services
    from agents.models import Agent, Image
    from sessions.enqueue import EnqueueRequest, enqueue

    account_services.ensure_defaults()
    owner = account_services.create_user(email="owner@bench.example.com", password="bench-pass-1234",
                                         role=UserRole.USER)
    root = account_services.create_user(email="root@bench.example.com", password="bench-pass-1234",
                                        role=UserRole.SUPERADMIN)
    group = agent_services.ensure_default_scaling_group()
    Image.objects.create(name=IMAGE, registry_name="cr.example.com", repository="stable/python", tag="3.11",
                         architecture="x86_64", resources={"cpu": {"min": "1", "max": None}},
                         service_ports=[{"name": "jupyter", "protocol": "http", "container_ports": [8888]}])
    Agent.objects.create(id="bench-node", scaling_group=group, available_slots={"cpu": "4096", "mem": str(4096 * GiB)},
                         last_heartbeat=timezone.now())
    template = enqueue(owner, owner.main_keypair,
                       EnqueueRequest(image=IMAGE, name="bench-first", enqueue_only=True)).session
    return owner, root, template


def add_sessions(owner, template, start: int, count: int) -> None:
    from sessions.models import Kernel, Session

    port = {"name": "jupyter", "protocol": "http", "container_ports": [8888], "host_ports": [30001]}
    for offset in range(0, count, 500):
        batch = range(start + offset, start + min(offset + 500, count))
        sessions = Session.objects.bulk_create([
            Session(name=f"bench-{i:06d}", domain_id=template.domain_id, project_id=template.project_id, user=owner,
                    access_key=template.access_key, image=IMAGE, scaling_group=template.scaling_group,
                    requested_slots={"cpu": "2", "mem": str(4 * GiB)}, status="RUNNING" if i % 2 else "PENDING")
            for i in batch])
        Kernel.objects.bulk_create([
            Kernel(session=s, image=IMAGE, agent_id="bench-node", status=s.status,
                   occupied_slots={"cpu": "2", "mem": str(4 * GiB)}, service_ports=[port] if s.status == "RUNNING" else [],
                   last_stat={"cpu_util": "37.5", "mem_used": str(GiB)} if s.status == "RUNNING" else None)
            for s in sessions])


def time_case(client, url: str, params: dict, requests: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):  # warm-up: templates compiled, connections open
        assert client.get(url, params).status_code == 200
    times = []
    with CaptureQueriesContext(connection) as queries:
        for _ in range(requests):
            begin = time.perf_counter()
            response = client.get(url, params)
            times.append((time.perf_counter() - begin) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{url} {params}: HTTP {response.status_code}")
    return {"p50": statistics.median(times), "p95": percentile(times, 0.95), "max": max(times),
            "queries": len(queries.captured_queries) / requests, "rows": response.content.count(b"data-session=")}


CASES = [
    ("list", "/ui/sessions/", "owner", {}),
    ("rows", "/ui/sessions/rows/", "owner", {}),
    ("list", "/ui/sessions/", "root", {"scope": "all"}),
    ("rows", "/ui/sessions/rows/", "root", {"scope": "all"}),
    ("list", "/ui/sessions/", "root", {"scope": "all", "q": "bench-0", "status": "RUNNING"}),
    ("rows", "/ui/sessions/rows/", "root", {"scope": "all", "q": "bench-0", "status": "RUNNING"}),
]


def measure(users: dict, requests: int) -> list[dict]:
    from django.test import Client

    clients = {}
    for key, user in users.items():
        clients[key] = Client()
        clients[key].force_login(user)
    results = []
    for label, url, who, params in CASES:
        result = time_case(clients[who], url, params, requests)
        result["case"] = f"{label:4s} {who:5s} {'&'.join(f'{k}={v}' for k, v in params.items()) or '-'}"
        results.append(result)
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    scratch_database(args.pg, args.db)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ui-sessions-") as data_dir:
            setup_django(args.pg, args.db, data_dir)
            owner, root, template = seed()
            users = {"owner": owner, "root": root}
            add_sessions(owner, template, 1, args.baseline - 1)
            baseline = measure(users, args.requests)
            add_sessions(owner, template, args.baseline, args.sessions - args.baseline)
            big = measure(users, args.requests)
            from django.db import connections

            connections.close_all()
    finally:
        scratch_database(args.pg, args.db, drop_only=True)
    print(f"sessions list, server time over {args.requests} requests per case (ms); "
          f"{args.baseline} sessions vs {args.sessions}")
    header = (f"{'case':48s} | {'p50':>7s} {'p95':>7s} {'max':>7s} {'q':>4s} | "
              f"{'p50':>7s} {'p95':>7s} {'max':>7s} {'q':>4s} | under {TARGET_MS:.0f} ms")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for small, large in zip(baseline, big):
        worst = max(worst, large["p95"])
        print(f"{small['case']:48s} | {small['p50']:7.1f} {small['p95']:7.1f} {small['max']:7.1f} "
              f"{small['queries']:4.0f} | {large['p50']:7.1f} {large['p95']:7.1f} {large['max']:7.1f} "
              f"{large['queries']:4.0f} | {'yes' if large['p95'] < TARGET_MS else 'NO'}")
    same = all(a["queries"] == b["queries"] for a, b in zip(baseline, big))
    print(f"queries per request the same for {args.baseline} and {args.sessions} sessions: {'yes' if same else 'NO'}; "
          f"worst p95 with {args.sessions}: {worst:.1f} ms (target {TARGET_MS:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
