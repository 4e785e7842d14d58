"""The app proxy coordinator as its own process (``python -m appproxy.coordinator``) on the
test database, a real proxy worker (``python -m appproxy.worker``) registered there with
``POST /workers/register``, routes created through ``POST /routes`` (by hand and through the
manager's HTTP implementation, ``appproxy.gateway.HTTPCoordinator``) reaching the worker and
carrying traffic to a small local HTTP server, and a ``kill -9`` of the coordinator that loses
nothing: the routes, their rows and the worker's service all survive its restart."""
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import close_old_connections
from django.test import override_settings
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from appproxy import gateway
from appproxy import services as proxy_services
from appproxy.models import Circuit, CircuitTombstone, Worker, WorkerStatus
from docker_support import find_free_block as free_block
from docker_support import find_free_port as free_port
from helpers import answers_200, database_url_of_tests
from sessions import services as session_services
from sessions import signals as session_signals
from sessions.models import Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-coordinator-secret-0123456789abcdef"
NAME = "e2e-coord-proxy"


def wait_for(predicate, what: str, timeout: float = 60, logs=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        close_old_connections()
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    text = "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}" for p in (logs or []) if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{text}")


class Processes:
    """Real processes in their own process groups, logged to files, always cleaned up."""

    def __init__(self, directory: Path, env: dict):
        self.directory, self.env = directory, env
        self.running: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[list[str], dict]] = {}

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def start(self, name: str, argv: list[str], extra: dict | None = None) -> None:
        self.commands[name] = (argv, extra or {})
        with open(self.log(name), "ab") as handle:
            self.running[name] = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **(extra or {})}, stdout=handle,
                                                  stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, name: str) -> None:
        self.start(name, *self.commands[name])

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.running.clear()


@pytest.fixture
def target_app():
    """The "app in the session": a small local HTTP server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"hello from the target {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


@pytest.fixture
def processes(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAI_PROXY_", "PYTEST", "DJANGO_ALLOW",
                                                                    "APPPROXY_COORDINATOR_"))}
    env.update(DATABASE_URL=database_url_of_tests(), BACKEND_DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1",
               APPPROXY_COORDINATOR_SECRET=SECRET, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    else:
        env.pop("REDIS_URL", None)
    procs = Processes(tmp_path, env)
    try:
        yield procs
    finally:
        procs.stop_all()
        from django.db import connections

        connections.close_all()


def running_session(owner, target_port: int, name: str) -> Session:
    group = agent_services.ensure_default_scaling_group()
    agent, _ = Agent.objects.get_or_create(id="e2e-coord-node", defaults={
        "scaling_group": group, "addr": "127.0.0.1", "available_slots": {"cpu": "4", "mem": "8589934592"},
        "last_heartbeat": timezone.now()})
    session = session_services.create_session_on_agent(user=owner, image="bai-test/http:1.0", agent=agent,
                                                       slots={"cpu": "1"}, name=name)
    Session.objects.filter(pk=session.pk).update(status="RUNNING")
    session.kernels.update(status="RUNNING", kernel_host="127.0.0.1", service_ports=[
        {"name": "web", "protocol": "http", "container_ports": [8080], "host_ports": [target_port]},
        {"name": "other", "protocol": "http", "container_ports": [8081], "host_ports": [target_port]}])
    return Session.objects.get(pk=session.pk)


def through_setup(setup: dict) -> tuple[str, dict]:
    """Visit the one-time setup link like a browser: the app's URL and the permit cookie."""
    answer = httpx.get(setup["url"], follow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    name, _, rest = answer.headers["set-cookie"].partition("=")
    return answer.headers["location"], {"Cookie": f"{name}={rest.split(';', 1)[0]}"}


def serves(url: str, headers: dict):
    def check():
        try:
            response = httpx.get(url, headers=headers, timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and "hello from the target" in response.text
    return check


def test_a_worker_registers_at_a_separate_coordinator_and_a_restart_loses_nothing(processes, owner, target_app,
                                                                                   defaults, signed):
    session = running_session(owner, target_app, "coord-e2e")
    port = free_port()
    coordinator_url = f"http://127.0.0.1:{port}"
    logs = [processes.log("coordinator"), processes.log("proxy")]
    processes.start("coordinator", [sys.executable, "-m", "appproxy.coordinator", "--port", str(port)])
    wait_for(answers_200(coordinator_url + "/health"), "the coordinator", logs=logs)

    token = proxy_services.issue_token("e2e coordinator proxy", authority=NAME)[1]
    base = free_block(11)
    api = f"http://127.0.0.1:{base + 10}"
    processes.start("proxy", [sys.executable, "-m", "appproxy.worker", "--coordinator-url", coordinator_url,
                              "--name", NAME, "--mode", "port", "--bind-host", "127.0.0.1",
                              "--port-range", f"{base}-{base + 9}", "--api-port", str(base + 10),
                              "--heartbeat-interval", "1", "--sync-interval", "2", "--log-level", "DEBUG"],
                    {"BAI_PROXY_TOKEN": token})
    wait_for(answers_200(api + "/health"), "the worker registered at the coordinator", logs=logs)
    worker = Worker.objects.get(authority=NAME)
    assert worker.api_endpoint == api and worker.status == WorkerStatus.ALIVE
    assert "registered through POST /workers/register" in processes.log("proxy").read_text()

    # the manager's side, over HTTP: POST /routes through appproxy.gateway
    manager = gateway.HTTPCoordinator(coordinator_url, SECRET, timeout=10)
    setup = manager.start_service(owner, session, "web")
    route = httpx.get(f"{coordinator_url}/routes/{setup['circuit_id']}", headers={"X-BackendAI-Token": SECRET},
                      timeout=10).json()
    assert route["worker"] == NAME and base <= route["port"] <= base + 9

    # the manager's own start-service, configured for the separate coordinator, reuses that route;
    # the coordinator's problems reach the manager's caller as they came
    with override_settings(APPPROXY_COORDINATOR_URL=coordinator_url, APPPROXY_COORDINATOR_SECRET=SECRET):
        again = signed(owner).post(f"/session/{session.pk}/start-service", {"app": "web"})
        assert again.status_code == 200, again.content
        assert again.json()["circuit_id"] == route["id"] and again.json()["token"] != setup["token"]
        missing = signed(owner).post(f"/session/{session.pk}/start-service", {"app": "missing"})
        assert missing.status_code == 404 and missing.json()["type"].endswith("/object-not-found")
        assert "missing" in missing.json()["msg"]
    assert Circuit.objects.count() == 1

    # POST /workers/register answers the worker's id and its routes (idempotent: what the worker sends)
    registration = {"name": NAME, "frontend_mode": "port", "advertised_host": worker.advertised_host,
                    "api_endpoint": worker.api_endpoint, "hint_url": worker.hint_url,
                    "port_range": [worker.port_range_start, worker.port_range_end]}
    answer = httpx.post(f"{coordinator_url}/workers/register", json=registration,
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["worker_id"] == str(worker.pk)
    assert [r["id"] for r in answer.json()["routes"]] == [route["id"]]

    # the route reached the worker (hinted at once): its table has it and traffic flows to the target
    wait_for(lambda: httpx.get(api + "/health", timeout=2).json()["circuits"] == 1, "the route on the worker",
             logs=logs)
    app_url, cookie = through_setup(setup)
    assert app_url.startswith(f"http://127.0.0.1:{route['port']}")
    wait_for(serves(app_url, cookie), "traffic through the worker", logs=logs)

    # a second route made with POST /routes directly
    created = httpx.post(f"{coordinator_url}/routes", json={"session_id": str(session.pk), "app": "other",
                                                            "open_to_public": True},
                         headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)
    assert created.status_code == 201, created.text
    public_url = created.json()["route"]["url"]
    wait_for(serves(public_url + "/x", {}), "the public route through the worker", logs=logs)
    rows = sorted(Circuit.objects.values_list("pk", "port", "revision"))

    # kill -9: the worker keeps serving what it has; the manager's calls are 503, not 500
    processes.kill("coordinator")
    assert serves(app_url, cookie)() and serves(public_url, {})()
    with pytest.raises(gateway.CoordinatorUnavailable) as refused:
        manager.start_service(owner, session, "web")
    assert refused.value.status_code == 503

    killed_at = timezone.now()
    processes.restart("coordinator")
    wait_for(answers_200(coordinator_url + "/health"), "the restarted coordinator", logs=logs)
    assert sorted(Circuit.objects.values_list("pk", "port", "revision")) == rows
    listed = httpx.get(f"{coordinator_url}/routes?session_id={session.pk}", headers={"X-BackendAI-Token": SECRET},
                       timeout=10).json()["routes"]
    assert sorted(r["id"] for r in listed) == sorted(str(pk) for pk, _, _ in rows)
    wait_for(lambda: Worker.objects.filter(authority=NAME, status=WorkerStatus.ALIVE,
                                           last_heartbeat__gt=killed_at).exists(),
             "a heartbeat at the restarted coordinator", logs=logs)
    assert serves(app_url, cookie)() and serves(public_url, {})()
    workers = httpx.get(f"{coordinator_url}/workers", headers={"X-BackendAI-Token": SECRET}, timeout=10).json()
    assert [(w["authority"], w["healthy"], w["occupancy"]) for w in workers["workers"]] == [(NAME, True, 2)]

    # and the session's end, seen by the manager, removes its routes over HTTP: the worker drops them
    with override_settings(APPPROXY_COORDINATOR_URL=coordinator_url, APPPROXY_COORDINATOR_SECRET=SECRET):
        session_signals.ended(session.pk, "user-requested")
    assert set(CircuitTombstone.objects.values_list("reason", flat=True)) == {"user-requested"}
    wait_for(lambda: httpx.get(api + "/health", timeout=2).json()["circuits"] == 0, "the routes gone from the worker",
             logs=logs)
    assert not Circuit.objects.exists()
    manager.close()
