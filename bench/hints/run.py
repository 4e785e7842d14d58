#!/usr/bin/env python
"""Benchmark: session create -> RUNNING (issue 18 item 5), old behaviour against hints, side by side.

    .venv/bin/python bench/hints/run.py [--sessions 20] [--modes embedded,production]
        [--backends local,docker] [--variants baseline,hints] [--preload 0]
        [--ports 41200-41299] [--pg postgres://postgres@127.0.0.1:5432] [--db bai_bench_hints]
        [--redis redis://127.0.0.1:6379/15] [--short] [--keep]

For each mode, backend and variant it starts a fresh stack as real processes
(daphne, a Celery worker, Celery beat, one agent daemon) on a private data
directory and ports taken from ``--ports`` (the web server on the first ones,
each agent's kernel ports further up), creates ``--sessions`` sessions one
after the other through the API (enqueued), waits for each to be RUNNING and
destroys it, and reads the time from PENDING to RUNNING **from each session's
status_history** (server-side timestamps), split into its stages: PENDING ->
SCHEDULED (the scheduler's pass), SCHEDULED -> PREPARING/PULLING (the hint
reaching the agent) and -> RUNNING (the agent creating the kernel and
reporting it).  Backends: ``local`` (``local/shell:1.0``) and ``docker`` (the
local test image ``bai-test/shell:1.0``, ``scripts/build-test-images``).

Variants:

* **baseline** (the old behaviour): the manager answers every sync at once
  (``AGENT_SYNC_MAX_WAIT=0``), the agent syncs every ``AGENT_SYNC_INTERVAL``
  (5 s; ``--long-poll 0``), and, in the embedded mode, hints are not relayed
  (no ``INTERNAL_WEB_URL``), so the worker's poke stays in the worker;
* **hints**: hints relayed to the web process (embedded) or sent over Redis
  (production), and the agent's sync is a long poll.

Modes: ``embedded`` (SQLite, in-memory channel layers, the embedded broker) and
``production`` (a scratch PostgreSQL database, created and dropped, and Redis).
``--preload N`` (production only) first copies N terminated sessions, one
kernel each on the measured agent, into the tables (issue 18 item 6).

It prints p50/p95/p99/max per run, p99/p50, the p50 against the baseline of
the same mode and backend, and each stage's p50.  ``--short`` (CI: a few
sessions of the embedded mode on the local backend, both variants) checks that
the benchmark still runs.  Not a test: it exits 0 unless a run could not start.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TARGET_P50 = {"local": 0.5, "docker": 1.0}
IMAGES = {"local": "local/shell:1.0", "docker": "bai-test/shell:1.0"}
#: kernel ports each agent gets from --ports (after the web servers' ports)
AGENT_PORTS = 4
WEB_PORTS = 20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20, help="sessions per run (default 20)")
    parser.add_argument("--modes", default="embedded,production", help="embedded, production or both")
    parser.add_argument("--backends", default="local", help="local, docker or both (default local)")
    parser.add_argument("--variants", default="baseline,hints", help="baseline, hints or both")
    parser.add_argument("--preload", type=int, default=0,
                        help="terminated sessions copied into the tables first (production mode only)")
    parser.add_argument("--ports", default="41200-41299",
                        help=f"ports this benchmark may listen on (at least {WEB_PORTS + 2 * AGENT_PORTS})")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"),
                        help="PostgreSQL server URL without a database name (production mode)")
    parser.add_argument("--db", default="bai_bench_hints", help="scratch database (created and dropped)")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/15"),
                        help="Redis URL (production mode; the database is flushed)")
    parser.add_argument("--short", action="store_true",
                        help="CI: 2 sessions, embedded mode, local backend (overrides --sessions/--modes/--backends)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories (their logs)")
    parser.add_argument("--detail", action="store_true", help="print every session's stages")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # internal: one run, JSON on stdout
    parser.add_argument("--template", default=None, help=argparse.SUPPRESS)  # internal: the migrated SQLite dir
    args = parser.parse_args(argv)
    if args.short:
        args.sessions, args.modes, args.backends = 2, "embedded", "local"
    return args


def port_plan(ports: str, index: int) -> tuple[int, str]:
    """The web port and the agent's kernel port range of run ``index``."""
    low, high = (int(p) for p in ports.split("-"))
    web = low + index % WEB_PORTS
    first = low + WEB_PORTS + (index * AGENT_PORTS) % max(AGENT_PORTS, high + 1 - low - WEB_PORTS)
    if first + AGENT_PORTS - 1 > high:
        raise SystemExit(f"--ports {ports} is too small")
    return web, f"{first}-{first + AGENT_PORTS - 1}"


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
        env = {k: v for k, v in {**self.env, **(extra or {})}.items() if v is not None}
        self.processes[name] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
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


def preload(count: int, template_name: str) -> float:
    """Copy the (terminated) session ``template_name`` and its kernel ``count`` times (PostgreSQL,
    one INSERT ... SELECT per table); returns the seconds it took."""
    from django.db import connection

    from sessions.models import Kernel, Session

    started = time.monotonic()
    template = Session.objects.get(name=template_name)
    s_table, k_table = Session._meta.db_table, Kernel._meta.db_table
    s_cols = [f.column for f in Session._meta.concrete_fields]
    k_cols = [f.column for f in Kernel._meta.concrete_fields]
    k_fk = Kernel._meta.get_field("session").column

    def select(cols, overrides):
        return ", ".join(overrides.get(c, f"t.{connection.ops.quote_name(c)}") for c in cols)

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE bench_ids AS SELECT g AS n, gen_random_uuid() AS sid, "
                       "gen_random_uuid() AS kid FROM generate_series(1, %s) g", [count])
        names = ", ".join(connection.ops.quote_name(c) for c in s_cols)
        columns = select(s_cols, {"id": "b.sid", "name": "'old-' || b.n"})
        cursor.execute(f"INSERT INTO {s_table} ({names}) SELECT {columns} FROM {s_table} t, bench_ids b "
                       "WHERE t.id = %s", [template.pk])
        names = ", ".join(connection.ops.quote_name(c) for c in k_cols)
        columns = select(k_cols, {"id": "b.kid", k_fk: "b.sid"})
        cursor.execute(f"INSERT INTO {k_table} ({names}) SELECT {columns} FROM {k_table} t, bench_ids b "
                       f"WHERE t.{k_fk} = %s", [template.pk])
        cursor.execute("DROP TABLE bench_ids")
        cursor.execute(f"ANALYZE {s_table}; ANALYZE {k_table}")
    return time.monotonic() - started


def stages(session) -> dict:
    """Seconds from PENDING to RUNNING and of each stage, from the session's status_history."""
    stamps = {}
    for entry in session.status_history:  # the first time each status was reached
        stamps.setdefault(entry["status"], datetime.fromisoformat(entry["timestamp"]))
    preparing = min((stamps[s] for s in ("PREPARING", "PULLING") if s in stamps), default=stamps["RUNNING"])
    scheduled = stamps.get("SCHEDULED", preparing)
    return {"total": (stamps["RUNNING"] - stamps["PENDING"]).total_seconds(),
            "schedule": (scheduled - stamps["PENDING"]).total_seconds(),
            "dispatch": (preparing - scheduled).total_seconds(),
            "start": (stamps["RUNNING"] - preparing).total_seconds()}


def one_run(args) -> dict:
    mode, backend, variant, index = args.run.split(":")
    hinted = variant == "hints"
    port, agent_ports = port_plan(args.ports, int(index))
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-hints-{mode}-{backend}-{variant}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAI_AGENT_", "DATABASE_URL", "REDIS_URL",
                                                                     "INTERNAL_WEB_URL", "AGENT_"))}
    env.update(BACKEND_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING", DEBUG="0",
               PROMETHEUS_MULTIPROC_DIR=str(data_dir), AGENT_SYNC_INTERVAL="5")
    if mode == "production":
        import psycopg
        import redis

        with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.db}" TEMPLATE "{args.db}_tpl"')  # migrated once (main)
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
    if mode == "embedded":  # a copy of the database migrated once (main)
        shutil.copy(Path(args.template) / "db.sqlite3", data_dir / "db.sqlite3")
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)  # nothing left to do
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

    agent_id = f"bench-node-{os.getpid()}"
    image = IMAGES[backend]
    stack = Stack(data_dir, env, port)
    results: list[dict] = []
    client_side: list[float] = []
    preloaded = cold = None
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

        wait_for(web_up, 180, "the web server", 0.2)
        stack.start("agent", [PY, "-m", "agents.daemon", "--manager-url", stack.url, "--agent-id", agent_id,
                              "--backend", backend, "--scratch-root", str(data_dir / "agent"),
                              "--port-range", agent_ports, "--stop-timeout", "1",
                              "--long-poll", "15" if hinted else "0"],
                    {"BAI_AGENT_TOKEN": (data_dir / "agent-token").read_text().strip(),
                     "BAI_AGENT_LOCAL_ALLOW_ROOT": "true", "BAI_AGENT_LOG_LEVEL": "WARNING",
                     "PROMETHEUS_MULTIPROC_DIR": None})

        def agent_ready():
            close_old_connections()
            return Agent.objects.filter(pk=agent_id, status=AgentStatus.ALIVE, images__name=image).exists()

        wait_for(agent_ready, 180, "the agent", 0.2)
        time.sleep(2)  # its link opens after the first sync
        access, secret, host = credentials["access_key"], credentials["secret_key"], f"127.0.0.1:{port}"
        http = httpx.Client(base_url=stack.url, timeout=60)

        def call(method, target, body=None):
            headers = signed_headers(access, secret, method, target, host)
            return http.request(method, target, headers=headers,
                                content=json.dumps(body) if body is not None else None)

        def one_session(name: str) -> Session:
            started = time.monotonic()
            response = call("POST", "/session", {"image": image, "name": name, "enqueueOnly": True,
                                                 "config": {"resources": {"cpu": "0.25", "mem": "256m"}}})
            if response.status_code not in (200, 201):
                raise SystemExit(f"create failed: {response.status_code} {response.text}")

            def running():
                close_old_connections()
                return Session.objects.filter(name=name, status="RUNNING").first()

            session = wait_for(running, 60, f"session {name} RUNNING")
            elapsed = time.monotonic() - started
            call("DELETE", f"/session/{name}")

            def gone():
                close_old_connections()
                return Session.objects.filter(name=name, status__in=["TERMINATED", "CANCELLED", "ERROR"]).exists()

            wait_for(gone, 60, f"session {name} to end")
            return session, elapsed

        # one session first, not counted: a process's first enqueue sets up its Celery producer (about 0.6 s
        # on the embedded broker) and the worker's first hint opens the relay; reported apart as "cold"
        cold = stages(one_session("bench-warmup")[0])["total"]
        if args.preload and mode == "production":
            preloaded = preload(args.preload, "bench-warmup")  # copies of a real terminated session and kernel
        for number in range(args.sessions):
            session, elapsed = one_session(f"bench-{number}")
            client_side.append(elapsed)
            results.append(stages(session))
    finally:
        stack.stop()
        if backend == "docker":
            try:
                import docker

                client = docker.from_env()
                for container in client.containers.list(all=True, filters={"label": f"ai.backend.agent-id={agent_id}"}):
                    container.remove(force=True)
            except Exception as exc:  # noqa: BLE001 - best effort
                print(f"could not remove the containers of {agent_id}: {exc}", file=sys.stderr)
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
    return {"mode": mode, "backend": backend, "variant": variant, "runs": results, "client": client_side,
            "preloaded": preloaded, "cold": cold}


# --- the orchestration ------------------------------------------------------------------------

def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run:
        print("RESULT " + json.dumps(one_run(args)), flush=True)
        return 0
    modes = _split(args.modes)
    template = Path(tempfile.mkdtemp(prefix="bench-hints-template-"))
    try:
        migrate_once(args, modes, template)
        return orchestrate(args, modes, template)
    finally:
        shutil.rmtree(template, ignore_errors=True)
        if "production" in modes:
            import psycopg

            with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{args.db}_tpl" WITH (FORCE)')


def migrate_once(args, modes: list[str], template: Path) -> None:
    """Migrate one SQLite database and one PostgreSQL template database; every run starts from a copy."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    base.update(DJANGO_SETTINGS_MODULE="backendai.settings", LOG_LEVEL="WARNING", DEBUG="0")
    argv = [PY, "manage.py", "migrate", "--noinput", "-v0"]
    if "embedded" in modes:
        subprocess.run(argv, cwd=ROOT, env={**base, "BACKEND_DATA_DIR": str(template)}, check=True)
    if "production" in modes:
        import psycopg

        with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.db}_tpl" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.db}_tpl"')
        subprocess.run(argv, cwd=ROOT, check=True, env={**base, "BACKEND_DATA_DIR": str(template / "pg"),
                                                        "DATABASE_URL": f"{args.pg}/{args.db}_tpl",
                                                        "REDIS_URL": args.redis})


def orchestrate(args, modes: list[str], template: Path) -> int:
    rows = []
    index = 0
    for mode in modes:
        for backend in _split(args.backends):
            for variant in _split(args.variants):
                # --preload: in the production mode every variant runs without and then with the preloaded rows
                for preload_n in ([0, args.preload] if args.preload and mode == "production" else [0]):
                    print(f"==> {mode} / {backend} / {variant}: {args.sessions} sessions"
                          + (f", {preload_n} preloaded" if preload_n else ""), flush=True)
                    argv_child = [PY, __file__, "--run", f"{mode}:{backend}:{variant}:{index}",
                                  "--sessions", str(args.sessions), "--preload", str(preload_n), "--ports", args.ports,
                                  "--pg", args.pg, "--db", args.db, "--redis", args.redis,
                                  "--template", str(template), *(["--keep"] if args.keep else [])]
                    index += 1
                    done = subprocess.run(argv_child, cwd=ROOT, capture_output=True, text=True)
                    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
                    if done.returncode != 0 or line is None:
                        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
                        return 1
                    rows.append(json.loads(line[len("RESULT "):]))
    print()
    print(f"session create -> RUNNING (server side, status_history PENDING -> RUNNING), {args.sessions} sessions "
          f"per run{f', {args.preload} terminated sessions preloaded (production)' if args.preload else ''}")
    print(f"{'mode':<11} {'backend':<7} {'variant':<9} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'p99/p50':>7} "
          f"{'vs base':>7}   {'sched':>6} {'hint':>6} {'start':>6}   {'client':>6} {'cold':>6}")
    for row in rows:
        if row.get("preloaded") is not None:
            row["label"] = f"{row['variant']}+{args.preload // 1000}k" if args.preload >= 1000 else \
                f"{row['variant']}+{args.preload}"
    baselines = {(r["mode"], r["backend"]): percentile([x["total"] for x in r["runs"]], .5)
                 for r in rows if r["variant"] == "baseline"}
    for row in rows:  # without a baseline run, the same variant without preloaded rows is the reference
        if (row["mode"], row["backend"]) not in baselines and row.get("preloaded") is None:
            baselines[(row["mode"], row["backend"])] = percentile([x["total"] for x in row["runs"]], .5)
    verdicts = []
    for row in rows:
        total = [x["total"] for x in row["runs"]]
        p50, p99 = percentile(total, .5), percentile(total, .99)
        base = baselines.get((row["mode"], row["backend"]))
        stage = {k: percentile([x[k] for x in row["runs"]], .5) for k in ("schedule", "dispatch", "start")}
        print(f"{row['mode']:<11} {row['backend']:<7} {row.get('label', row['variant']):<9} {p50:>6.3f}s {percentile(total, .95):>6.3f}s "
              f"{p99:>6.3f}s {max(total):>6.3f}s {p99 / p50 if p50 else 0:>6.2f}x "
              f"{(f'{p50 / base:.2f}x' if base else '-'):>7}   {stage['schedule']:>5.3f}s {stage['dispatch']:>5.3f}s "
              f"{stage['start']:>5.3f}s   {percentile(row['client'], .5):>5.3f}s {row['cold']:>5.3f}s")
        if row["variant"] == "hints" and row.get("preloaded") is None:
            verdicts.append(p50 <= TARGET_P50[row["backend"]] and p99 <= 2 * p50)
        if args.detail:
            print("    " + " ".join(f"{x['total']:.2f}({x['schedule']:.2f}/{x['dispatch']:.2f}/{x['start']:.2f})"
                                    for x in row["runs"]))
        if row.get("preloaded") is not None:
            print(f"    ({args.preload} terminated sessions and kernels preloaded in {row['preloaded']:.1f}s)")
    print("stages (p50): sched = PENDING -> SCHEDULED, hint = SCHEDULED -> PREPARING/PULLING, "
          "start = -> RUNNING;\nclient = POST to RUNNING seen by polling (p50); cold = the first session of the stack, "
          "not counted")
    print(f"target (hints): p50 <= {TARGET_P50['local']}s local, <= {TARGET_P50['docker']}s docker, "
          f"p99 <= 2x p50: {'met' if verdicts and all(verdicts) else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
