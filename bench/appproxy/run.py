"""App proxy benchmark: our worker against nginx and JupyterHub's
configurable-http-proxy, and against the app itself, in one run.

    .venv/bin/python bench/appproxy/run.py [--duration 5] [--connections 32] [--ws-round-trips 2000]
        [--modes quiet,busy] [--processes N] [--loop uvloop|asyncio] [--circuits 100]
        [--baseline-root DIR] [--ports LOW-HIGH] [--short]

What runs (all on 127.0.0.1, every loop bounded in count and time):

* the app: a small asyncio HTTP/1.1 server answering ``hello world`` with
  keep-alive, and a websocket echo server (its own process);
* our worker (``python -m appproxy.worker``, port mode) with one non-public
  circuit to the app; a stand-in coordinator in this process hands it that circuit,
  so only the data plane is measured; every request carries the permit cookie,
  so the permit check is part of the figure;
* nginx (Debian's package, ``daemon off``, one worker process, upstream
  keep-alive) and configurable-http-proxy (npm, run with node), both proxying
  to the same app;
* the load: ``wrk`` (Debian) with one thread and N connections, the same
  command line (cookie header included) for every target; websocket round
  trips: one client sending a small message and waiting for its echo, N times.

Each mode measures every target: ``quiet`` with nothing else running, ``busy`` with one
CPU-bound Python process per core alongside (normal priority, each ending by itself after the
phase).  With ``--processes N`` (default: the core count) a second worker runs with N processes
sharing its ports (SO_REUSEPORT), next to nginx with N worker processes.  Next to req/s and
latency, each HTTP row has the CPU time (user + system, from /proc) the target's processes used
per request during its measured run: on a shared machine the figure other load disturbs least.
``--baseline-root DIR`` adds the worker of another checkout (DIR holding its ``appproxy/`` and
``backendai/``, e.g. ``git archive HEAD~1 appproxy backendai | tar -x -C DIR``) as one more target.
The scale phase (quiet only; ``--circuits N``, 0 to skip) runs a wildcard-mode worker with N+1
circuits, each to its own app address (127.0.0.2 ... on one port), and loads it with a wrk
script setting Host and permit per request: all requests to one circuit, then round-robin over
N, next to nginx under the same script.  The summary prints the issue's ratios per mode: the
worker's req/s and p99 against nginx's, its req/s against configurable-http-proxy's, its
websocket round trips against nginx's and its CPU per request against nginx's.  ``--short``
(CI): 1 s per target, 8 connections, 200 round trips, 10 circuits.

Missing tools are installed (apt-get for nginx and wrk as root, npm for
configurable-http-proxy into the work directory).  Prints a table and exits.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appproxy import tokens  # noqa: E402  (pure module, no Django)

SECRET = "bench-" + uuid.uuid4().hex
OWNER = str(uuid.uuid4())
CIRCUIT = str(uuid.uuid4())


PORTS: list[int] = []  # --ports LOW-HIGH: listen only there (a shared machine); else any free port


def free_port() -> int:
    while PORTS:
        port = PORTS.pop(0)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    if getattr(free_port, "bounded", False):
        raise RuntimeError("--ports: every port of the range is taken")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


# --- the app (run as a child: ``run.py --serve-app HTTP_PORT WS_PORT``) ------------------------------

class HelloProtocol(asyncio.Protocol):
    RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
                b"Connection: keep-alive\r\n\r\nhello world\n")

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")  # GETs without bodies: one answer per head
        if count:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(self.RESPONSE * count)


def scale_host(index: int) -> str:
    """The scale phase's app addresses: one port, a loopback address per circuit (127.0.0.2 ...)."""
    return f"127.{(index + 2) // 65536}.{(index + 2) // 256 % 256}.{(index + 2) % 256}"


async def serve_app(http_port: int, ws_port: int, scale_port: int = 0, scale_count: int = 0) -> None:
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(HelloProtocol, "127.0.0.1", http_port, backlog=1024)
    for index in range(scale_count):  # the scale phase: an app address per circuit
        await loop.create_server(HelloProtocol, scale_host(index), scale_port, backlog=1024)
    async with serve(echo, "127.0.0.1", ws_port, compression=None):
        await server.serve_forever()


# --- a stand-in coordinator for our worker ----------------------------------------------------------------

def standin_coordinator(circuits: list[dict]):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, data, status=200):
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _read(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_PUT(self):
            self._read()
            self._send({"worker": {}, "secret": SECRET, "revision": 1, "permit_ttl": 3600})

        def do_POST(self):
            self._read()
            if self.path == "/workers/register":
                self._send({"worker": {}, "secret": SECRET, "revision": 1, "permit_ttl": 3600})
                return
            if self.path.endswith("/shutdown"):
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send({"status": "ALIVE", "revision": 1})

        def do_GET(self):
            self._send({"revision": 1, "full": True, "removed": [], "circuits": circuits})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- contenders -----------------------------------------------------------------------------------

NGINX_CONF = """
worker_processes {workers};
error_log {work}/nginx-error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream app {{ server 127.0.0.1:{app}; keepalive 64; }}
    upstream ws {{ server 127.0.0.1:{ws}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
    server {{
        listen 127.0.0.1:{ws_port};
        location / {{
            proxy_pass http://ws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
    }}
}}
"""


def ensure_tool(name: str, package: str) -> str | None:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None and os.geteuid() == 0:
        print(f"installing {package} (apt-get) ...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, capture_output=True, timeout=600)
        path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    return path


def ensure_chp(work: Path) -> Path | None:
    target = work / "chp"
    script = target / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"
    if not script.exists() and shutil.which("npm"):
        print("installing configurable-http-proxy (npm) ...", flush=True)
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "configurable-http-proxy@5"], cwd=target,
                       capture_output=True, timeout=600)
    return script if script.exists() else None


class Children:
    def __init__(self):
        self.items: list[subprocess.Popen] = []

    def start(self, argv, **kwargs) -> subprocess.Popen:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=kwargs.pop("stderr", subprocess.DEVNULL),
                                 start_new_session=True, **kwargs)
        self.items.append(child)
        return child

    def stop_all(self):
        for child in reversed(self.items):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.items:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)


# --- load -----------------------------------------------------------------------------------------

def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    value, unit = float(match[1]), match[2]
    return value * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(wrk: str, url: str, cookie: str, duration: int, connections: int, script: Path | None = None) -> dict:
    extra = ["-s", str(script)] if script else ["-H", f"Cookie: {cookie}"]
    done = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *extra, url],
                          capture_output=True, text=True, timeout=duration + 60)
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    p50 = _seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M)[1])
    p99 = _seconds(re.search(r"^\s+99%\s+(\S+)", out, re.M)[1])
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": int(errors[1]) if errors else 0,
            "socket_errors": socket_errors[1] if socket_errors else ""}


async def _python_load(port: int, cookie: str, duration: float, connections: int) -> dict:
    request = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n").encode()
    latencies: list[float] = []
    deadline = time.monotonic() + duration
    bad = 0

    async def one():
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                bad += 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(connections)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50": latencies[len(latencies) // 2],
            "p99": latencies[int(len(latencies) * 0.99)], "non2xx": bad, "socket_errors": ""}


async def _ws_round_trips(url: str, cookie: str, count: int) -> dict:
    from websockets.asyncio.client import connect

    samples = []
    async with connect(url, additional_headers={"Cookie": cookie}, compression=None) as ws:
        for _ in range(min(100, count // 10)):  # warm-up
            await ws.send("ping")
            await ws.recv()
        started = time.perf_counter()
        for i in range(count):
            t0 = time.perf_counter()
            await ws.send(f"ping {i}")
            assert await ws.recv() == f"ping {i}"
            samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    samples.sort()
    return {"rtps": count / elapsed, "p50": statistics.median(samples), "p99": samples[int(len(samples) * 0.99)]}


# --- busy mode -----------------------------------------------------------------------------------

BURNER = "import time\nend = time.monotonic() + {seconds}\nx = 0\nwhile time.monotonic() < end:\n    x += 1\n"


class Burners:
    """One CPU-bound Python process per core at normal priority, each ending by itself after
    ``seconds`` (and stopped by ``stop``): the "other load" of a busy machine."""

    def __init__(self, children: Children, seconds: float):
        self.procs = [children.start([sys.executable, "-c", BURNER.format(seconds=seconds)])
                      for _ in range(os.cpu_count() or 1)]

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


# --- main -----------------------------------------------------------------------------------------

def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants (Linux /proc)."""
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = int(fields[11]) + int(fields[12])
    mine, total, changed = {pid}, 0, True
    while changed:
        more = {child for child, parent in parents.items() if parent in mine} - mine
        changed = bool(more)
        mine |= more
    total = sum(cpu.get(p, 0) for p in mine)
    return total / os.sysconf("SC_CLK_TCK")


PIDS: dict[str, int] = {}  # target -> the process (tree) serving it, for its CPU time per request


def start_worker(children, coordinator, ports, api_port, processes: int, loop: str, name: str, root: Path = ROOT):
    low, high = min(ports), max(ports)
    return children.start([sys.executable, "-m", "appproxy.worker", "--coordinator-url",
                    f"http://127.0.0.1:{coordinator.server_address[1]}", "--name", name, "--mode", "port",
                    "--port-range", f"{low}-{high}", "--api-port", str(api_port), "--log-level", "WARNING",
                    "--processes", str(processes), "--loop", loop],
                   cwd=root, env=dict(os.environ, BAI_PROXY_TOKEN="bench"), stderr=None)


def worker_health(api_port: int) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", api_port), timeout=2) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            if data.startswith(b"HTTP/1.1 200"):
                return json.loads(data.partition(b"\r\n\r\n")[2])
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the worker at API port {api_port} does not answer /health")


SCALE_DOMAIN = "bench.test"
LUA = """local hosts = {{{hosts}}}
local cookies = {{{cookies}}}
local n, i = #hosts, 0
request = function()
  i = i % n + 1
  return wrk.format("GET", "/", {{["Host"] = hosts[i], ["Cookie"] = cookies[i]}})
end
"""


def start_scale(children, run_dir: Path, app_port: int, scale_port: int, count: int, loop: str, nginx_port):
    """A wildcard-mode worker with circuit s0 (the app's main port) and s1..sN (an app address each),
    and a wrk script per load: every request to s0, or the requests spread round-robin over s1..sN."""
    base = {"app": "hello", "protocol": "http", "owner_id": OWNER, "granted_users": [], "target_host": "127.0.0.1",
            "open_to_public": False, "allowed_client_ips": [], "revision": 1, "port": None}
    targets = [("127.0.0.1", app_port), *((scale_host(index), scale_port) for index in range(count))]
    circuits = [{**base, "id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "subdomain": f"s{index}",
                 "target_host": host, "target_port": port} for index, (host, port) in enumerate(targets)]
    coordinator = standin_coordinator(circuits)
    port, api = free_port(), free_port()
    worker = children.start([sys.executable, "-m", "appproxy.worker", "--coordinator-url",
                             f"http://127.0.0.1:{coordinator.server_address[1]}", "--name", "bench-scale", "--mode",
                             "wildcard", "--wildcard-domain", SCALE_DOMAIN, "--wildcard-port", str(port), "--api-port",
                             str(api), "--log-level", "WARNING", "--loop", loop],
                            cwd=ROOT, env=dict(os.environ, BAI_PROXY_TOKEN="bench"), stderr=None)
    wait_port(port)
    worker_health(api)
    scripts = {}
    for name, chosen in (("one", circuits[:1]), ("many", circuits[1:])):
        hosts = ", ".join(f'"{c["subdomain"]}.{SCALE_DOMAIN}:{port}"' for c in chosen)
        cookies = ", ".join(f'"{tokens.permit_cookie_name(c["id"])}='
                            f'{tokens.make_permit(SECRET, c["id"], OWNER, 3600)}"' for c in chosen)
        scripts[name] = run_dir / f"scale-{name}.lua"
        scripts[name].write_text(LUA.format(hosts=hosts, cookies=cookies))
    return {"coordinator": coordinator, "port": port, "scripts": scripts, "pid": worker.pid,
            "nginx": nginx_port, "count": count}


def measure_scale(scale, wrk: str, args) -> None:
    def load(port, script):
        return run_wrk(wrk, f"http://127.0.0.1:{port}/", "", args.duration, args.connections, script)

    count = scale["count"]
    targets = [("appproxy worker, 1 circuit", scale["port"], scale["scripts"]["one"], scale["pid"]),
               (f"appproxy worker, {count} circuits", scale["port"], scale["scripts"]["many"], scale["pid"])]
    if scale["nginx"]:
        targets.insert(0, ("nginx (any Host)", scale["nginx"], scale["scripts"]["one"], PIDS.get("nginx")))
    results = {}
    for name, port, script, pid in targets:
        load(port, script)  # warm-up, not counted
        before = tree_cpu(pid) if pid else 0.0
        results[name] = r = load(port, script)
        requests = r["rps"] * args.duration
        r["cpu_us"] = (tree_cpu(pid) - before) / requests * 1e6 if pid and requests else None
    one = results["appproxy worker, 1 circuit"]
    ngx = results.get("nginx (any Host)", {})
    rows = [("target", "req/s", "p50 ms", "p99 ms", "vs 1 circuit", "p99 / 1 circuit", "vs nginx", "CPU us/req",
             "CPU / 1 circuit", "errors")]
    for name, r in results.items():
        rows.append((name, f"{r['rps']:.0f}", f"{r['p50'] * 1000:.2f}", f"{r['p99'] * 1000:.2f}",
                     ratio(r["rps"], one["rps"]), ratio(r["p99"], one["p99"]), ratio(r["rps"], ngx.get("rps")),
                     f"{r['cpu_us']:.1f}" if r.get("cpu_us") else "-", ratio(r.get("cpu_us"), one.get("cpu_us")),
                     str(r["non2xx"]) + (f" ({r['socket_errors']})" if r["socket_errors"] else "")))
    print(f"\n[scale, quiet] HTTP over a wildcard-mode worker: every request to one circuit, or spread "
          f"round-robin over {count} circuits (each its own app address); the Host and permit set per request by a "
          "wrk script", flush=True)
    print_table(rows)


def ratio(a, b, fmt="{:.2f}x"):
    return fmt.format(a / b) if a and b else "-"


def measure(mode, targets, ws_targets, load, args, cookie):
    results, ws_results = {}, {}
    for name, port in targets.items():
        load(port)  # warm-up (JIT, pools), not counted
        pid = PIDS.get(name)
        before = tree_cpu(pid) if pid else 0.0
        results[name] = load(port)
        seconds = tree_cpu(pid) - before if pid else 0.0
        requests = results[name]["rps"] * args.duration
        results[name]["cpu_us"] = seconds / requests * 1e6 if pid and requests else None
    for name, port in ws_targets.items():
        ws_results[name] = asyncio.run(_ws_round_trips(f"ws://127.0.0.1:{port}/", cookie, args.ws_round_trips))
    rows = [("target", "req/s", "p50 ms", "p99 ms", "vs nginx", "p99/nginx", "vs CHP", "CPU us/req", "CPU/nginx",
             "errors")]
    nginx = results.get("nginx", {})
    chp = results.get("configurable-http-proxy", {})
    for name, r in results.items():
        errors = str(r["non2xx"]) + (f" ({r['socket_errors']})" if r["socket_errors"] else "")
        rows.append((name, f"{r['rps']:.0f}", f"{r['p50'] * 1000:.2f}", f"{r['p99'] * 1000:.2f}",
                     ratio(r["rps"], nginx.get("rps")), ratio(r["p99"], nginx.get("p99")),
                     ratio(r["rps"], chp.get("rps")), f"{r['cpu_us']:.1f}" if r.get("cpu_us") else "-",
                     ratio(r.get("cpu_us"), nginx.get("cpu_us")), errors))
    print(f"\n[{mode}] HTTP: GET / (12-byte body), keep-alive", flush=True)
    print_table(rows)
    ws_rows = [("target", "round trips/s", "p50 ms", "p99 ms", "vs nginx")]
    for name, r in ws_results.items():
        ws_rows.append((name, f"{r['rtps']:.0f}", f"{r['p50'] * 1000:.3f}", f"{r['p99'] * 1000:.3f}",
                        ratio(r["rtps"], ws_results.get("nginx", {}).get("rtps"))))
    print(f"\n[{mode}] Websocket: {args.ws_round_trips} sequential round trips of a small text message, "
          "one connection", flush=True)
    print_table(ws_rows)
    return results, ws_results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per target (1-60)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (1-512)")
    parser.add_argument("--ws-round-trips", type=int, default=2000, help="websocket round trips per target")
    parser.add_argument("--modes", default="quiet,busy",
                        help="quiet: nothing else runs; busy: a CPU-bound process per core runs alongside")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="also measure the worker with this many processes (SO_REUSEPORT) against nginx "
                             "with as many workers (1: skip)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the worker's event loop")
    parser.add_argument("--short", action="store_true", help="CI: 1 s per target, 8 connections, 200 round trips")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "appproxy-bench"))
    parser.add_argument("--circuits", type=int, default=100,
                        help="scale phase (quiet only): the load spread over this many circuits, each to its own "
                             "app port, against one circuit, on a wildcard-mode worker (0: skip; --short: 10)")
    parser.add_argument("--baseline-root", default="", metavar="DIR",
                        help="also measure the worker of another checkout (its appproxy/ and backendai/ in DIR)")
    parser.add_argument("--ports", default=os.environ.get("BENCH_PORTS", ""), metavar="LOW-HIGH",
                        help="listen only on ports of this range (a shared machine; default $BENCH_PORTS, else any "
                             "free port)")
    parser.add_argument("--serve-app", nargs="+", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_app:
        asyncio.run(serve_app(*args.serve_app[:4]))
        return 0
    if args.short:
        args.duration, args.connections, args.ws_round_trips = 1, 8, 200
        args.circuits = min(args.circuits, 10)
    args.circuits = max(0, min(args.circuits, 1000))
    if args.ports:
        low, _, high = args.ports.partition("-")
        PORTS[:] = range(int(low), int(high) + 1)
        free_port.bounded = True
    args.duration = max(1, min(args.duration, 60))
    args.connections = max(1, min(args.connections, 512))
    args.ws_round_trips = max(10, min(args.ws_round_trips, 100_000))
    args.processes = max(1, min(args.processes, 64))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"quiet", "busy"}:
        parser.error("--modes: a comma list of quiet, busy")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))

    wrk = ensure_tool("wrk", "wrk")
    nginx = ensure_tool("nginx", "nginx")
    chp = ensure_chp(work)
    node = shutil.which("node")

    children = Children()
    try:
        app_port, ws_port = free_port(), free_port()
        scale_port = free_port()
        PIDS["direct (the app)"] = children.start([sys.executable, __file__, "--serve-app", str(app_port), str(ws_port),
                                                   str(scale_port), str(args.circuits)]).pid
        wait_port(app_port)
        wait_port(ws_port)

        circuit = {"app": "hello", "protocol": "http", "session_id": str(uuid.uuid4()), "owner_id": OWNER,
                   "granted_users": [], "target_host": "127.0.0.1", "open_to_public": False,
                   "allowed_client_ips": [], "revision": 1, "subdomain": None}
        ws_circuit_id = str(uuid.uuid4())
        proxy_port, proxy_ws_port, api_port = free_port(), free_port(), free_port()
        circuits = [{**circuit, "id": CIRCUIT, "target_port": app_port, "port": proxy_port},
                    {**circuit, "id": ws_circuit_id, "app": "ws", "target_port": ws_port, "port": proxy_ws_port}]
        coordinator = standin_coordinator(circuits)
        PIDS["appproxy worker"] = start_worker(children, coordinator, [proxy_port, proxy_ws_port], api_port, 1,
                                               args.loop, "bench").pid
        wait_port(proxy_port)
        wait_port(proxy_ws_port)
        health = worker_health(api_port)
        cookie = "; ".join(f"{tokens.permit_cookie_name(cid)}={tokens.make_permit(SECRET, cid, OWNER, 3600)}"
                           for cid in (CIRCUIT, ws_circuit_id))

        targets = {"direct (the app)": app_port, "appproxy worker": proxy_port}
        ws_targets = {"direct (the app)": ws_port, "appproxy worker": proxy_ws_port}
        if args.processes > 1:
            # a second worker (another name, the same circuits on other ports) with N processes
            multi_port, multi_ws, multi_api = free_port(), free_port(), free_port()
            multi = [{**circuits[0], "port": multi_port}, {**circuits[1], "port": multi_ws}]
            multi_coordinator = standin_coordinator(multi)
            PIDS[f"appproxy worker x{args.processes}"] = start_worker(
                children, multi_coordinator, [multi_port, multi_ws], multi_api, args.processes, args.loop,
                "bench-multi").pid
            wait_port(multi_port)
            deadline = time.monotonic() + 30
            while worker_health(multi_api).get("processes") != args.processes and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # the followers' listeners
            targets[f"appproxy worker x{args.processes}"] = multi_port
        if args.baseline_root:
            # the same worker from another checkout (e.g. the commit before a change), same circuits
            base_port, base_ws, base_api = free_port(), free_port(), free_port()
            base = [{**circuits[0], "port": base_port}, {**circuits[1], "port": base_ws}]
            base_coordinator = standin_coordinator(base)
            PIDS["appproxy worker (baseline)"] = start_worker(
                children, base_coordinator, [base_port, base_ws], base_api, 1, args.loop, "bench-baseline",
                Path(args.baseline_root)).pid
            wait_port(base_port)
            targets["appproxy worker (baseline)"] = base_port
        if nginx:
            workers = [1] + ([args.processes] if args.processes > 1 else [])
            for count in workers:
                nginx_port, nginx_ws = free_port(), free_port()
                nginx_dir = run_dir / f"nginx-{count}"
                nginx_dir.mkdir()
                conf = nginx_dir / "nginx.conf"
                conf.write_text(NGINX_CONF.format(work=nginx_dir, app=app_port, ws=ws_port, port=nginx_port,
                                                  ws_port=nginx_ws, workers=count))
                PIDS["nginx" if count == 1 else f"nginx x{count}"] = children.start(
                    [nginx, "-c", str(conf), "-p", str(nginx_dir), "-g", "daemon off;"]).pid
                wait_port(nginx_port)
                if count == 1:
                    targets["nginx"] = nginx_port
                    ws_targets["nginx"] = nginx_ws
                else:
                    targets[f"nginx x{count}"] = nginx_port
        else:
            print("nginx is not available: skipped", flush=True)
        if chp and node:
            chp_port, chp_api = free_port(), free_port()
            PIDS["configurable-http-proxy"] = children.start([
                node, str(chp), "--ip", "127.0.0.1", "--port", str(chp_port), "--api-ip", "127.0.0.1", "--api-port",
                str(chp_api), "--default-target", f"http://127.0.0.1:{app_port}", "--log-level", "error"]).pid
            wait_port(chp_port)
            targets["configurable-http-proxy"] = chp_port
            chp_ws, chp_ws_api = free_port(), free_port()
            children.start([node, str(chp), "--ip", "127.0.0.1", "--port", str(chp_ws), "--api-ip", "127.0.0.1",
                            "--api-port", str(chp_ws_api), "--default-target", f"http://127.0.0.1:{ws_port}",
                            "--log-level", "error"])
            wait_port(chp_ws)
            ws_targets["configurable-http-proxy"] = chp_ws
        else:
            print("configurable-http-proxy (npm) or node is not available: skipped", flush=True)

        load = (lambda port: run_wrk(wrk, f"http://127.0.0.1:{port}/", cookie, args.duration, args.connections)) \
            if wrk else (lambda port: asyncio.run(_python_load(port, cookie, args.duration, args.connections)))
        generator = f"wrk -t1 -c{args.connections} -d{args.duration}s" if wrk else \
            f"python asyncio client, {args.connections} connections, {args.duration}s"
        print(f"load: {generator}; machine: {os.cpu_count()} cores; worker event loop: {health.get('event_loop')}",
              flush=True)
        scale = None
        if args.circuits and wrk:
            scale = start_scale(children, run_dir, app_port, scale_port, args.circuits, args.loop, targets.get("nginx"))
        summary = {}
        for mode in modes:
            burners = None
            if mode == "busy":
                # bounded: the whole phase, with margin, then each burner ends by itself
                seconds = len(targets) * 2 * (args.duration + 2) + len(ws_targets) * 30 + 60
                burners = Burners(children, seconds)
                time.sleep(0.5)
            try:
                summary[mode] = measure(mode, targets, ws_targets, load, args, cookie)
            finally:
                if burners is not None:
                    burners.stop()

        rows = [("mode", "worker/nginx req/s", "worker/nginx p99", "worker/CHP req/s", "ws worker/nginx",
                 f"x{args.processes}/nginx x{args.processes} req/s", "worker/nginx CPU per req")]
        for mode, (results, ws_results) in summary.items():
            worker, ngx = results.get("appproxy worker", {}), results.get("nginx", {})
            multi_r = results.get(f"appproxy worker x{args.processes}", {})
            multi_n = results.get(f"nginx x{args.processes}", {})
            rows.append((mode, ratio(worker.get("rps"), ngx.get("rps")), ratio(worker.get("p99"), ngx.get("p99")),
                         ratio(worker.get("rps"), results.get("configurable-http-proxy", {}).get("rps")),
                         ratio(ws_results["appproxy worker"]["rtps"], ws_results.get("nginx", {}).get("rtps")),
                         ratio(multi_r.get("rps"), multi_n.get("rps")),
                         ratio(worker.get("cpu_us"), ngx.get("cpu_us"))))
        if scale is not None:
            measure_scale(scale, wrk, args)
        print("\nSummary (targets: req/s >= 0.75x nginx, p99 <= 1.5x nginx, websocket round trips >= 0.9x nginx)",
              flush=True)
        print_table(rows)
        coordinator.shutdown()
        if scale is not None:
            scale["coordinator"].shutdown()
    finally:
        children.stop_all()
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def print_table(rows):
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i])
                        for i, cell in enumerate(row)), flush=True)
        if index == 0:
            print("  ".join("-" * w for w in widths), flush=True)


if __name__ == "__main__":
    sys.exit(main())
