"""Fixtures for the end-to-end tests: a real Chromium driven by Playwright and
the official ``backend.ai-client`` run in its own virtualenv, both talking to
pytest-django's ``live_server``.

Every helper here is a fixture, because the root ``tests/conftest.py`` is not
importable under a stable name with ``--import-mode=importlib``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"
DEFAULT_CLIENT_BIN = "/work/main/.venv-client/bin/backend.ai"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
    "--no-first-run",
    "--disable-sync",
]
SUBPROCESS_TIMEOUT = 60
UI_TIMEOUT_MS = 15_000


def _root_conftest():
    """The already-loaded root conftest module (whatever name pytest gave it)."""
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) and Path(module.__file__).resolve() == ROOT_CONFTEST:
            return module
    spec = importlib.util.spec_from_file_location("_backendai_root_conftest", ROOT_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def require():
    """``require(available, what)`` from the root conftest: skip here, fail under CI."""
    return _root_conftest().require


@pytest.fixture(scope="session")
def password():
    return _root_conftest().PASSWORD


@pytest.fixture(scope="session")
def xterm_assets(require):
    """xterm.js under static/vendor/xterm (scripts/lib/node.sh ensure_xterm), before daphne starts."""
    root = Path(__file__).resolve().parents[2]
    xterm = root / "static" / "vendor" / "xterm"
    if not (xterm / "xterm.js").is_file():
        subprocess.run(["bash", "-c", f'. "{root}/scripts/lib/node.sh" && ensure_xterm'], capture_output=True,
                       timeout=600)
    require((xterm / "xterm.js").is_file() and (xterm / "addon-fit.js").is_file(), "xterm.js (npm) in static/vendor")
    return xterm


@pytest.fixture
def storage_host(settings, tmp_path, db):
    """The default storage host, its folders under this test's ``tmp_path / "vfroot"``."""
    from vfolders import services

    settings.VFOLDER_ROOT = tmp_path / "vfroot"
    return services.ensure_default_storage_host()


@pytest.fixture
def server_host(live_server) -> str:
    """``localhost:PORT``: the Host header a client sends, and so what it signs."""
    return urlsplit(live_server.url).netloc


# --- the browser ------------------------------------------------------------------------------

@pytest.fixture
def browser(require, chromium_path, live_server, monkeypatch):
    """Debian's Chromium, headless; Playwright never downloads a browser."""
    require(importlib.util.find_spec("playwright") is not None, "Playwright for Python")
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    # Playwright's sync API keeps an event loop running in this thread; the test's
    # own ORM checks are plain synchronous code, so let Django run them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from django.db import connections
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
            # While that loop runs, Django keeps this thread's connections in a
            # context variable, apart from the ones the test database teardown
            # closes: close them here or PostgreSQL refuses to drop the database.
            connections.close_all()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def login(page, password):
    """``login(user_or_email, password=PASSWORD)``: log in through the form."""

    def do(user, secret=None):
        email = getattr(user, "email", user)
        page.goto("/ui/login/")
        page.fill("input[name=username]", email)
        page.fill("input[name=password]", secret or password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_load_state("domcontentloaded")
        return page

    return do


# --- signed calls -----------------------------------------------------------------------------

@pytest.fixture
def signed_get(live_server, server_host):
    """``signed_get(access_key, secret_key, target)``: a real HTTP call signed like the client."""
    import requests

    from backendai import signing

    def do(access_key, secret_key, target):
        headers = signing.signed_headers(access_key, secret_key, "GET", target, server_host, content_type="text/plain")
        return requests.get(live_server.url + target, headers=headers, timeout=SUBPROCESS_TIMEOUT)

    return do


# --- the official client ----------------------------------------------------------------------

@pytest.fixture
def client_bin(request, require):
    """The official client's ``backend.ai``: 23.9.10, or the version a test is parametrized with
    indirectly (``@pytest.mark.parametrize("client_bin", list(CLIENT_VERSIONS), indirect=True)``)."""
    version = getattr(request, "param", None)
    if version is None:
        return Path(os.environ.get("BACKENDAI_CLIENT_BIN") or DEFAULT_CLIENT_BIN)
    return client_binary(version, require)


def client_binary(version: str, require) -> Path:
    """The ``backend.ai`` of the official client ``version`` (a key of ``CLIENT_VERSIONS``)."""
    variable, venv, python_version = CLIENT_VERSIONS[version]
    configured = os.environ.get(variable)
    require(configured != "", f"python{python_version} for the official client {version}")
    binary = Path(configured or Path(__file__).resolve().parents[2] / venv / "bin" / "backend.ai")
    require(binary.is_file(), f"the official client {version} at {binary} (scripts/test installs it)")
    return binary


def _official_client(client_bin, require, endpoint, tmp_path):
    """Runs the official client (its CLI or a script under its python) against
    ``endpoint``, from an empty directory with a clean environment.

    ``.cli(keypair, *args)`` and ``.script(keypair, code)`` return the
    CompletedProcess; ``keypair`` is anything with access_key/secret_key or a
    ``(access_key, secret_key)`` pair.
    """
    python = client_bin.parent / "python"
    require(client_bin.is_file() and python.is_file(), f"the official backend.ai client at {client_bin}")
    workdir = tmp_path / "client-cwd"
    home = tmp_path / "client-home"
    workdir.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    endpoint = endpoint.rstrip("/")
    assert not urlsplit(endpoint).netloc.endswith(":80"), endpoint
    def env_for(keypair):
        if isinstance(keypair, tuple):
            access_key, secret_key = keypair
        else:
            access_key, secret_key = keypair.access_key, keypair.secret_key
        return {
            "PATH": f"{client_bin.parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "BACKEND_ENDPOINT": endpoint,
            "BACKEND_ACCESS_KEY": access_key,
            "BACKEND_SECRET_KEY": secret_key,
            "BACKEND_ENDPOINT_TYPE": "api",
        }

    def run(argv, keypair):
        return subprocess.run(
            argv, cwd=workdir, env=env_for(keypair), capture_output=True, text=True,
            timeout=SUBPROCESS_TIMEOUT, stdin=subprocess.DEVNULL,
        )

    class OfficialClient:
        def cli(self, keypair, *args):
            return run([str(client_bin), *args], keypair)

        def script(self, keypair, code):
            return run([str(python), "-c", code], keypair)

        def popen(self, keypair, *args):
            """Start the CLI in the background, its output (stdout and stderr, unbuffered)
            on a text pipe; the caller reads it and must end the process."""
            return subprocess.Popen([str(client_bin), *args], cwd=workdir,
                                    env={**env_for(keypair), "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)

        def script_json(self, keypair, code):
            """Run ``code`` and parse the last stdout line as JSON."""
            done = self.script(keypair, code)
            assert done.returncode == 0, f"client script failed\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            lines = [line for line in done.stdout.splitlines() if line.strip()]
            assert lines, f"client script printed nothing\nstderr:\n{done.stderr}"
            return json.loads(lines[-1])

    return OfficialClient()


@pytest.fixture
def official_client(client_bin, require, live_server, tmp_path):
    """The official client against pytest-django's live server."""
    return _official_client(client_bin, require, live_server.url, tmp_path)


@pytest.fixture
def stack_client(client_bin, require, live_stack, tmp_path):
    """The official client against the real-process stack (``live_stack``)."""
    return _official_client(client_bin, require, live_stack.url, tmp_path)


# version -> (the variable scripts/test exports, the virtualenv under the checkout, the Python it needs)
CLIENT_VERSIONS = {
    "23.9.10": ("BACKENDAI_CLIENT_BIN", ".venv-client", "3.11"),
    "24.9.14": ("BACKENDAI_CLIENT24_BIN", ".venv-client-24", "3.12"),
    "26.9.6": ("BACKENDAI_CLIENT26_BIN", ".venv-client-26", "3.13"),
}


@pytest.fixture
def versioned_client(require, live_server, tmp_path):
    """``versioned_client("24.9.14")``: that official client against the live server, as
    ``official_client``.  scripts/test exports an empty variable when the version's Python is
    missing; either missing is left out locally and fails under CI=true (``require``)."""

    def make(version: str):
        binary = client_binary(version, require)
        (tmp_path / version).mkdir(exist_ok=True)
        return _official_client(binary, require, live_server.url, tmp_path / version)

    return make


# Docker fixtures shared with tests/agents
# (docker_client and test_images come from tests/docker_support.py via the root conftest)

# --- the whole stack as real processes ------------------------------------------------------------

import os as _os
import signal as _signal
import socket as _socket
import subprocess as _subprocess
import sys as _sys
import time as _time
from pathlib import Path as _Path

_ROOT = _Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with _socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _test_database_url() -> str:
    from helpers import database_url_of_tests

    return database_url_of_tests()


class LiveStack:
    """daphne + a Celery worker + beat + agent daemons, on the test database."""

    def __init__(self, data_dir: _Path, env: dict, port: int):
        self.data_dir = data_dir
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.host = f"127.0.0.1:{port}"
        self.processes: dict[str, _subprocess.Popen] = {}
        self.logs: dict[str, _Path] = {}
        self.commands: dict[str, tuple[list[str], dict | None]] = {}  # name -> (argv, extra_env) as last started

    def start(self, name: str, argv: list[str], extra_env: dict | None = None) -> _subprocess.Popen:
        log = self.data_dir / f"{name}.log"
        self.logs[name] = log
        self.commands[name] = (list(argv), dict(extra_env) if extra_env else None)
        handle = open(log, "ab")
        env = {k: v for k, v in {**self.env, **(extra_env or {})}.items() if v is not None}  # None: unset
        process = _subprocess.Popen(argv, cwd=_ROOT, env=env, stdout=handle,
                                    stderr=_subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def stop(self, name: str, sig=_signal.SIGTERM, timeout: float = 20) -> int | None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(sig)
        try:
            return process.wait(timeout=timeout)
        except _subprocess.TimeoutExpired:
            _os.killpg(process.pid, _signal.SIGKILL)
            return process.wait(timeout=5)

    def stop_all(self, grace: float = 5) -> None:
        """SIGTERM every process at once, then SIGKILL what is still there after ``grace``."""
        processes = [p for p in self.processes.values() if p.poll() is None]
        for process in processes:
            process.send_signal(_signal.SIGTERM)
        deadline = _time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - _time.monotonic()))
            except _subprocess.TimeoutExpired:
                _os.killpg(process.pid, _signal.SIGKILL)
                process.wait(timeout=5)
        self.processes.clear()
        self.kill_local_kernels()

    def kill_local_kernels(self) -> None:
        """Local kernels outlive their agent by design (the next agent re-adopts them): end the process
        groups recorded in this stack's scratch directories, so no test leaves processes or ports behind."""
        import json as _json

        for state_file in self.data_dir.glob("scratch-*/*/kernel.json"):
            try:
                pid = int(_json.loads(state_file.read_text()).get("pid") or 0)
                if pid and _os.readlink(f"/proc/{pid}/cwd").startswith(str(state_file.parent)):
                    _os.killpg(pid, _signal.SIGKILL)
            except (OSError, ValueError, TypeError):
                continue

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group: no goodbye to the manager."""
        process = self.processes.pop(name)
        _os.killpg(process.pid, _signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, name: str) -> _subprocess.Popen:
        """Start ``name`` again with the command line and environment it last had (as an operator would)."""
        argv, extra_env = self.commands[name]
        return self.start(name, argv, extra_env)

    def log(self, name: str) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace")[-6000:] if path and path.exists() else ""

    def start_agent(self, agent_id: str, backend: str, token: str, port_range: str | None = None) -> None:
        low = 32000 + (abs(hash(agent_id)) % 200) * 20
        self.start(agent_id, [_sys.executable, "-m", "agents.daemon", "--manager-url", self.url, "--agent-id", agent_id,
                              "--backend", backend, "--scratch-root", str(self.data_dir / f"scratch-{agent_id}"),
                              "--port-range", port_range or f"{low}-{low + 19}", "--sync-interval", "1",
                              # its /metrics on any free port (as scripts/run): the service discovery lists it
                              "--stop-timeout", "3", "--metrics-listen", "127.0.0.1:0"],
                   # the suite may run as root; the agent's metrics are its own, not in the manager's multiprocess dir
                   {"BAI_AGENT_TOKEN": token, "BAI_AGENT_LOCAL_ALLOW_ROOT": "true", "PROMETHEUS_MULTIPROC_DIR": None})

    def full_log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def start_local_agent(self, agent_id: str, token: str) -> None:
        """A local agent, waited for until it is ALIVE with its images and its link is open."""
        from agents.models import Agent, AgentStatus

        self.start_agent(agent_id, "local", token)
        self.wait_for(lambda: Agent.objects.filter(pk=agent_id, status=AgentStatus.ALIVE,
                                                   images__name="local/shell:1.0").exists(),
                      what="the local agent with its images")
        self.wait_for(lambda: f"agent {agent_id} link open" in self.full_log("web"), what="the agent's link")

    def enqueue_shell_session(self, keypair, name: str) -> None:
        """``POST /session`` (enqueue only) of a small ``local/shell:1.0`` session, signed by ``keypair``."""
        import json as _json

        import httpx

        from backendai.signing import signed_headers

        body = {"image": "local/shell:1.0", "name": name, "enqueueOnly": True,
                "config": {"resources": {"cpu": "0.25", "mem": "256m"}}}
        headers = signed_headers(keypair.access_key, keypair.secret_key, "POST", "/session", self.host)
        created = httpx.post(self.url + "/session", headers=headers, content=_json.dumps(body), timeout=60)
        assert created.status_code in (200, 201), created.text

    def wait_for(self, predicate, timeout: float = 60, interval: float = 0.25, what: str = "condition"):
        from django.db import close_old_connections

        deadline = _time.monotonic() + timeout
        while _time.monotonic() < deadline:
            close_old_connections()
            value = predicate()
            if value:
                return value
            _time.sleep(interval)
        logs = "\n".join(f"--- {n} ---\n{self.log(n)}" for n in self.logs)
        raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture
def live_stack_env() -> dict:
    """Extra environment for every process of ``live_stack``; a test module overrides this fixture
    (``DB_POOL_MAX_SIZE``, timeouts, ...; a value of None unsets the variable, e.g. ``REDIS_URL``)."""
    return {}


@pytest.fixture
def live_stack(transactional_db, tmp_path, live_stack_env):
    """The stack as real processes on the test database; agents are started by the test."""
    from django.conf import settings

    port = _free_port()
    data_dir = tmp_path / "stack"
    data_dir.mkdir()
    env = {k: v for k, v in _os.environ.items() if not k.startswith(("BAI_AGENT_", "PYTEST", "DJANGO_ALLOW"))}
    env.update(DATABASE_URL=_test_database_url(), BACKEND_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1",
               AGENT_HEARTBEAT_TIMEOUT="6", AGENT_SYNC_INTERVAL="1", SESSION_CREATE_MAX_WAIT="60",
               PROMETHEUS_MULTIPROC_DIR=str(data_dir))
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    else:
        env.pop("REDIS_URL", None)
    # hints from the worker reach the web process with in-memory channel layers (backendai.hints)
    env["INTERNAL_WEB_URL"] = f"http://127.0.0.1:{port}"
    # the run's storage proxy (tests/conftest.py) is the embedded proxy "local" of these processes too
    env.update(STORAGE_PROXY_MANAGER_URL=settings.STORAGE_PROXY_MANAGER_URL,
               STORAGE_PROXY_CLIENT_URL=settings.STORAGE_PROXY_CLIENT_URL,
               STORAGE_PROXY_SECRET=settings.STORAGE_PROXY_SECRET)
    env.update(live_stack_env)
    env = {k: v for k, v in env.items() if v is not None}  # None in live_stack_env: unset that variable
    stack = LiveStack(data_dir, env, port)
    stack.start("web", [_sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                        "backendai.asgi:application"])
    stack.start("worker", [_sys.executable, "-m", "celery", "-A", "backendai.celery", "worker",
                           "--pool=solo", "--loglevel=INFO", "--purge", "--without-gossip", "--without-mingle",
                           "--hostname", f"test@{port}"])
    # beat in its own process, as in production and in the embedded stack
    stack.start("beat", [_sys.executable, "-m", "celery", "-A", "backendai.celery", "beat", "--loglevel=INFO",
                         "--schedule", str(data_dir / "beat-schedule")])
    import urllib.request

    def up():
        try:
            with urllib.request.urlopen(stack.url + "/healthz", timeout=1):
                return True
        except OSError:
            return False

    try:
        stack.wait_for(up, timeout=60, what="the web server")
        yield stack
    finally:
        stack.stop_all()
        from django.db import connections

        connections.close_all()


@pytest.fixture
def cluster(live_stack):
    """Defaults, slot types and the default scaling group, with an agent token for it: (group, token)."""
    from accounts import services as account_services
    from agents import services as agent_services
    from backendai import services as manager_services

    account_services.ensure_defaults()
    manager_services.ensure_intrinsic_slot_types()
    group = agent_services.ensure_default_scaling_group()
    return group, agent_services.issue_token("e2e", scaling_group=group)[1]


# one per test process: concurrent runs on one Docker engine must not see (and stop) each other's containers
DOCKER_NODE = f"e2e-docker-node-{_os.getpid()}"


@pytest.fixture
def docker_node(live_stack, cluster, docker_client, test_images):
    """A real agent daemon on the Docker backend, ALIVE with the bai-test images recorded; yields its id."""
    from agents.models import Agent, AgentStatus

    live_stack.start_agent(DOCKER_NODE, "docker", cluster[1])
    live_stack.wait_for(lambda: Agent.objects.filter(pk=DOCKER_NODE, status=AgentStatus.ALIVE,
                                                     images__name__startswith="bai-test/").count() >= len(test_images),
                        what="the docker agent with its images")
    yield DOCKER_NODE
    for container in docker_client.containers.list(all=True, filters={"label": f"ai.backend.agent-id={DOCKER_NODE}"}):
        container.remove(force=True)
