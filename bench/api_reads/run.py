#!/usr/bin/env python
"""Benchmark: the API's hot reads under load, the production web server against daphne, side by side.

    .venv/bin/python bench/api_reads/run.py [--sessions 10000] [--duration 5] [--clients 32]
        [--processes 2] [--scale 100000] [--pg postgres://postgres@127.0.0.1:5432] [--db bai_bench_4_api]
        [--redis redis://127.0.0.1:6379/4] [--port 41100] [--baseline-root DIR] [--short]

It creates a scratch PostgreSQL database (dropped at the end), migrates it and fills it with
``--sessions`` sessions (bulk inserts, one kernel each) of 20 users in 4 projects; the measured user
owns a tenth of them, and 200 folders.  Then, for each web server setup in turn:

* ``before``: ``--processes`` daphne processes (how docs/production.md ran the web tier until
  now) accepting on one shared listening socket, as behind a load balancer;
* ``after``: the production recipe: gunicorn with ``--processes`` uvicorn workers
  (``uvicorn_worker.UvicornWorker``, uvloop and httptools) on the same ASGI application;

both with the production settings (PostgreSQL with the per-process psycopg pool, Redis for the cache
and the rate limits, prometheus' multiprocess directory, access log lines on), it drives each read
with ``wrk`` (``--clients`` connections, one thread, keep-alive) for ``--duration`` seconds after a
one-second warm-up:

* ``healthz``: ``GET /healthz`` (all the middleware, no database): the server's floor, and the proof
  that the load generator is not the bottleneck (its rate is far above the reads');
* ``session info (REST)``: signed ``GET /session/<id>`` (the official client's REST read of a session;
  the manager API has no REST list of sessions, its client lists them with the next one);
* ``compute_session_list``: signed ``POST /admin/gql``, the document of ``backend.ai ps``, 20 a page;
* ``vfolder_list``: signed ``POST /admin/gql``, the document of ``backend.ai vfolder list``;
* ``sessions page``: ``GET /ui/sessions/`` with a login cookie (the web UI's list, 20 a page).

The signatures are made once per read (a Backend.AI signature is valid for 15 minutes and carries
no nonce), so ``wrk`` sends the same signed headers on every request.  It prints requests per
second, p50/p99 latency, errors (socket errors and non-2xx answers) and the ratios against daphne
and against ``healthz`` of the same server, all from this one run.  ``--scale N`` then grows the
table to N sessions and measures the four reads again on the production recipe (one line each).
``--baseline-root DIR`` also runs the production recipe on another tree (an
earlier commit: ``git archive REV | tar -x -C DIR``) as ``baseline``, first, on the same data, and adds
its ratios.  ``--short``: 1 000 sessions, one second per read (CI runs it: tests/backendai/test_bench_api_reads.py).

Needs ``wrk`` (Debian's package; installed with apt-get when missing and running as root).
Not a test: it exits 0 unless it could not run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backendai import signing  # noqa: E402  (pure Python, no Django)

GiB = 2**30
IMAGE = "cr.example.com/stable/python:3.11"
PASSWORD = "bench-pass-1234"
USERS = 20
PROJECTS = 4
FOLDERS = 200
TARGET_RPS, TARGET_P99_MS = 800.0, 100.0

PS_DOCUMENT = (
    "query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, $order: String) {"
    " compute_session_list(limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter,"
    " order:$order) { items { name access_key id group_name main_kernel_id image type status status_info"
    " status_changed result tag created_at occupying_slots } total_count } }")
PS_VARIABLES = {"status": "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RUNNING_DEGRADED,TERMINATING,ERROR",
                "access_key": None, "filter": None, "order": None, "limit": 20, "offset": 0}
VFOLDER_DOCUMENT = (
    "query($limit:Int!, $offset:Int!, $group_id: UUID, $filter: String, $order: String) {"
    " vfolder_list(limit:$limit, offset:$offset, group_id:$group_id, filter:$filter, order:$order) {"
    " items { host name created_at creator group permission ownership_type status } total_count } }")
VFOLDER_VARIABLES = {"limit": 20, "offset": 0, "group_id": None, "filter": None, "order": None}

READS = ["session info (REST)", "compute_session_list", "vfolder_list", "sessions page"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions in the table (default 10000)")
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per read (default 5)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--processes", type=int, default=2, help="web processes per setup (default 2)")
    parser.add_argument("--scale", type=int, default=0,
                        help="then grow the table to this many sessions and measure again (e.g. 100000)")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"),
                        help="PostgreSQL server URL without a database name")
    parser.add_argument("--db", default="bai_bench_4_api", help="scratch database (created and dropped)")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/4"),
                        help="Redis database for the cache and the rate limits (its bench keys are removed)")
    parser.add_argument("--port", type=int, default=41100, help="first of the two ports it listens on")
    parser.add_argument("--only", choices=["before", "after"], help="measure one setup only")
    parser.add_argument("--baseline-root", metavar="DIR",
                        help="also measure the production recipe serving another tree (e.g. `git archive REV | tar -x "
                             "-C DIR`), as `baseline`, in the same run on the same data; ratios in `vs base`")
    parser.add_argument("--profile", metavar="DIR", help="py-spy each web process during each read (stacks in DIR)")
    parser.add_argument("--profile-tool", default="py-spy", help="the py-spy executable (default: on PATH)")
    parser.add_argument("--short", action="store_true", help="1 000 sessions, 1 s per read (CI)")
    args = parser.parse_args(argv)
    if args.short:
        args.sessions, args.duration = min(args.sessions, 1000), 1
        args.scale = 0
    if not 100 <= args.sessions <= 1_000_000 or args.duration < 1 or args.clients < 1 or args.processes < 1:
        parser.error("need 100 <= --sessions <= 1000000, --duration, --clients and --processes >= 1")
    if args.scale and args.scale <= args.sessions:
        parser.error("--scale must be above --sessions")
    return args


# --- the database ------------------------------------------------------------------------------------

def scratch_database(server: str, name: str, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(f"{server.rstrip('/')}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def server_env(args, data_dir: str, metrics_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DJANGO_"))}
    env.update({
        "DATABASE_URL": f"{args.pg.rstrip('/')}/{args.db}", "REDIS_URL": args.redis, "BACKEND_DATA_DIR": data_dir,
        "DJANGO_SETTINGS_MODULE": "backendai.settings", "DEBUG": "false", "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "SECRET_KEY": "bench-" + uuid.uuid4().hex, "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONPATH": str(ROOT),
    })
    return env


def setup_django(env: dict) -> None:
    os.environ.update(env)
    os.environ["DB_POOL_MAX_SIZE"] = "0"  # this process seeds; the servers have their pools
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed():
    """Users, projects, a scaling group with an agent, an image, folders; returns the measured user."""
    from django.utils import timezone

    from accounts import services as account_services
    from accounts.models import Keypair, Project, ProjectMembership, UserRole
    from agents import services as agent_services
    from agents.models import Agent, Image
    from vfolders.models import StorageHost, VFolder

    defaults = account_services.ensure_defaults()
    projects, policy = [defaults.project], defaults.project_policy
    while len(projects) < PROJECTS:
        projects.append(Project.objects.create(name=f"bench-p{len(projects)}", domain=defaults.domain,
                                               resource_policy=policy))
    users = [account_services.create_user(email=f"user{i:02d}@bench.example.com", password=None,
                                          role=UserRole.USER, projects=projects[: 1 + i % PROJECTS])
             for i in range(USERS)]
    ProjectMembership.objects.get_or_create(user=users[0], project=projects[0])
    Keypair.objects.filter(user__in=users).update(rate_limit=100_000_000)  # the bench, not the limiter, sets the pace
    group = agent_services.ensure_default_scaling_group()
    Image.objects.create(name=IMAGE, registry_name="cr.example.com", repository="stable/python", tag="3.11",
                         architecture="x86_64", resources={"cpu": {"min": "1", "max": None}},
                         service_ports=[{"name": "jupyter", "protocol": "http", "container_ports": [8888]}])
    Agent.objects.create(id="bench-node", scaling_group=group, available_slots={"cpu": "1000000", "mem": str(2**60)},
                         last_heartbeat=timezone.now())
    host = StorageHost.objects.create(name="local:volume1", path="/nonexistent")
    now = timezone.now()
    VFolder.objects.bulk_create([
        VFolder(host=host, domain=defaults.domain, name=f"folder-{i:04d}", user=users[i % USERS],
                quota_scope_id=f"user:{users[i % USERS].pk}", creator=users[i % USERS].email, status_changed=now)
        for i in range(FOLDERS)])
    return users, projects, group


def add_sessions(users, projects, group, start: int, count: int) -> None:
    """``count`` sessions (numbered from ``start``), a tenth of them the first user's; a third RUNNING
    with a kernel that reported its usage, the others PENDING or TERMINATED."""
    from django.db import connection

    from sessions.models import Kernel, Session

    keypairs = {u.pk: u.main_keypair.pk for u in users}
    port = {"name": "jupyter", "protocol": "http", "container_ports": [8888], "host_ports": [30001]}
    slots = {"cpu": "2", "mem": str(4 * GiB)}
    statuses = ["RUNNING", "PENDING", "TERMINATED"]
    for offset in range(0, count, 5000):
        batch = range(start + offset, start + min(offset + 5000, count))
        rows = []
        for i in batch:
            user = users[0] if i % 10 == 0 else users[1 + i % (USERS - 1)]
            status = statuses[i % 3]
            rows.append(Session(name=f"bench-{i:07d}", domain_id=user.domain_id,
                                project=projects[i % PROJECTS] if user is not users[0] else projects[0],
                                user=user, access_key_id=keypairs[user.pk], image=IMAGE, scaling_group=group,
                                requested_slots=slots, occupying_slots=slots if status == "RUNNING" else {},
                                status=status))
        sessions = Session.objects.bulk_create(rows, batch_size=1000)
        Kernel.objects.bulk_create([
            Kernel(session=s, image=IMAGE, agent_id="bench-node" if s.status == "RUNNING" else None, status=s.status,
                   requested_slots=slots, occupied_slots=slots if s.status == "RUNNING" else {},
                   service_ports=[port] if s.status == "RUNNING" else [],
                   last_stat={"cpu_util": "37.5", "mem_used": str(GiB)} if s.status == "RUNNING" else None)
            for s in sessions], batch_size=1000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def login_cookie(user) -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


# --- the servers -------------------------------------------------------------------------------------

class Servers:
    """``--processes`` web processes of one setup on one port."""

    def __init__(self, setup: str, args, env: dict, work: Path):
        self.setup, self.args, self.env, self.work = setup, args, env, work
        self.port = {"before": args.port, "after": args.port + 1, "baseline": args.port + 2}[setup]
        self.root = Path(args.baseline_root).resolve() if setup == "baseline" else ROOT
        if setup == "baseline":
            self.env = {**env, "PYTHONPATH": str(self.root)}
        self.procs: list[subprocess.Popen] = []  # "before": daphne; "after" and "baseline": gunicorn + uvicorn
        self.logs: list[Path] = []

    def _spawn(self, argv: list[str], name: str, **kwargs) -> None:
        path = self.work / f"{name}.log"
        self.logs.append(path)
        with open(path, "ab") as handle:
            self.procs.append(subprocess.Popen(argv, cwd=self.root, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                               start_new_session=True, **kwargs))

    def start(self) -> None:
        py = sys.executable
        if self.setup == "before":
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(1024)
            sock.set_inheritable(True)
            try:
                for n in range(self.args.processes):
                    self._spawn([py, "-m", "daphne", "--fd", str(sock.fileno()), "--websocket_timeout", "-1",
                                 "backendai.asgi:application"], f"daphne-{n}", pass_fds=(sock.fileno(),))
            finally:
                sock.close()
        else:
            self._spawn([py, "-m", "gunicorn", "backendai.asgi:application", "-k", "backendai.asgi_worker.UvicornWorker",
                         "-w", str(self.args.processes), "-b", f"127.0.0.1:{self.port}", "--backlog", "1024",
                         "--graceful-timeout", "5", "--no-control-socket"], "gunicorn")
        self.wait()

    def wait(self, timeout: float = 90) -> None:
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise SystemExit(f"{self.setup}: a web process exited:\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"{self.setup}: no answer on port {self.port}:\n{self.tail()}")

    def pids(self) -> list[int]:
        """The web processes and their children (gunicorn's workers)."""
        found = []
        for proc in self.procs:
            found.append(proc.pid)
            try:
                children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            except OSError:
                children = []
            found += [int(c) for c in children]
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the web processes (``/proc/<pid>/stat``)."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")

    def tail(self, size: int = 3000) -> str:
        return "\n".join(p.read_text(errors="replace")[-size:] for p in self.logs if p.exists())

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []


# --- the load ----------------------------------------------------------------------------------------

def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal of ASCII text is a valid Lua string literal


def request_script(method: str, target: str, headers: dict, body: str = "") -> str:
    lines = [f"wrk.method = {lua_string(method)}", f"wrk.path = {lua_string(target)}"]
    if body:
        lines.append(f"wrk.body = {lua_string(body)}")
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    lines.append("""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
""")
    return "\n".join(lines)


def read_requests(port: int, keypair: tuple[str, str], session_id: str, cookie: str) -> dict[str, tuple]:
    """(method, target, headers, body) per read, signed for 127.0.0.1:<port> now."""
    host = f"127.0.0.1:{port}"

    def signed(method: str, target: str, body: dict | None = None):
        ctype = "application/json"
        headers = signing.signed_headers(keypair[0], keypair[1], method, target, host, ctype)
        headers["Content-Type"] = ctype
        return method, target, headers, json.dumps(body) if body is not None else ""

    return {
        "healthz": ("GET", "/healthz", {}, ""),
        "session info (REST)": signed("GET", f"/session/{session_id}"),
        "compute_session_list": signed("POST", "/admin/gql", {"query": PS_DOCUMENT, "variables": PS_VARIABLES}),
        "vfolder_list": signed("POST", "/admin/gql", {"query": VFOLDER_DOCUMENT, "variables": VFOLDER_VARIABLES}),
        "sessions page": ("GET", "/ui/sessions/", {"Cookie": cookie}, ""),
    }


def check_once(port: int, request: tuple) -> None:
    """One request before the load: a read that fails stops the bench instead of measuring errors."""
    import http.client

    method, target, headers, body = request
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, target, body=body.encode() or None, headers=headers)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    if resp.status != 200 or (target == "/admin/gql" and b'"errors"' in payload):
        raise SystemExit(f"{method} {target}: HTTP {resp.status}: {payload[:800]!r}")


def run_wrk(wrk: str, port: int, request: tuple, seconds: int, clients: int, work: Path) -> dict:
    method, target, headers, body = request
    script = work / "request.lua"
    script.write_text(request_script(method, target, headers, body))
    done = subprocess.run([wrk, "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script),
                           f"http://127.0.0.1:{port}{target}"], capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {done.stdout}\n{done.stderr}")
    requests, duration_us, connect, read, write, status, timeouts, p50, p99 = (int(x) for x in line.split()[1:])
    return {"requests": requests, "rps": requests / (duration_us / 1e6), "p50": p50 / 1000, "p99": p99 / 1000,
            "errors": connect + read + write + status + timeouts}


def measure(setup: str, args, env: dict, work: Path, wrk: str, keypair, session_id: str, cookie: str,
            reads: list[str]) -> dict[str, dict]:
    servers = Servers(setup, args, env, work)
    results = {}
    try:
        log(f"{setup}: starting {args.processes} web processes on port {servers.port}")
        servers.start()
        requests = read_requests(servers.port, keypair, session_id, cookie)
        for name in reads:
            check_once(servers.port, requests[name])
            run_wrk(wrk, servers.port, requests[name], 1, args.clients, work)  # warm-up: pools, caches
            cpu = servers.cpu_seconds()
            spies = profile_workers(args, servers, setup, name)
            results[name] = run_wrk(wrk, servers.port, requests[name], args.duration, args.clients, work)
            for spy in spies:
                spy.wait(timeout=60)
            results[name]["cpu_ms"] = (servers.cpu_seconds() - cpu) * 1000 / max(results[name]["requests"], 1)
            log(f"{setup}: {name}: {results[name]['rps']:.0f} req/s, p99 {results[name]['p99']:.1f} ms")
    finally:
        servers.stop()
    return results


def profile_workers(args, servers: Servers, setup: str, read: str) -> list[subprocess.Popen]:
    """With ``--profile DIR``: py-spy samples each web process (gunicorn's workers, not its master)
    while the read runs; collapsed stacks in DIR/<setup>-<read>-<pid>.txt."""
    if not args.profile:
        return []
    spy = shutil.which("py-spy") or args.profile_tool
    pids = servers.pids()[1:] if setup != "before" else servers.pids()
    Path(args.profile).mkdir(parents=True, exist_ok=True)
    slug = read.split(" ")[0]
    return [subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(args.duration), "-r", "200", "--format", "raw",
                              "--nonblocking", "-o", str(Path(args.profile) / f"{setup}-{slug}-{pid}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in pids]


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found or os.geteuid() != 0:
        return found or ""
    for attempt in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-q", "wrk"]):
        if shutil.which("wrk"):
            break
        subprocess.run(attempt, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("wrk") or ""


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def print_table(results: dict, args) -> None:
    print(f"\nAPI reads: {args.sessions} sessions, {args.clients} clients, {args.processes} web processes, "
          f"{args.duration} s per read (wrk -t1 -c{args.clients})")
    has_base = "baseline" in results
    header = (f"{'read':22s} {'setup':8s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s} "
              f"{'vs before':>10s} {'vs healthz':>11s} {'cpu ms/req':>11s} {'cpu vs before':>14s}"
              + (f" {'vs base':>8s} {'cpu vs base':>12s}" if has_base else ""))
    print(header)
    print("-" * len(header))
    for name in ["healthz", *READS]:
        for setup in ("before", "baseline", "after"):
            row = results.get(setup, {}).get(name)
            if not row:
                continue
            before = results.get("before", {}).get(name)
            base = results.get("baseline", {}).get(name)
            floor = results[setup].get("healthz")
            print(f"{name:22s} {setup:8s} {row['rps']:8.0f} {row['p50']:8.1f} {row['p99']:8.1f} {row['errors']:7d} "
                  f"{ratio(row['rps'], before['rps']) if before else '-':>10s} "
                  f"{ratio(row['rps'], floor['rps']) if floor and name != 'healthz' else '-':>11s} "
                  f"{row['cpu_ms']:11.2f} {ratio(row['cpu_ms'], before['cpu_ms']) if before else '-':>14s}"
                  + (f" {ratio(row['rps'], base['rps']) if base else '-':>8s}"
                     f" {ratio(row['cpu_ms'], base['cpu_ms']) if base else '-':>12s}" if has_base else ""))
    after = results.get("after", {})
    if all(name in after for name in READS):
        met = all(after[n]["rps"] >= TARGET_RPS and after[n]["p99"] <= TARGET_P99_MS and not after[n]["errors"]
                  for n in READS)
        print(f"target (every read >= {TARGET_RPS:.0f} req/s, p99 <= {TARGET_P99_MS:.0f} ms, no errors, after): "
              f"{'met' if met else 'NOT met'}")


def print_scale(results: dict, scaled: dict, args) -> None:
    print(f"\nscale: the reads with {args.scale} sessions in the table (after), against {args.sessions}")
    header = (f"{'read':22s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s} {'vs ' + str(args.sessions):>10s}"
              f" {'cpu ms/req':>11s} {'cpu vs ' + str(args.sessions):>14s}")
    print(header)
    print("-" * len(header))
    for name in READS:
        row, base = scaled[name], results["after"][name]
        print(f"{name:22s} {row['rps']:8.0f} {row['p50']:8.1f} {row['p99']:8.1f} {row['errors']:7d} "
              f"{ratio(row['rps'], base['rps']):>10s} {row['cpu_ms']:11.2f} {ratio(row['cpu_ms'], base['cpu_ms']):>14s}")


def redis_cleanup(url: str, access_keys: list[str]) -> None:
    """Remove the rate-limit windows of the bench's keypairs (the only keys it leaves in Redis)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = [key for access_key in access_keys for key in client.scan_iter(f"ratelimit*{access_key}*")]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk()
    if not wrk:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="bench-api-reads-"))
    metrics_dir = work / "metrics"
    metrics_dir.mkdir()
    env = server_env(args, str(work / "data"), str(metrics_dir))
    (work / "data").mkdir()
    setups = [args.only] if args.only else ["before", "after"]
    if args.baseline_root:
        setups = ["baseline", *setups]  # the baseline, then ours: the same data, one after the other
    results: dict[str, dict] = {}
    scaled = None
    access_keys: list[str] = []
    scratch_database(args.pg, args.db)
    try:
        setup_django(env)
        log(f"seeding {args.sessions} sessions")
        users, projects, group = seed()
        add_sessions(users, projects, group, 0, args.sessions)
        from sessions.models import Session

        access_keys += [u.main_keypair.access_key for u in users]
        me = users[0]
        keypair = (me.main_keypair.access_key, me.main_keypair.secret_key)
        session_id = str(Session.objects.filter(user=me, status="RUNNING").values_list("pk", flat=True).first())
        cookie = login_cookie(me)
        from django.db import connections

        connections.close_all()
        for setup in setups:
            for path in metrics_dir.iterdir():
                path.unlink()
            results[setup] = measure(setup, args, env, work, wrk, keypair, session_id, cookie, ["healthz", *READS])
        print_table(results, args)
        if args.scale:
            log(f"growing the table to {args.scale} sessions")
            add_sessions(users, projects, group, args.sessions, args.scale - args.sessions)
            connections.close_all()
            scaled = measure("after", args, env, work, wrk, keypair, session_id, cookie, READS)
            if "after" in results:
                print_scale(results, scaled, args)
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up yet
            pass
        scratch_database(args.pg, args.db, drop_only=True)
        try:
            redis_cleanup(args.redis, access_keys)
        except Exception as exc:  # noqa: BLE001 - the cleanup of a bench must not hide its result
            log(f"redis cleanup: {exc}")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
