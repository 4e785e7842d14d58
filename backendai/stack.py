"""Run the whole stack on one machine in the foreground (the embedded mode of
``scripts/run``): the web/websocket server (daphne), a Celery worker, Celery
beat, a local agent, an app proxy worker, the storage proxy and the internal metrics
listener (``manage.py serve_metrics``), each a child process whose output
is prefixed with its name.

A supervisor keeps them running: a child that exits is started again after a
backoff (1 s doubling to 30 s, back to 1 s once it stayed up for a minute), and
every such event is a line on the console.  Only a child that fails again and
again in a short window (5 times within 60 s by default) stops the stack, and
the exit status says which.  Beat is also watched through ``/readyz``: a beat
that is alive but has stopped ticking is restarted after a grace period.

When the stack stops (Ctrl-C, SIGTERM or too many failures) the children stop
in order, the proxy and the agent first, each with a grace period and then
SIGKILL of its process group.  Kernels are left running: the agent daemon
re-adopts them when the stack starts again (``docs/architecture.md``).

Ports: the agent's and the app proxy's port ranges and the proxy's setup port
are derived from ``--port`` (:func:`derived_ports`), so a second stack at another
``--port`` takes other ports; every port is checked to be free before anything
starts.  This module imports no Django."""
from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

ROOT = Path(__file__).resolve().parent.parent

# --- ports ------------------------------------------------------------------------------------

DEFAULT_PORT = 8091
# Derived ranges live below Linux's ephemeral range (32768-60999), so outgoing
# connections never hold them, and above the usual service ports.
PORT_REGION = (10000, 32599)
BLOCK = 200  # ports per stack: AGENT_SPAN for kernels, then PROXY_SPAN for apps, then the proxy's setup port
AGENT_SPAN = 140
PROXY_SPAN = 59
BLOCKS = (PORT_REGION[1] - PORT_REGION[0] + 1) // BLOCK  # 113 stacks side by side


class DerivedPorts(NamedTuple):
    agent_ports: str
    proxy_ports: str
    proxy_api_port: int


def derived_ports(port: int) -> DerivedPorts:
    """The agent's range, the app proxy's range and its setup port for a stack at web ``port``.

    Each web port gets one block of :data:`BLOCK` ports in :data:`PORT_REGION`,
    block ``(port - 8091) mod BLOCKS``: 8091 gets 10000-10199, 8092 the next
    block, and so on, so any two web ports fewer than :data:`BLOCKS` apart (and
    every web port below 10000) never share a port."""
    base = PORT_REGION[0] + ((port - DEFAULT_PORT) % BLOCKS) * BLOCK
    agent = (base, base + AGENT_SPAN - 1)
    proxy = (agent[1] + 1, agent[1] + PROXY_SPAN)
    return DerivedPorts(f"{agent[0]}-{agent[1]}", f"{proxy[0]}-{proxy[1]}", proxy[1] + 1)


#: The embedded storage proxy's two ports (manager API, client API) per web port, in a region of their
#: own above Linux's ephemeral range: web port ``p`` gets ``STORAGE_REGION[0] + 2 * block`` and the next.
STORAGE_REGION = (61000, 61000 + 2 * BLOCKS - 1)


#: The metrics listener's port per web port (``manage.py serve_metrics``), in the gap between
#: :data:`PORT_REGION` and Linux's ephemeral range: web port ``p`` gets ``METRICS_REGION[0] + block``.
METRICS_REGION = (32600, 32600 + BLOCKS - 1)


def metrics_port(port: int) -> int:
    """The stack's internal metrics listener port (``/metrics``, ``/metrics/service_discovery``)."""
    return METRICS_REGION[0] + (port - DEFAULT_PORT) % BLOCKS


def storage_ports(port: int) -> tuple[int, int]:
    """The embedded storage proxy's (manager API port, client API port) for a stack at web ``port``."""
    base = STORAGE_REGION[0] + 2 * ((port - DEFAULT_PORT) % BLOCKS)
    return base, base + 1


def parse_range(text: str) -> tuple[int, int]:
    """``"LOW-HIGH"`` -> (low, high), both in 1024-65535 (no privileged ports)."""
    from backendai.daemon_options import parse_port_range

    low, high = parse_port_range(text)
    if low < 1024:
        raise ValueError(f"{text}: ports below 1024 need privileges; use 1024-65535")
    return low, high


def resolve_ports(args) -> None:
    """Fill in the derived defaults of ``--agent-ports``, ``--proxy-ports`` and ``--proxy-api-port``."""
    derived = derived_ports(args.port)
    args.agent_ports = args.agent_ports or derived.agent_ports
    args.proxy_ports = args.proxy_ports or derived.proxy_ports
    args.proxy_api_port = args.proxy_api_port or derived.proxy_api_port
    manager, client = storage_ports(args.port)
    args.storage_manager_port = getattr(args, "storage_manager_port", 0) or manager
    args.storage_client_port = getattr(args, "storage_client_port", 0) or client
    args.metrics_port = getattr(args, "metrics_port", 0) or metrics_port(args.port)


class PortClaim(NamedTuple):
    ports: range
    option: str
    what: str


def port_claims(args, with_proxy: bool = True) -> list[PortClaim]:
    agent = parse_range(args.agent_ports)
    claims = [PortClaim(range(args.port, args.port + 1), "--port", "the web server"),
              PortClaim(range(agent[0], agent[1] + 1), "--agent-ports", "the agent's kernel ports")]
    if with_proxy:
        proxy = parse_range(args.proxy_ports)
        claims += [PortClaim(range(args.proxy_api_port, args.proxy_api_port + 1), "--proxy-api-port",
                             "the app proxy's setup port"),
                   PortClaim(range(proxy[0], proxy[1] + 1), "--proxy-ports", "the app proxy's app ports")]
    manager, client = storage_port(args, 0), storage_port(args, 1)
    claims += [PortClaim(range(manager, manager + 1), "--storage-manager-port", "the storage proxy's manager API"),
               PortClaim(range(client, client + 1), "--storage-client-port", "the storage proxy's client API")]
    if getattr(args, "metrics_port", 0):
        claims.append(PortClaim(range(args.metrics_port, args.metrics_port + 1), "--metrics-port",
                                "the metrics listener"))
    if getattr(args, "coordinator_port", 0):
        claims.append(PortClaim(range(args.coordinator_port, args.coordinator_port + 1), "--coordinator-port",
                                "the app proxy coordinator"))
    return claims


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (a bind test, with SO_REUSEADDR as the servers
    use it, so connections of a stack stopped a moment ago in TIME_WAIT do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def kernel_ports(args) -> set[int]:
    """Ports held by this stack's own kernels, left running by its last run for the agent to
    re-adopt: the local backend records them in ``<scratch>/<kernel>/kernel.json``, the Docker
    backend in its containers' labels.  Those are expected to be busy."""
    held: set[int] = set()
    for state_file in (Path(args.data_dir) / "agent").glob("*/kernel.json"):
        try:
            state = json.loads(state_file.read_text())
            for service in state.get("service_ports") or []:
                held.update(int(p) for p in service.get("host_ports") or [] if p)
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    if args.agent_backend == "docker":
        try:
            import docker

            from agents.daemon.backends.docker import LABEL_AGENT, LABEL_PORTS

            client = docker.from_env(timeout=5)
            for container in client.containers.list(filters={"label": f"{LABEL_AGENT}={args.agent_id}"}):
                for service in json.loads((container.labels or {}).get(LABEL_PORTS) or "[]"):
                    held.update(int(p) for p in service.get("host_ports") or [] if p)
        except Exception:  # noqa: BLE001 - no engine: then no container holds a port either
            pass
    return held


def busy_ports(args, with_proxy: bool = True) -> list[str]:
    """One message per claim with busy ports (empty: all free), naming the ports and the option."""
    problems = []
    own = kernel_ports(args)
    claims = port_claims(args, with_proxy)
    seen: dict[int, str] = {}
    for claim in claims:
        for port in claim.ports:
            if port in seen:
                problems.append(f"port {port} is given to both {seen[port]} and {claim.option}; "
                                f"choose ranges that do not overlap")
                break
            seen[port] = claim.option
    if problems:
        return problems
    for claim in claims:
        busy = [p for p in claim.ports if p not in own and port_in_use(args.host, p)]
        if not busy:
            continue
        shown = ", ".join(map(str, busy[:5])) + (f" and {len(busy) - 5} more" if len(busy) > 5 else "")
        where = f"{claim.ports.start}-{claim.ports.stop - 1}" if len(claim.ports) > 1 else ""
        problems.append(f"port{'s' if len(busy) > 1 else ''} {shown} ({claim.what}{' ' + where if where else ''}) "
                        f"{'are' if len(busy) > 1 else 'is'} already in use on {args.host}: choose other ports "
                        f"with {claim.option}" + ("" if claim.option == "--port" else " (or another --port)"))
    return problems


# --- the children -----------------------------------------------------------------------------

def processes(args, euid: int | None = None) -> dict[str, list[str]]:
    """The command line of every process; ``euid`` is who runs them (default: this process's user)."""
    euid = os.geteuid() if euid is None else euid
    py = sys.executable
    url = f"http://127.0.0.1:{args.port}"
    data = Path(args.data_dir)
    derived = derived_ports(args.port)
    coordinator_port = getattr(args, "coordinator_port", 0)
    coordinator = f"http://127.0.0.1:{coordinator_port}" if coordinator_port else url
    commands = {
        # terminals and streams stay open as long as they are used (daphne closes websockets after
        # a day by default); the access log goes to a file, the console keeps what matters
        "web": [py, "-m", "daphne", "-b", args.host, "-p", str(args.port), "--websocket_timeout", "-1",
                "--access-log", str(data / "logs" / "access.log"), "backendai.asgi:application"],
        "worker": [py, "-m", "celery", "-A", "backendai.celery", "worker", "--pool=solo", "--loglevel=INFO",
                   "--without-gossip", "--without-mingle", "--hostname", f"embedded@{args.port}"],
        # beat on its own: it can be restarted (or die) without the worker, and the reverse
        "beat": [py, "-m", "celery", "-A", "backendai.celery", "beat", "--loglevel=INFO",
                 "--schedule", str(data / "celerybeat-schedule")],
        "agent": [py, "-m", "agents.daemon", "--manager-url", url, "--agent-id", args.agent_id,
                  "--scaling-group", "default", "--backend", args.agent_backend,
                  "--scratch-root", str(data / "agent"), "--port-range", args.agent_ports or derived.agent_ports,
                  # its /metrics on any free port: the manager's service discovery lists where
                  "--metrics-listen", "127.0.0.1:0",
                  *(["--local-allow-root"] if local_as_root(args, euid) else [])],
        # the storage proxy: folder files live under <VFOLDER_ROOT>/volume1; clients upload and download
        # at its client API, the manager reaches its manager API (docs/vfolders.md)
        "storage": [py, "-m", "storageproxy", "--volume", f"volume1={storage_root(args) / 'volume1'}",
                    "--manager-host", "127.0.0.1", "--manager-port", str(storage_port(args, 0)),
                    "--client-host", args.host, "--client-port", str(storage_port(args, 1)),
                    "--client-url", storage_urls(args)[1],
                    # its /metrics on any free port: it names the port at /status, the service discovery lists it
                    "--metrics-listen", "127.0.0.1:0"],
        # the app proxy worker: one port per opened app from --proxy-ports, setup links on --proxy-api-port
        "proxy": [py, "-m", "appproxy.worker", "--coordinator-url", coordinator, "--name", "local-proxy",
                  "--mode", "port", "--bind-host", args.host, "--advertised-host", "127.0.0.1" if args.host in ("0.0.0.0", "::")
                  else args.host, "--port-range", args.proxy_ports or derived.proxy_ports,
                  "--api-port", str(args.proxy_api_port or derived.proxy_api_port),
                  "--heartbeat-interval", "5", "--sync-interval", "10"],
    }
    # the internal metrics listener: every process's metrics (PROMETHEUS_MULTIPROC_DIR) and the service discovery
    commands["metrics"] = [py, str(ROOT / "manage.py"), "serve_metrics", "--listen",
                           f"127.0.0.1:{getattr(args, 'metrics_port', 0) or metrics_port(args.port)}"]
    if coordinator_port:  # --coordinator-port: the app proxy coordinator as its own process (docs/appproxy.md)
        commands["coordinator"] = [py, "-m", "appproxy.coordinator", "--host", "127.0.0.1", "--port",
                                   str(coordinator_port)]
    return commands


def storage_root(args) -> Path:
    """Where the embedded storage proxy keeps its volumes: ``VFOLDER_ROOT``, else ``<data dir>/vfroot``."""
    root = os.environ.get("VFOLDER_ROOT")
    return Path(root).expanduser() if root else Path(args.data_dir) / "vfroot"


def storage_port(args, which: int) -> int:
    """The storage proxy's manager API port (``which`` 0) or client API port (1): the option, else derived."""
    option = getattr(args, ("storage_manager_port", "storage_client_port")[which], 0)
    return option or storage_ports(args.port)[which]


def storage_urls(args) -> tuple[str, str]:
    """The embedded storage proxy's (manager API URL, client API URL) as the manager and clients reach them."""
    manager_port, client_port = storage_port(args, 0), storage_port(args, 1)
    client_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    return (os.environ.get("STORAGE_PROXY_MANAGER_URL") or f"http://127.0.0.1:{manager_port}",
            os.environ.get("STORAGE_PROXY_CLIENT_URL") or f"http://{client_host}:{client_port}")


START_ORDER = ("storage", "web", "coordinator", "metrics", "worker", "beat", "agent", "proxy")
# the proxy and the agent first, so they can say goodbye to the web server; the web server, then the
# storage proxy last (the web server's folder requests finish first)
STOP_ORDER = (("proxy",), ("agent",), ("beat", "worker"), ("web", "coordinator", "metrics"), ("storage",))


def local_as_root(args, euid: int) -> bool:
    """The local agent would run as root: the daemon refuses that unless told, so the embedded stack tells it."""
    return args.agent_backend == "local" and euid == 0


def local_backend_banner(args, euid: int | None = None) -> str | None:
    """One line saying what the local backend is (None with the Docker backend)."""
    if args.agent_backend != "local":
        return None
    import pwd

    uid = os.geteuid() if euid is None else euid
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    root = " (as root: started with --local-allow-root)" if uid == 0 else ""
    return (f"[stack ] WARNING: the local agent runs every session's code as user {user}{root} on this machine "
            "with no isolation; never use it for untrusted users (--agent-backend docker isolates them)")


class Console:
    """Serialized, prefixed lines on standard output (a closed pipe is ignored)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self.lock:
            try:
                self.stream.write(f"[{name:6}] {text.rstrip()}\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def say(self, text: str) -> None:
        self.line("stack", text)

    def pump(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.line(name, raw.decode(errors="replace"))
        stream.close()


def http_answers(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


# --- the supervisor ---------------------------------------------------------------------------

@dataclass
class Child:
    """One supervised process.  ``ready`` (optional) gates its first start, e.g. on the web server."""
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: Path | None = None
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay: float = 0.0
    restart_at: float | None = None
    failures: collections.deque = field(default_factory=collections.deque)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    """Start children, restart the ones that exit, stop all of them in order.

    Hand-written rather than supervisord/circus: the rules are the stack's own
    (start gates, a readiness-driven restart, ordered stop, console lines) and
    fit in one small class without a service or a configuration file."""

    def __init__(self, children: list[Child], *, console: Console | None = None, backoff_initial: float = 1.0,
                 backoff_max: float = 30.0, stable_after: float = 60.0, max_failures: int = 5,
                 failure_window: float = 60.0, stop_grace: float = 15.0, poll_interval: float = 0.2,
                 stop_order=None, on_exit: Callable[[int], None] | None = None):
        self.children = {child.name: child for child in children}
        self.console = console or Console()
        self.backoff_initial, self.backoff_max, self.stable_after = backoff_initial, backoff_max, stable_after
        self.max_failures, self.failure_window = max_failures, failure_window
        self.stop_grace, self.poll_interval = stop_grace, poll_interval
        self.stop_order = stop_order or [[name] for name in reversed(self.children)]
        self.on_exit = on_exit
        self.stopping = threading.Event()
        self.hurry = threading.Event()
        self.gave_up: str | None = None
        self._requests: queue.Queue = queue.Queue()

    # -- control, from any thread -------------------------------------------------------------
    def stop(self) -> None:
        """Ask for a stop; asked again while stopping, skip the grace periods."""
        if self.stopping.is_set():
            self.hurry.set()
        self.stopping.set()

    def request_restart(self, name: str, reason: str) -> None:
        self._requests.put((name, reason))

    def started_at(self, name: str) -> float:
        child = self.children.get(name)
        return child.started_at if child is not None and child.process is not None else time.monotonic()

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise until a stop is asked (0) or a child failed too often (1); then stop all."""
        try:
            while not self.stopping.is_set():
                self.tick()
                self.stopping.wait(self.poll_interval)
        finally:
            self.stop_all()
        return 1 if self.gave_up else 0

    def tick(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if self.stopping.is_set():
                return
            if child.process is None:
                due = child.restart_at is not None and now >= child.restart_at
                first = child.restart_at is None and child.restarts == 0 and (child.ready is None or child.ready())
                if due or first:
                    self.spawn(child)
                continue
            code = child.process.poll()
            if code is not None:
                self._exited(child, code, time.monotonic())
        while not self.stopping.is_set():
            try:
                name, reason = self._requests.get_nowait()
            except queue.Empty:
                break
            child = self.children.get(name)
            if child is None or child.process is None:
                continue
            child.restarts += 1
            self.console.say(f"{name} {reason}; restarting it (restart {child.restarts})")
            self._terminate([child], min(self.stop_grace, 5.0))
            self.spawn(child)

    def spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(child.argv, cwd=child.cwd or ROOT, env=child.env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None
        threading.Thread(target=self.console.pump, args=(child.name, child.process.stdout), daemon=True,
                         name=f"pump-{child.name}").start()
        self.console.say(f"{child.name} started (pid {child.process.pid})")

    def _exited(self, child: Child, code: int, now: float) -> None:
        if self.on_exit is not None:
            self.on_exit(child.process.pid)
        uptime = now - child.started_at
        child.process = None
        child.failures.append(now)
        while child.failures and now - child.failures[0] > self.failure_window:
            child.failures.popleft()
        if len(child.failures) >= self.max_failures:
            self.gave_up = child.name
            self.console.say(f"{child.name} exited with status {code}: {len(child.failures)} failures within "
                             f"{self.failure_window:g} s (limit {self.max_failures}); stopping the stack")
            self.stopping.set()
            return
        if uptime >= self.stable_after or child.delay == 0:
            child.delay = self.backoff_initial
        else:
            child.delay = min(child.delay * 2, self.backoff_max)
        child.restarts += 1
        child.restart_at = now + child.delay
        self.console.say(f"{child.name} exited with status {code}; restarting in {child.delay:.1f} s "
                         f"(restart {child.restarts})")

    # -- stopping -----------------------------------------------------------------------------
    def stop_all(self) -> None:
        self.stopping.set()
        named = {name for stage in self.stop_order for name in stage}
        stages = [list(stage) for stage in self.stop_order] + [[n for n in self.children if n not in named]]
        for stage in stages:
            self._terminate([self.children[n] for n in stage if n in self.children], self.stop_grace)

    def _terminate(self, children: list[Child], grace: float) -> None:
        """SIGTERM (and SIGCONT, should one be stopped), wait up to ``grace``, then SIGKILL the group."""
        running = [c for c in children if c.process is not None and c.process.poll() is None]
        for child in running:
            for sig in (signal.SIGTERM, signal.SIGCONT):
                try:
                    os.killpg(child.process.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for child in running:
            while child.process.poll() is None and time.monotonic() < deadline and not self.hurry.is_set():
                time.sleep(0.05)
            if child.process.poll() is None:
                self.console.say(f"{child.name} did not stop within {grace:g} s; killing it")
        for child in children:
            if child.process is None:
                continue
            try:
                os.killpg(child.process.pid, signal.SIGKILL)  # what is left of its group
            except (ProcessLookupError, PermissionError):
                pass
            child.process.wait()
            if self.on_exit is not None:
                self.on_exit(child.process.pid)
            child.process = None


class BeatWatch:
    """Restart the beat when ``/readyz`` says it is not ticking (``checks.beat.ok`` false, i.e. no
    tick for ``BEAT_MAX_AGE``) for ``grace`` seconds more.  A (re)started beat is left alone for
    ``grace`` seconds before ``/readyz`` is asked at all: it has not ticked yet, and a 503 from
    ``/readyz`` is an ERROR line in the web server's log."""

    def __init__(self, supervisor: Supervisor, readyz_url: str, interval: float = 5.0, grace: float = 15.0,
                 name: str = "beat"):
        self.supervisor, self.url, self.interval, self.grace, self.name = supervisor, readyz_url, interval, grace, name
        self.unhealthy_since: float | None = None

    def beat_health(self) -> dict | None:
        """``checks.beat`` of ``/readyz`` (served with 200 or 503), or None when unknown."""
        try:
            with urllib.request.urlopen(self.url, timeout=min(self.interval, 5)) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        except (OSError, ValueError):
            return None
        try:
            beat = (json.loads(body).get("checks") or {}).get(self.name)
        except (ValueError, AttributeError):
            return None
        return beat if isinstance(beat, dict) and isinstance(beat.get("ok"), bool) else None

    def check(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self.supervisor.started_at(self.name) < self.grace:
            self.unhealthy_since = None
            return
        beat = self.beat_health()
        if beat is None or beat["ok"]:
            self.unhealthy_since = None
            return
        if self.unhealthy_since is None:
            self.unhealthy_since = now
        if now - self.unhealthy_since >= self.grace:
            age = beat.get("age")
            last = f"last tick {age:.0f} s ago" if isinstance(age, (int, float)) else "no tick recorded"
            self.supervisor.request_restart(self.name, f"is not ticking ({last}; /readyz says unhealthy)")
            self.unhealthy_since = None

    def run(self) -> None:
        while not self.supervisor.stopping.wait(self.interval):
            self.check()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True, name="beat-watch")
        thread.start()
        return thread


class LogRotation:
    """Keep the embedded stack's log files under ``max_bytes``: a file past it becomes ``<name>.1``
    (``.1`` becomes ``.2`` ..., ``keep`` of them kept).  Files whose writers reopen a moved file
    (``reopens``: the access log's ``WatchedFileHandler`` in every process) are renamed; the others
    (daphne's ``--access-log``, opened once in append mode) are copied then truncated, so their
    writer goes on at the start of the same file (lines written between the copy and the
    truncation are lost: that window is a few milliseconds every ``max_bytes``)."""

    def __init__(self, stopping: threading.Event, reopens: list[Path], appends: list[Path], *,
                 max_bytes: int, keep: int, interval: float = 30.0):
        self.stopping, self.reopens, self.appends = stopping, reopens, appends
        self.max_bytes, self.keep, self.interval = max_bytes, keep, interval

    def rotate(self, path: Path, copy: bool) -> bool:
        """Rotate ``path`` if it is past the limit; True when it did."""
        try:
            if path.stat().st_size <= self.max_bytes:
                return False
        except OSError:
            return False
        for index in range(self.keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{index}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{index + 1}"))
        first = path.with_name(f"{path.name}.1")
        if copy:
            shutil.copyfile(path, first)
            with open(path, "r+b") as handle:
                handle.truncate(0)
        else:
            path.replace(first)
        return True

    def check(self) -> None:
        for paths, copy in ((self.reopens, False), (self.appends, True)):
            for path in paths:
                try:
                    self.rotate(path, copy)
                except OSError as exc:  # a full disk or a removed directory: try again next time
                    print(f"[stack ] could not rotate {path}: {exc}", file=sys.stderr, flush=True)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.check()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True, name="log-rotation")
        thread.start()
        return thread


def forget_metrics(metrics_dir: Path) -> Callable[[int], None]:
    """What to do when a child exits: let Prometheus' multiprocess mode drop its live gauges."""
    def forget(pid: int) -> None:
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, str(metrics_dir))
        except Exception:  # noqa: BLE001 - metrics are best effort
            pass
    return forget


# --- the command ------------------------------------------------------------------------------

def storage_secret(data: Path) -> str:
    """``STORAGE_PROXY_SECRET``, else the one the manager generated into the data dir (``backendai.config``)."""
    from backendai.config import storage_proxy_secret

    return storage_proxy_secret(os.environ, data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m backendai.stack")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="web server port (default 8091)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--data-dir", default=str(ROOT / "var"))
    parser.add_argument("--agent-id", default="local-agent")
    parser.add_argument("--agent-backend", default="local", choices=["local", "docker"])
    parser.add_argument("--agent-ports", default=None,
                        help="LOW-HIGH, the agent's ports for kernel services (default: derived from --port)")
    parser.add_argument("--proxy-ports", default=None,
                        help="LOW-HIGH, the ports the app proxy gives opened apps (default: derived from --port)")
    parser.add_argument("--proxy-api-port", type=int, default=0,
                        help="the app proxy's setup port (default: derived from --port)")
    parser.add_argument("--coordinator-port", type=int, default=0,
                        help="run the app proxy coordinator as its own process on this port (default: inside the "
                             "web server)")
    parser.add_argument("--storage-manager-port", type=int, default=0,
                        help="the storage proxy's manager API port (default: derived from --port)")
    parser.add_argument("--storage-client-port", type=int, default=0,
                        help="the storage proxy's client API port, where clients upload and download "
                             "(default: derived from --port)")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="the internal metrics listener's port on 127.0.0.1 (/metrics, /metrics/service_discovery; "
                             "default: derived from --port)")
    parser.add_argument("--check-ports", action="store_true", help="only check that the ports are free, then exit")
    parser.add_argument("--storage-env", action="store_true",
                        help="print the STORAGE_PROXY_*_URL settings of this stack as shell exports, then exit")
    supervision = parser.add_argument_group("supervision")
    supervision.add_argument("--restart-limit", type=int, default=5,
                             help="stop the stack when one process fails this many times ... (default 5)")
    supervision.add_argument("--restart-window", type=float, default=60.0, help="... within this many seconds (60)")
    supervision.add_argument("--backoff-initial", type=float, default=1.0, help="first restart delay, s (1)")
    supervision.add_argument("--backoff-max", type=float, default=30.0, help="longest restart delay, s (30)")
    supervision.add_argument("--stable-after", type=float, default=60.0,
                             help="a process up this long restarts with the first delay again, s (60)")
    supervision.add_argument("--health-interval", type=float, default=5.0, help="how often /readyz is read, s (5)")
    supervision.add_argument("--beat-grace", type=float, default=15.0,
                             help="restart beat when /readyz calls it unhealthy this long, s (15)")
    supervision.add_argument("--log-max-mb", type=int, default=64,
                             help="rotate <data-dir>/logs/access.log and requests.log past this size, MiB (64)")
    supervision.add_argument("--log-keep", type=int, default=5, help="rotated log files kept per log (5)")
    supervision.add_argument("--stop-grace", type=float, default=15.0,
                             help="how long each process may take to stop before SIGKILL, s (15)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1024 <= args.port <= 65535:
        parser.error(f"--port {args.port}: use 1024-65535")
    if args.coordinator_port and not 1024 <= args.coordinator_port <= 65535:
        parser.error(f"--coordinator-port {args.coordinator_port}: use 1024-65535")
    if args.metrics_port and not 1024 <= args.metrics_port <= 65535:
        parser.error(f"--metrics-port {args.metrics_port}: use 1024-65535")
    if not 1 <= args.log_max_mb <= 1 << 20 or not 1 <= args.log_keep <= 1000:
        parser.error("--log-max-mb: use 1-1048576; --log-keep: use 1-1000")
    resolve_ports(args)
    try:
        for option in ("agent_ports", "proxy_ports"):
            parse_range(getattr(args, option))
    except ValueError as exc:
        parser.error(str(exc))
    data = Path(args.data_dir)
    manager_url, client_url = storage_urls(args)
    if args.storage_env:
        print(f"export STORAGE_PROXY_MANAGER_URL={shlex.quote(manager_url)} "
              f"STORAGE_PROXY_CLIENT_URL={shlex.quote(client_url)}")
        return 0
    proxy_token = data / "proxy-token"
    with_proxy = proxy_token.exists() or args.check_ports
    problems = busy_ports(args, with_proxy)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr, flush=True)
        return 1
    if args.check_ports:
        return 0

    console = Console()
    (data / "logs").mkdir(parents=True, exist_ok=True)
    metrics_dir = data / "prometheus"
    if metrics_dir.exists():
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
    metrics_dir.mkdir(parents=True, exist_ok=True)
    web_url = f"http://127.0.0.1:{args.port}"
    env = dict(os.environ, BACKEND_DATA_DIR=str(data), PYTHONUNBUFFERED="1", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    env["METRICS_LISTEN"] = f"127.0.0.1:{args.metrics_port}"  # what the web process' settings say too
    env.setdefault("INTERNAL_WEB_URL", web_url)  # the worker's hints reach the web process (backendai.hints)
    # one line per request (backendai.access: request id, route, status, user) beside daphne's access log
    env.setdefault("ACCESS_LOG_FILE", str((data / "logs" / "requests.log").resolve()))
    env["STORAGE_PROXY_MANAGER_URL"], env["STORAGE_PROXY_CLIENT_URL"] = manager_url, client_url
    storage_root(args).joinpath("volume1").mkdir(parents=True, exist_ok=True)
    if args.coordinator_port:  # the manager's processes reach the separate coordinator over HTTP
        env["APPPROXY_COORDINATOR_URL"] = f"http://127.0.0.1:{args.coordinator_port}"
    commands = processes(args)
    web_up = threading.Event()

    def web_answers() -> bool:  # a gate for the agent and the proxy: once open, it stays open
        if not web_up.is_set() and http_answers(f"{web_url}/healthz", timeout=1):
            web_up.set()
        return web_up.is_set()

    children = []
    for name in START_ORDER:
        if name not in commands:  # the coordinator runs on its own only with --coordinator-port
            continue
        child_env = dict(env)
        if name in ("agent", "storage", "proxy"):  # they serve their own /metrics: never summed into the manager's
            child_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if name == "agent":  # the token travels in the environment, never on a command line
            child_env["BAI_AGENT_TOKEN"] = (data / "agent-token").read_text().strip()
        if name == "storage":  # the secret the manager shares with it, in the environment, never on a command line
            child_env["BAI_STORAGE_SECRET"] = storage_secret(data)
        if name == "proxy":
            if not proxy_token.exists():
                console.say(f"no {proxy_token} (populate --proxy-token writes it): running without the app proxy")
                continue
            child_env["BAI_PROXY_TOKEN"] = proxy_token.read_text().strip()
        children.append(Child(name, commands[name], child_env, ROOT,
                              ready=web_answers if name in ("agent", "proxy") else None))
    supervisor = Supervisor(children, console=console, backoff_initial=args.backoff_initial,
                            backoff_max=args.backoff_max, stable_after=args.stable_after,
                            max_failures=args.restart_limit, failure_window=args.restart_window,
                            stop_grace=args.stop_grace, stop_order=STOP_ORDER, on_exit=forget_metrics(metrics_dir))
    signal.signal(signal.SIGINT, lambda *_: supervisor.stop())
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())

    banner = local_backend_banner(args)
    if banner:
        console.line("stack", banner[len("[stack ] "):])
    console.say(f"web {web_url}, agent ports {args.agent_ports}, app ports {args.proxy_ports}, "
                f"app proxy setup port {args.proxy_api_port}, storage proxy {manager_url} (clients: {client_url}), "
                f"metrics http://127.0.0.1:{args.metrics_port}/metrics (Prometheus service discovery: "
                f"/metrics/service_discovery); "
                f"access log {data / 'logs' / 'access.log'}")
    BeatWatch(supervisor, f"{web_url}/readyz", interval=args.health_interval, grace=args.beat_grace).start()
    LogRotation(supervisor.stopping, [Path(env["ACCESS_LOG_FILE"])], [data / "logs" / "access.log"],
                max_bytes=args.log_max_mb << 20, keep=args.log_keep).start()
    status = supervisor.run()
    if supervisor.gave_up:
        console.say(f"stopped: {supervisor.gave_up} kept failing (exit status 1); kernels were left running "
                    "and are re-adopted on the next start")
    else:
        console.say("stopped (kernels keep running; the next start re-adopts them)")
    return status


if __name__ == "__main__":
    sys.exit(main())
