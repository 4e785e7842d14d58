#!/usr/bin/env python
"""Benchmark: session create -> RUNNING on the local backend, with and without hints.

    .venv/bin/python bench/hints/run.py [--sessions 20] [--modes embedded,production]
        [--pg postgres://postgres@127.0.0.1:5432] [--redis redis://127.0.0.1:6379/15]

For each mode it starts a fresh stack as real processes (daphne, a Celery worker,
Celery beat, one agent daemon on the local backend) on a private data directory
and port, creates ``--sessions`` sessions one after the other through the API
(``local/shell:1.0``, enqueued), waits for each to be RUNNING and destroys it,
and reads the time from PENDING to RUNNING **from each session's
status_history** (server-side timestamps).  Each mode runs twice:

* **baseline** (the old behaviour): the manager answers every sync at once
  (``AGENT_SYNC_MAX_WAIT=0``), the agent syncs every ``AGENT_SYNC_INTERVAL``
  (5 s; ``--long-poll 0``), and, in the embedded mode, hints are not relayed
  (no ``INTERNAL_WEB_URL``), so the worker's poke stays in the worker;
* **hints**: hints relayed to the web process (embedded) or sent over Redis
  (production), and the agent's sync is a long poll.

Modes: ``embedded`` (SQLite, in-memory channel layers, the embedded broker) and
``production`` (a scratch PostgreSQL database, created and dropped, and Redis).
It prints p50/p95/max per run side by side.  Not a test: it exits 0 unless a
run could not start.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TARGET_P50 = 0.5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20, help="sessions per run (default 20)")
    parser.add_argument("--modes", default="embedded,production", help="embedded, production or both")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"),
                        help="PostgreSQL server URL without a database name (production mode)")
    parser.add_argument("--db", default="bai_bench_hints", help="scratch database (created and dropped)")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/15"),
                        help="Redis URL (production mode; the database is flushed)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories (their logs)")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # internal: one run, JSON on stdout
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# --- one run, in a child process (Django is set up once per process) ------------------------------

class Stack:
    def __init__(self, data_dir: Path, env: dict, port: int):
        self.data_dir, self.env, self.port = data_dir, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], extra: dict | None = None) -> None:
        log = open(self.data_dir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **(extra or {})}, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def one_run(args) -> dict:
    mode, variant = args.run.split(":")
    hinted = variant == "hints"
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-hints-{mode}-{variant}-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAI_AGENT_", "DATABASE_URL", "REDIS_URL",
                                                                     "INTERNAL_WEB_URL", "AGENT_"))}
    env.update(BACKEND_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING", DEBUG="0",
               PROMETHEUS_MULTIPROC_DIR=str(data_dir), AGENT_SYNC_INTERVAL="5")
    if mode == "production":
        import psycopg
        import redis

        with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.db}"')
        redis.Redis.from_url(args.redis).flushdb()
        env.update(DATABASE_URL=f"{args.pg}/{args.db}", REDIS_URL=args.redis)
    if hinted:
        if mode == "embedded":
            env["INTERNAL_WEB_URL"] = f"http://127.0.0.1:{port}"
    else:
        env["AGENT_SYNC_MAX_WAIT"] = "0"
    os.environ.update(env)
    for name in ("DATABASE_URL", "REDIS_URL", "INTERNAL_WEB_URL", "AGENT_SYNC_MAX_WAIT"):
        if name not in env:
            os.environ.pop(name, None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "backendai.settings"
    sys.path.insert(0, str(ROOT))

    manage = [PY, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "populate", "--credentials", str(data_dir / "credentials.json"), "--url",
                    f"http://127.0.0.1:{port}", "--agent-token", str(data_dir / "agent-token")],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    credentials = json.loads((data_dir / "credentials.json").read_text())

    import django

    django.setup()
    import httpx
    from django.db import close_old_connections

    from agents.models import Agent, AgentStatus
    from backendai.signing import signed_headers
    from sessions.models import Session

    stack = Stack(data_dir, env, port)
    results: list[float] = []
    client_side: list[float] = []
    try:
        stack.start("web", [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "backendai.asgi:application"])
        stack.start("worker", [PY, "-m", "celery", "-A", "backendai.celery", "worker", "--pool=solo",
                               "--loglevel=WARNING", "--without-gossip", "--without-mingle",
                               "--hostname", f"bench@{port}"])
        stack.start("beat", [PY, "-m", "celery", "-A", "backendai.celery", "beat", "--loglevel=WARNING",
                             "--schedule", str(data_dir / "beat-schedule")])

        def web_up():
            try:
                return httpx.get(stack.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(web_up, 60, "the web server", 0.2)
        low = 33000 + (port % 100) * 10
        stack.start("agent", [PY, "-m", "agents.daemon", "--manager-url", stack.url, "--agent-id", "bench-node",
                              "--backend", "local", "--scratch-root", str(data_dir / "agent"),
                              "--port-range", f"{low}-{low + 9}", "--long-poll", "15" if hinted else "0"],
                    {"BAI_AGENT_TOKEN": (data_dir / "agent-token").read_text().strip(),
                     "BAI_AGENT_LOCAL_ALLOW_ROOT": "true", "BAI_AGENT_LOG_LEVEL": "WARNING"})

        def agent_ready():
            close_old_connections()
            return Agent.objects.filter(pk="bench-node", status=AgentStatus.ALIVE,
                                        images__name="local/shell:1.0").exists()

        wait_for(agent_ready, 60, "the agent", 0.2)
        time.sleep(2)  # its link opens after the first sync
        access, secret, host = credentials["access_key"], credentials["secret_key"], f"127.0.0.1:{port}"
        http = httpx.Client(base_url=stack.url, timeout=60)

        def call(method, target, body=None):
            headers = signed_headers(access, secret, method, target, host)
            return http.request(method, target, headers=headers,
                                content=json.dumps(body) if body is not None else None)

        for index in range(args.sessions):
            name = f"bench-{index}"
            started = time.monotonic()
            response = call("POST", "/session", {"image": "local/shell:1.0", "name": name, "enqueueOnly": True,
                                                 "config": {"resources": {"cpu": "0.25", "mem": "256m"}}})
            if response.status_code not in (200, 201):
                raise SystemExit(f"create failed: {response.status_code} {response.text}")

            def running():
                close_old_connections()
                return Session.objects.filter(name=name, status="RUNNING").first()

            session = wait_for(running, 60, f"session {name} RUNNING")
            client_side.append(time.monotonic() - started)
            stamps = {e["status"]: datetime.fromisoformat(e["timestamp"]) for e in session.status_history}
            results.append((stamps["RUNNING"] - stamps["PENDING"]).total_seconds())
            call("DELETE", f"/session/{name}")

            def gone():
                close_old_connections()
                return Session.objects.filter(name=name, status__in=["TERMINATED", "CANCELLED", "ERROR"]).exists()

            wait_for(gone, 60, f"session {name} to end")
    finally:
        stack.stop()
        from django.db import connections

        connections.close_all()
        if mode == "production":
            import psycopg

            with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        if args.keep:
            print(f"logs kept in {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return {"mode": mode, "variant": variant, "server": results, "client": client_side}


# --- the orchestration ------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run:
        print("RESULT " + json.dumps(one_run(args)), flush=True)
        return 0
    rows = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        for variant in ("baseline", "hints"):
            print(f"==> {mode} / {variant}: {args.sessions} sessions", flush=True)
            argv_child = [PY, __file__, "--run", f"{mode}:{variant}", "--sessions", str(args.sessions),
                          "--pg", args.pg, "--db", args.db, "--redis", args.redis, *(["--keep"] if args.keep else [])]
            done = subprocess.run(argv_child, cwd=ROOT, capture_output=True, text=True)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
                return 1
            rows.append(json.loads(line[len("RESULT "):]))
    print()
    print(f"session create -> RUNNING (server side, status_history PENDING -> RUNNING), {args.sessions} sessions")
    print(f"{'mode':<11} {'variant':<9} {'p50':>8} {'p95':>8} {'max':>8} {'mean':>8}   client p50")
    for row in rows:
        s = row["server"]
        print(f"{row['mode']:<11} {row['variant']:<9} {percentile(s, .5):>7.3f}s {percentile(s, .95):>7.3f}s "
              f"{max(s):>7.3f}s {statistics.mean(s):>7.3f}s   {percentile(row['client'], .5):.3f}s")
    hinted = [r for r in rows if r["variant"] == "hints"]
    verdict = all(percentile(r["server"], .5) <= TARGET_P50 for r in hinted)
    print(f"target: p50 <= {TARGET_P50}s with hints: {'met' if verdict else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
