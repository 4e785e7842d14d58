#!/usr/bin/env python3
"""Benchmark: the production topology under 32 concurrent API clients, pooled connections against
the old persistent per-thread connections, in one run.

    .venv/bin/python bench/concurrency/run.py                       # 32 clients, 30 s per mode
    .venv/bin/python bench/concurrency/run.py --clients 64 --duration 60 --pool-max 5
    .venv/bin/python bench/concurrency/run.py --server postgres://postgres@127.0.0.1:5432 --redis redis://127.0.0.1:6379/9

For each mode, on the same data and the same machine:

1. a fresh copy of a migrated database (one user and keypair per client, a scaling group, an agent
   token) on PostgreSQL, and an empty Redis database;
2. the production topology as real processes: two daphne web processes (clients alternate between
   their ports, as behind a round-robin balancer), two Celery workers (prefork, concurrency 2),
   one beat and one local agent;
3. ``--clients`` clients for ``--duration`` seconds, each on keep-alive connections: most send
   signed GETs of several read endpoints in turn; ``--session-clients`` of them create a session on
   the local agent (``enqueueOnly``), poll it until RUNNING, destroy it and poll until it ends;
4. every answer counted by status class, latencies (p50/p95), and PostgreSQL's connections to the
   bench database (``pg_stat_activity``) sampled every 0.2 s: the peak, and 5 s after the load.

Modes: ``baseline`` is the behaviour before the pool (``DB_POOL_MAX_SIZE=0``, ``DB_CONN_MAX_AGE=60``:
a persistent connection per thread, and daphne runs each request in a fresh thread); ``pooled`` is
the default (a pool of ``--pool-max`` connections per process, ``DB_POOL_TIMEOUT``).  Both run the
current code, so a request refused for want of a connection is a 503 in both (before this change
the baseline's refusals were 500s).

By default the PostgreSQL server and Redis are private ones started here (``initdb`` with
``max_connections=100``, PostgreSQL's default, and ``redis-server``; as the ``postgres`` user when
run as root) so the baseline's connection pile-up cannot disturb anything else on the machine;
``--server`` / ``--redis`` use existing ones.  Not a test: it prints a table and exits 0 (non-zero
only when the stack could not start).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backendai import signing  # noqa: E402  (pure Python, no Django)

AGENT_ID = "bench-local"
SESSION_IMAGE = "local/shell:1.0"
SECRET_KEY = "bench-concurrency-" + "x" * 40
READ_ENDPOINTS = ["/auth/test", "/keypairs", "/folders", "/config/resource-slots", "/manager/announcement",
                  "/folders/_/hosts"]

SETUP = r"""
import json
from accounts import services as accounts
from accounts.models import Keypair
from agents import services as agents
from backendai import services as manager
from vfolders import services as vfolders
accounts.ensure_defaults()
manager.ensure_intrinsic_slot_types()
vfolders.ensure_default_storage_host()
group = agents.ensure_default_scaling_group()
users = [accounts.create_user(email=f"client{i}@bench.example.com", password=None) for i in range(CLIENTS)]
Keypair.objects.update(rate_limit=2_000_000_000)
print("BENCH" + json.dumps({"keys": [[u.main_keypair.access_key, u.main_keypair.secret_key] for u in users],
                            "agent_token": agents.issue_token("bench", scaling_group=group)[1]}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- private PostgreSQL and Redis ------------------------------------------------------------------

def _pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise SystemExit(f"{name} not found: install PostgreSQL or pass --server")


class PrivatePostgres:
    """A throwaway cluster in ``work``, on a free port, as the ``postgres`` user when we are root."""

    def __init__(self, work: Path, max_connections: int):
        self.dir = work / "pgdata"
        self.port = free_port()
        self.max_connections = max_connections
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                raise SystemExit("running as root needs a 'postgres' user for initdb (or pass --server)") from None

    def _run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, check=True, **kwargs)

    def start(self) -> str:
        self.dir.mkdir()
        if self.user:
            os.chmod(self.dir.parent, 0o755)
            shutil.chown(self.dir, self.user, self.user)
        self._run([_pg_binary("initdb"), "-D", str(self.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-sync"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                   f"-c max_connections={self.max_connections} -c fsync=off -c synchronous_commit=off")
        self._run([_pg_binary("pg_ctl"), "-D", str(self.dir), "-o", options, "-l", str(self.dir / "log"),
                   "-w", "-t", "60", "start"], stdout=subprocess.DEVNULL)
        return f"postgres://postgres@127.0.0.1:{self.port}"

    def stop(self) -> None:
        try:
            self._run([_pg_binary("pg_ctl"), "-D", str(self.dir), "-m", "immediate", "-w", "stop"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (subprocess.CalledProcessError, SystemExit):
            pass


class PrivateRedis:
    def __init__(self, work: Path):
        self.port = free_port()
        self.dir = work / "redis"
        self.process = None

    def start(self) -> str:
        binary = shutil.which("redis-server")
        if not binary:
            raise SystemExit("redis-server not found: install it or pass --redis")
        self.dir.mkdir()
        self.process = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(self.dir)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return f"redis://127.0.0.1:{self.port}"
            except OSError:
                time.sleep(0.1)
        raise SystemExit("the private redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


# --- databases ------------------------------------------------------------------------------------

def admin_sql(server: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


class ConnectionMonitor(threading.Thread):
    """Counts the bench database's connections in ``pg_stat_activity`` (from the ``postgres``
    database, so the monitor itself is not counted) every ``interval`` seconds."""

    def __init__(self, server: str, dbname: str, interval: float = 0.2):
        super().__init__(daemon=True)
        self.server, self.dbname, self.interval = server, dbname, interval
        self.samples: list[int] = []
        self.stop_event = threading.Event()

    def count(self, conn) -> int:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [self.dbname]).fetchone()[0]

    def run(self) -> None:
        import psycopg

        with psycopg.connect(f"{self.server}/postgres", autocommit=True) as conn:
            while not self.stop_event.is_set():
                self.samples.append(self.count(conn))
                self.stop_event.wait(self.interval)

    def now(self) -> int:
        import psycopg

        with psycopg.connect(f"{self.server}/postgres", autocommit=True) as conn:
            return self.count(conn)


# --- the stack --------------------------------------------------------------------------------------

class Stack:
    """Two daphne, two Celery workers, beat and a local agent, as real processes."""

    def __init__(self, work: Path, env: dict, agent_token: str, workers_concurrency: int):
        self.work = work
        self.env = env
        self.ports = [free_port(), free_port()]
        self.agent_token = agent_token
        self.concurrency = workers_concurrency
        self.processes: dict[str, subprocess.Popen] = {}

    def start_process(self, name: str, argv: list[str], extra_env: dict | None = None) -> None:
        handle = open(self.work / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **(extra_env or {})},
                                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> None:
        py = sys.executable
        for index, port in enumerate(self.ports):
            self.start_process(f"web{index + 1}", [py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                                   "backendai.asgi:application"])
        for index in (1, 2):
            self.start_process(f"worker{index}", [py, "-m", "celery", "-A", "backendai.celery", "worker",
                                                  "--loglevel=WARNING", "--concurrency", str(self.concurrency),
                                                  "--without-gossip", "--without-mingle",
                                                  "--hostname", f"bench{index}@%h"])
        self.start_process("beat", [py, "-m", "celery", "-A", "backendai.celery", "beat", "--loglevel=WARNING",
                                    "--schedule", str(self.work / "beat-schedule")])
        for port in self.ports:
            self.wait_http(port)
        low = free_port_block(20)
        self.start_process("agent", [py, "-m", "agents.daemon", "--manager-url", f"http://127.0.0.1:{self.ports[0]}",
                                     "--agent-id", AGENT_ID, "--scaling-group", "default", "--backend", "local",
                                     "--scratch-root", str(self.work / "agent"), "--port-range", f"{low}-{low + 19}"],
                           {"BAI_AGENT_TOKEN": self.agent_token, "BAI_AGENT_LOCAL_ALLOW_ROOT": "true"})

    def wait_http(self, port: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SystemExit(f"{name} exited ({process.returncode}):\n{self.tail(name)}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the web process on port {port} did not answer")

    def tail(self, name: str, size: int = 3000) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        # the local backend's kernels outlive their agent (it re-adopts them): end what is left
        root = str((self.work / "agent").resolve()) + os.sep
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if os.readlink(f"/proc/{entry.name}/cwd").startswith(root):
                        os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    pass


def _pg_socket_inodes(pg_port: int) -> set[str]:
    """Inodes of the TCP sockets connected to 127.0.0.1:pg_port (``/proc/net/tcp``)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == pg_port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    return inodes


def connections_by_process(stack: "Stack", pg_port: int) -> dict[str, int]:
    """How many PostgreSQL connections each stack process (with its children: prefork) holds."""
    inodes = _pg_socket_inodes(pg_port)
    groups = {process.pid: name for name, process in stack.processes.items()}
    counts = Counter({name: 0 for name in stack.processes})
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            pgid = os.getpgid(int(entry.name))
            name = groups.get(pgid)
            if name is None:
                continue
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                target = os.readlink(fd.path)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    counts[name] += 1
        except OSError:
            continue
    return dict(counts)


def free_port_block(size: int) -> int:
    for _ in range(200):
        low = free_port()
        if low + size >= 65535:
            continue
        try:
            for port in range(low, low + size):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return low
        except OSError:
            continue
    raise SystemExit("no free block of ports")


# --- the clients ------------------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.statuses: Counter = Counter()
        self.latencies: list[float] = []
        self.finished: list[float] = []  # monotonic time each answer came
        self.samples_5xx: list[str] = []
        self.samples_4xx: list[str] = []

    def add(self, status: int | str, seconds: float, detail: str = "") -> None:
        with self.lock:
            self.finished.append(time.monotonic())
            self.statuses[status] += 1
            self.latencies.append(seconds)
            if isinstance(status, int) and status >= 500 and status != 503 and len(self.samples_5xx) < 5:
                self.samples_5xx.append(detail)
            if isinstance(status, int) and 400 <= status < 500 and len(self.samples_4xx) < 3:
                self.samples_4xx.append(detail)


class Client(threading.Thread):
    """One API client: keep-alive connections to both web ports, used in turn."""

    def __init__(self, index: int, keys: tuple[str, str], ports: list[int], deadline: float, results: Results,
                 sessions: bool):
        super().__init__(daemon=True, name=f"client{index}")
        self.index, (self.access_key, self.secret_key) = index, keys
        self.ports, self.deadline, self.results, self.sessions = ports, deadline, results, sessions
        self.conns: dict[int, http.client.HTTPConnection] = {}
        self.turn = index

    def call(self, method: str, target: str, body: dict | None = None) -> tuple[int | str, bytes]:
        port = self.ports[self.turn % len(self.ports)]
        self.turn += 1
        host = f"127.0.0.1:{port}"
        data = json.dumps(body).encode() if body is not None else b""
        ctype = "application/json" if body is not None else "text/plain"
        headers = signing.signed_headers(self.access_key, self.secret_key, method, target, host, ctype)
        headers["Host"] = host
        start = time.perf_counter()
        try:
            conn = self.conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            self.conns[port] = conn
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            status: int | str = response.status
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                self.conns.pop(port, None)
        except (OSError, http.client.HTTPException) as exc:
            self.conns.pop(port, None)
            status, payload = f"error: {type(exc).__name__}", b""
        self.results.add(status, time.perf_counter() - start, f"{method} {target}: {payload[:200]!r}")
        return status, payload

    def run(self) -> None:
        try:
            if self.sessions:
                self.session_cycles()
            else:
                self.reads()
        finally:
            for conn in self.conns.values():
                conn.close()

    def reads(self) -> None:
        n = self.index
        while time.monotonic() < self.deadline:
            self.call("GET", READ_ENDPOINTS[n % len(READ_ENDPOINTS)])
            n += 1

    def wait_status(self, session_id: str, done: set[str], limit: float) -> None:
        until = time.monotonic() + limit
        while time.monotonic() < until:
            status, payload = self.call("GET", f"/session/{session_id}")
            if status == 404:
                return
            if status == 200 and json.loads(payload).get("status") in done:
                return
            time.sleep(0.2)

    def session_cycles(self) -> None:
        cycle = 0
        while time.monotonic() < self.deadline:
            cycle += 1
            body = {"image": SESSION_IMAGE, "name": f"c{self.index}-{cycle}-{uuid.uuid4().hex[:6]}",
                    "config": {"resources": {"cpu": "0.1", "mem": "128m"}}, "enqueueOnly": True}
            status, payload = self.call("POST", "/session", body)
            if status not in (200, 201):
                time.sleep(0.5)
                continue
            session_id = json.loads(payload)["sessionId"]
            self.wait_status(session_id, {"RUNNING", "ERROR", "CANCELLED", "TERMINATED"}, 60)
            for _ in range(20):  # a destroy refused with 503 is retried: the session must not be left behind
                status, _ = self.call("DELETE", f"/session/{session_id}")
                if status != 503:
                    break
                time.sleep(1)
            self.wait_status(session_id, {"TERMINATED", "CANCELLED", "ERROR"}, 60)


# --- one mode ---------------------------------------------------------------------------------------

def run_mode(name: str, mode_env: dict, args, server: str, redis_url: str, info: dict, work: Path) -> dict:
    dbname = f"bench_concurrency_{name}"
    admin_sql(server, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)',
              f'CREATE DATABASE "{dbname}" TEMPLATE "bench_concurrency_template"')
    redis_flush(redis_url)
    mode_dir = work / name
    mode_dir.mkdir()
    env = {**base_env(mode_dir, f"{server}/{dbname}", redis_url), **mode_env}
    stack = Stack(mode_dir, env, info["agent_token"], args.worker_concurrency)
    monitor = ConnectionMonitor(server, dbname)
    try:
        log(f"{name}: starting 2 web, 2 workers, beat and a local agent ({' '.join(f'{k}={v}' for k, v in mode_env.items())})")
        stack.start()
        wait_agent(server, dbname)
        probe = Client(0, tuple(info["keys"][0]), stack.ports, 0, Results(), False)
        for target in READ_ENDPOINTS:
            status, payload = probe.call("GET", target)
            if status != 200:
                raise SystemExit(f"{target} answered {status} before the load: {payload[:300]!r}")
        monitor.start()
        time.sleep(1)
        idle_before = max(monitor.samples[-3:] or [0])
        results = Results()
        deadline = time.monotonic() + args.duration
        clients = [Client(i, tuple(info["keys"][i]), stack.ports, deadline, results, i < args.session_clients)
                   for i in range(args.clients)]
        log(f"{name}: {args.clients} clients ({args.session_clients} creating and destroying sessions) "
            f"for {args.duration:.0f} s")
        started = time.monotonic()
        for client in clients:
            client.start()
        for client in clients:
            client.join(args.duration + 240)
        in_load = sum(1 for when in results.finished if when <= deadline)
        time.sleep(5)
        monitor.stop_event.set()
        monitor.join(10)
        at_rest = monitor.now()
        summary = summarize(results, in_load / (deadline - started), monitor.samples, idle_before, at_rest)
        summary["held by"] = connections_by_process(stack, int(server.rsplit(":", 1)[1]))
        return summary
    finally:
        monitor.stop_event.set()
        stack.stop()
        if not args.keep:
            admin_sql(server, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def wait_agent(server: str, dbname: str, timeout: float = 120) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(f"{server}/{dbname}", autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT status FROM agents_agent WHERE id = %s", [AGENT_ID]).fetchone()
            if row and row[0] == "ALIVE":
                return
            time.sleep(0.5)
    raise SystemExit("the local agent did not come up ALIVE")


def summarize(results: Results, rate: float, samples: list[int], idle_before: int, at_rest: int) -> dict:
    statuses = results.statuses
    total = sum(statuses.values())
    numeric = {k: v for k, v in statuses.items() if isinstance(k, int)}
    latencies = sorted(results.latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "requests": total,
        "req/s": rate,
        "2xx": sum(v for k, v in numeric.items() if 200 <= k < 300),
        "4xx": sum(v for k, v in numeric.items() if 400 <= k < 500),
        "503": numeric.get(503, 0),
        "other 5xx": sum(v for k, v in numeric.items() if k >= 500 and k != 503),
        "transport errors": sum(v for k, v in statuses.items() if not isinstance(k, int)),
        "p50 ms": pct(0.50),
        "p95 ms": pct(0.95),
        "peak connections": max(samples or [0]),
        "connections before": idle_before,
        "connections 5 s after": at_rest,
        "statuses": dict(sorted((str(k), v) for k, v in statuses.items())),
        "5xx samples": results.samples_5xx,
        "4xx samples": results.samples_4xx,
    }


def base_env(data_dir: Path, database_url: str, redis_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not re.match(r"^(DB_|DATABASE_URL|REDIS_URL|BAI_|PYTEST)", k)}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, SECRET_KEY=SECRET_KEY, BACKEND_DATA_DIR=str(data_dir),
               LOG_LEVEL="WARNING", DEBUG="false", ALLOWED_HOSTS="*", DEFAULT_RATE_LIMIT="2000000000",
               PYTHONUNBUFFERED="1", PROMETHEUS_MULTIPROC_DIR=str(data_dir))
    return env


def print_table(rows: dict[str, dict], labels: dict[str, str]) -> None:
    keys = ["requests", "req/s", "2xx", "4xx", "503", "other 5xx", "transport errors", "p50 ms", "p95 ms",
            "connections before", "peak connections", "connections 5 s after"]
    width = max(len(label) for label in labels.values()) + 2
    print()
    print(" " * 24 + "".join(f"{labels[name]:>{width}}" for name in rows))
    for key in keys:
        cells = []
        for row in rows.values():
            value = row[key]
            cells.append(f"{value:>{width}.1f}" if isinstance(value, float) else f"{value:>{width}}")
        print(f"{key:<24}" + "".join(cells))
    for name, row in rows.items():
        print(f"\n{labels[name]}: statuses {row['statuses']}")
        print(f"  connections 5 s after, by process: {row['held by']}")
        for sample in row["5xx samples"]:
            print(f"  5xx: {sample}")
        for sample in row["4xx samples"]:
            print(f"  4xx: {sample}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--session-clients", type=int, default=4, help="clients that create and destroy sessions")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per mode")
    parser.add_argument("--modes", default="baseline,pooled", help="comma-separated: baseline, pooled")
    parser.add_argument("--pool-max", type=int, default=10, help="DB_POOL_MAX_SIZE of the pooled mode")
    parser.add_argument("--pool-timeout", type=float, default=5.0, help="DB_POOL_TIMEOUT of the pooled mode")
    parser.add_argument("--baseline-max-age", type=int, default=60, help="DB_CONN_MAX_AGE of the baseline")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="prefork children per Celery worker")
    parser.add_argument("--max-connections", type=int, default=100, help="max_connections of the private PostgreSQL")
    parser.add_argument("--server", default=None, help="an existing PostgreSQL server (postgres://user@host:port)")
    parser.add_argument("--redis", default=None, help="an existing Redis database (redis://host:port/db); flushed")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and databases")
    parser.add_argument("--short", action="store_true",
                        help="seconds of load, for CI (tests/test_bench_short_modes.py): 4 clients (1 creating sessions), 3 s per mode")
    args = parser.parse_args()
    if args.short:
        args.clients, args.session_clients, args.duration = 4, 1, 3.0
    modes = {
        "baseline": ({"DB_POOL_MAX_SIZE": "0", "DB_CONN_MAX_AGE": str(args.baseline_max_age)},
                     f"baseline (no pool, max age {args.baseline_max_age})"),
        "pooled": ({"DB_POOL_MAX_SIZE": str(args.pool_max), "DB_POOL_MIN_SIZE": "1",
                    "DB_POOL_TIMEOUT": str(args.pool_timeout)},
                   f"pooled ({args.pool_max}/process, {args.pool_timeout:g} s)"),
    }
    selected = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(selected) - set(modes)
    if unknown:
        raise SystemExit(f"unknown modes: {', '.join(sorted(unknown))}")
    if args.clients < 1 or args.session_clients > args.clients:
        raise SystemExit("--clients must be at least 1 and at least --session-clients")

    work = Path(tempfile.mkdtemp(prefix="concurrency-bench-"))
    postgres = redis_server = None
    try:
        if args.server:
            server = args.server.rstrip("/")
        else:
            postgres = PrivatePostgres(work, args.max_connections)
            server = postgres.start()
            log(f"private PostgreSQL on {server} (max_connections={args.max_connections})")
        if args.redis:
            redis_url = args.redis
        else:
            redis_server = PrivateRedis(work)
            redis_url = redis_server.start() + "/0"
            log(f"private Redis on {redis_url}")

        template = "bench_concurrency_template"
        admin_sql(server, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)', f'CREATE DATABASE "{template}"')
        env = base_env(work, f"{server}/{template}", redis_url)
        env["DB_POOL_MAX_SIZE"] = "0"
        log("migrating the template database ...")
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        setup = subprocess.run([sys.executable, "manage.py", "shell", "-c", SETUP.replace("CLIENTS", str(args.clients))],
                               cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        info = json.loads(next(line[5:] for line in setup.stdout.splitlines() if line.startswith("BENCH")))

        rows = {}
        for name in selected:
            rows[name] = run_mode(name, modes[name][0], args, server, redis_url, info, work)
        log(f"done on {os.cpu_count()} CPUs")
        print_table(rows, {name: modes[name][1] for name in selected})
        if not args.keep:
            admin_sql(server, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    finally:
        if redis_server:
            redis_server.stop()
        if postgres:
            postgres.stop()
        if args.keep:
            print(f"\nwork directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
