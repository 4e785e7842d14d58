"""The coordinator's own REST API (``python -m appproxy.coordinator``, URLconf
``appproxy.coordinator.urls``): the shared secret for the manager, worker tokens for
workers, routes, workers by id, refusals that change nothing, and the manager's side
(``appproxy.gateway``) choosing in-process or HTTP by configuration."""
import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from coordinator_support import make_worker
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from agents import services as agent_services
from agents.models import Agent
from appproxy import gateway, services
from appproxy.models import Circuit, CircuitTombstone, Worker, WorkerStatus
from backendai import config
from helpers import problem, slug
from sessions import services as session_services
from sessions.models import Session

pytestmark = [pytest.mark.django_db, pytest.mark.urls("appproxy.coordinator.urls")]

SECRET = "coordinator-secret-for-tests-0123456789"
SERVICE_PORTS = [{"name": "web", "protocol": "http", "container_ports": [8080], "host_ports": [31001]},
                 {"name": "echo", "protocol": "tcp", "container_ports": [9000], "host_ports": [31002]},
                 {"name": "later", "protocol": "http", "container_ports": [7000], "host_ports": []}]


@pytest.fixture(autouse=True)
def coordinator_secret():
    with override_settings(APPPROXY_COORDINATOR_SECRET=SECRET, APPPROXY_COORDINATOR_URL=None):
        yield SECRET


@pytest.fixture
def running(defaults):
    group = agent_services.ensure_default_scaling_group()
    agent = Agent.objects.create(id="node-1", scaling_group=group, addr="10.0.0.5",
                                 available_slots={"cpu": "4", "mem": "8589934592"}, last_heartbeat=timezone.now())

    def make(user, name="s1", status="RUNNING"):
        session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                           slots={"cpu": "1"}, name=name)
        Session.objects.filter(pk=session.pk).update(status=status)
        session.kernels.update(status="RUNNING", service_ports=SERVICE_PORTS, kernel_host="127.0.0.1")
        return Session.objects.get(pk=session.pk)
    return make


def call(client, method, path, body=None, secret=SECRET, bearer=None, **extra):
    headers = {}
    if secret is not None:
        headers["HTTP_X_BACKENDAI_TOKEN"] = secret
    if bearer is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {bearer}"
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body))
    return client.generic(method, path, data=data, content_type="application/json", **headers, **extra)


def state():
    """Everything a refused request must leave as it was."""
    return (sorted(Circuit.objects.values_list("pk", "worker_id", "port", "revision")),
            sorted(Worker.objects.values_list("authority", "status", "revision", "occupancy")),
            CircuitTombstone.objects.count())


REGISTER = {"name": "w1", "frontend_mode": "port", "advertised_host": "127.0.0.1",
            "api_endpoint": "http://127.0.0.1:6130", "hint_url": "http://127.0.0.1:6130/v1/hint",
            "port_range": [40000, 40009]}


# --- authentication ----------------------------------------------------------------------------

def manager_calls(worker, circuit, session):
    return [("GET", "/workers", None), ("GET", f"/workers/{worker.pk}", None),
            ("POST", "/routes", {"session_id": str(session.pk), "app": "web"}), ("GET", "/routes", None),
            ("GET", f"/routes/{circuit.pk}", None), ("DELETE", f"/routes/{circuit.pk}", None),
            ("DELETE", f"/routes?session_id={session.pk}", None)]


def test_manager_calls_without_or_with_a_wrong_secret_are_refused_and_change_nothing(client, running, owner):
    worker = make_worker()
    session = running(owner)
    circuit = services.start_service(owner, session, "echo")["circuit_id"]
    circuit = Circuit.objects.get(pk=circuit)
    other = running(owner, name="s2")
    before = state()
    for method, path, body in manager_calls(worker, circuit, other):
        for kwargs in ({"secret": None}, {"secret": "wrong-secret-0123456789"}, {"secret": None, "bearer": "nope"},
                       {"secret": SECRET[:-1]}):
            response = call(client, method, path, body, **kwargs)
            assert response.status_code == 401, (method, path, kwargs, response.content)
            assert slug(response) == "auth-failed"
    assert state() == before


def test_a_worker_token_is_not_the_managers_secret(client, running, owner):
    worker = make_worker()
    session = running(owner)
    raw = services.issue_token("w1", authority="w1")[1]
    before = state()
    for method, path in (("GET", "/workers"), ("POST", "/routes"), ("GET", "/routes")):
        response = call(client, method, path, {"session_id": str(session.pk), "app": "web"}, secret=None, bearer=raw)
        assert response.status_code == 401, response.content
    assert state() == before
    # ... but it may read its own worker, and only its own
    assert call(client, "GET", f"/workers/{worker.pk}", secret=None, bearer=raw).status_code == 200
    other = make_worker("w2")
    refused = call(client, "GET", f"/workers/{other.pk}", secret=None, bearer=raw)
    assert refused.status_code == 403 and slug(refused) == "generic-forbidden"


def test_the_secret_works_in_either_header(client, running, owner):
    make_worker()
    assert call(client, "GET", "/workers").status_code == 200
    assert call(client, "GET", "/workers", secret=None, bearer=SECRET).status_code == 200


def test_health_needs_no_credentials_and_other_manager_paths_are_not_served(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["component"] == "appproxy-coordinator"
    missing = call(client, "GET", "/session/s1")
    assert missing.status_code == 404 and slug(missing) == "url-not-found"


# --- workers -----------------------------------------------------------------------------------

def test_a_worker_registers_by_post_and_receives_its_routes(client, running, owner):
    raw = services.issue_token("tests", authority="w1")[1]
    first = call(client, "POST", "/workers/register", REGISTER, secret=None, bearer=raw)
    assert first.status_code == 200, first.content
    body = first.json()
    worker = Worker.objects.get(authority="w1")
    assert body["worker_id"] == str(worker.pk) and body["routes"] == [] and body["secret"] == worker.secret
    assert body["heartbeat_timeout"] == services.heartbeat_timeout()
    session = running(owner)
    opened = services.start_service(owner, session, "web")
    again = call(client, "POST", "/workers/register", REGISTER, secret=None, bearer=raw).json()
    assert again["worker_id"] == body["worker_id"] and again["secret"] == body["secret"]
    assert [r["id"] for r in again["routes"]] == [opened["circuit_id"]]
    assert again["routes"][0]["port"] == 40000 and again["revision"] == Worker.objects.get().revision
    # the same worker through today's path: one row
    assert Worker.objects.count() == 1


@pytest.mark.parametrize("body, bearer, status, expected", [
    ({**REGISTER, "name": "w2"}, "bound", 403, "generic-forbidden"),
    ({**REGISTER, "name": "bad name!"}, "any", 400, "invalid-api-params"),
    ({k: v for k, v in REGISTER.items() if k != "name"}, "any", 400, "invalid-api-params"),
    ({**REGISTER, "port_range": [40010, 40000]}, "any", 400, "invalid-api-params"),
    ({**REGISTER, "port_range": None}, "any", 400, "invalid-api-params"),
    ({**REGISTER, "api_endpoint": "not a url"}, "any", 400, "invalid-api-params"),
    (REGISTER, None, 401, "auth-failed"),
    (REGISTER, "bpt_unknown", 401, "auth-failed"),
    (REGISTER, "secret", 401, "auth-failed"),
])
def test_bad_registrations_are_refused_and_record_nothing(client, body, bearer, status, expected):
    tokens = {"bound": services.issue_token("b", authority="w1")[1], "any": services.issue_token("a")[1],
              "secret": SECRET, "bpt_unknown": "bpt_unknown", None: None}
    response = call(client, "POST", "/workers/register", body, secret=None, bearer=tokens[bearer])
    assert response.status_code == status, response.content
    assert slug(response) == expected
    assert not Worker.objects.exists()


def test_heartbeats_by_id_revive_a_lost_worker(client):
    raw = services.issue_token("tests", authority="w1")[1]
    worker_id = call(client, "POST", "/workers/register", REGISTER, secret=None, bearer=raw).json()["worker_id"]
    Worker.objects.filter(pk=worker_id).update(status=WorkerStatus.LOST)
    response = call(client, "POST", f"/workers/{worker_id}/heartbeat", {"circuits": {}, "failed_ports": []},
                    secret=None, bearer=raw)
    assert response.status_code == 200, response.content
    assert response.json()["worker_id"] == worker_id and response.json()["status"] == "ALIVE"
    assert Worker.objects.get().status == WorkerStatus.ALIVE
    before = state()
    for path, status, expected in ((f"/workers/{uuid.uuid4()}/heartbeat", 404, "object-not-found"),
                                   ("/workers/not-a-uuid/heartbeat", 400, "invalid-api-params")):
        refused = call(client, "POST", path, {}, secret=None, bearer=raw)
        assert refused.status_code == status and slug(refused) == expected
    bad = call(client, "POST", f"/workers/{worker_id}/heartbeat", {"failed_ports": [0]}, secret=None, bearer=raw)
    assert bad.status_code == 400 and slug(bad) == "invalid-api-params"
    other = call(client, "POST", f"/workers/{worker_id}/heartbeat", {}, secret=None,
                 bearer=services.issue_token("x", authority="w2")[1])
    assert other.status_code == 403
    assert state() == before


def test_the_worker_list_shows_health(client):
    fresh = make_worker("fresh")
    make_worker("stale", last_heartbeat=timezone.now() - timedelta(seconds=services.heartbeat_timeout() + 5))
    make_worker("lost", status=WorkerStatus.LOST)
    workers = {w["authority"]: w for w in call(client, "GET", "/workers").json()["workers"]}
    assert [workers[n]["healthy"] for n in ("fresh", "lost", "stale")] == [True, False, False]
    assert workers["fresh"]["id"] == str(fresh.pk) and workers["fresh"]["port_range"] == [40000, 40009]
    one = call(client, "GET", f"/workers/{fresh.pk}").json()
    assert one["authority"] == "fresh" and one["healthy"] is True and one["last_heartbeat"]
    assert call(client, "GET", f"/workers/{uuid.uuid4()}").status_code == 404
    assert slug(call(client, "GET", "/workers/xyz")) == "invalid-api-params"


# --- routes ------------------------------------------------------------------------------------

def test_a_route_is_created_hinted_read_and_deleted(client, running, owner, django_capture_on_commit_callbacks):
    worker = make_worker()
    session = running(owner)
    with django_capture_on_commit_callbacks() as callbacks:
        created = call(client, "POST", "/routes", {"session_id": str(session.pk), "app": "web",
                                                   "envs": '{"A": "1"}', "open_to_public": True})
    assert created.status_code == 201, created.content
    assert callbacks  # the chosen worker is hinted after the commit
    body = created.json()
    route, setup = body["route"], body["setup"]
    assert route["worker_id"] == str(worker.pk) and route["worker"] == "w1" and route["port"] == 40000
    assert route["target_host"] == "127.0.0.1" and route["target_port"] == 31001 and route["open_to_public"]
    assert route["url"] == "http://127.0.0.1:40000" and route["session_id"] == str(session.pk)
    assert setup["circuit_id"] == route["id"] and setup["url"] == f"http://w1:6130/setup?token={setup['token']}"
    assert Circuit.objects.get().envs == {"A": "1"}
    reused = call(client, "POST", "/routes", {"session_id": str(session.pk), "app": "web", "user_id": str(owner.pk)})
    assert reused.status_code == 200 and reused.json()["route"]["id"] == route["id"]
    assert call(client, "GET", f"/routes/{route['id']}").json()["id"] == route["id"]
    listed = call(client, "GET", f"/routes?session_id={session.pk}").json()["routes"]
    assert [r["id"] for r in listed] == [route["id"]]
    assert call(client, "GET", f"/routes?worker_id={uuid.uuid4()}").json()["routes"] == []
    revision = Worker.objects.get().revision
    gone = call(client, "DELETE", f"/routes/{route['id']}")
    assert gone.status_code == 204
    assert not Circuit.objects.exists()
    tomb = CircuitTombstone.objects.get()
    assert str(tomb.circuit_id) == route["id"] and tomb.revision == revision + 1
    again = call(client, "DELETE", f"/routes/{route['id']}")
    assert again.status_code == 404 and slug(again) == "object-not-found"


def test_a_sessions_routes_go_together(client, running, owner):
    make_worker()
    session = running(owner)
    for app in ("web", "echo"):
        services.start_service(owner, session, app)
    refused = call(client, "DELETE", "/routes")
    assert refused.status_code == 400 and Circuit.objects.count() == 2
    answer = call(client, "DELETE", f"/routes?session_id={session.pk}&reason=terminated")
    assert answer.status_code == 200 and answer.json() == {"removed": 2}
    assert set(CircuitTombstone.objects.values_list("reason", flat=True)) == {"terminated"}
    assert call(client, "DELETE", f"/routes?session_id={session.pk}").json() == {"removed": 0}


@pytest.mark.parametrize("change, status, expected", [
    ({"app": None}, 400, "invalid-api-params"),
    ({"session_id": "nope"}, 400, "invalid-api-params"),
    ({"session_id": str(uuid.UUID(int=1))}, 404, "object-not-found"),
    ({"user_id": str(uuid.UUID(int=2))}, 404, "object-not-found"),
    ({"app": "missing"}, 404, "object-not-found"),
    ({"app": "later"}, 503, "app-not-ready"),
    ({"port": 70000}, 400, "invalid-api-params"),
    ({"port": 1234}, 400, "invalid-api-params"),
    ({"envs": "[1]"}, 400, "invalid-api-params"),
    ({"allowed_client_ips": ["300.1.1.1"]}, 400, "invalid-api-params"),
    ({"redirect": "https://evil.example/"}, 400, "invalid-api-params"),
    ({"app": "x" * 65}, 400, "invalid-api-params"),
])
def test_bad_route_requests_are_refused_and_change_nothing(client, running, owner, change, status, expected):
    make_worker()
    session = running(owner)
    services.start_service(owner, session, "echo")
    before = state()
    body = {"session_id": str(session.pk), "app": "web", **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = call(client, "POST", "/routes", body)
    assert response.status_code == status, response.content
    assert slug(response) == expected
    assert state() == before


def test_routes_need_a_running_session_and_a_free_worker(client, running, owner):
    stopped = running(owner, name="s-stopped", status="TERMINATED")
    before = state()
    refused = call(client, "POST", "/routes", {"session_id": str(stopped.pk), "app": "web"})
    assert refused.status_code == 409 and slug(refused) == "invalid-session-state"
    session = running(owner)
    none = call(client, "POST", "/routes", {"session_id": str(session.pk), "app": "web"})
    assert none.status_code == 503 and slug(none) == "worker-not-available"
    assert state() == before
    garbled = call(client, "POST", "/routes", b"{not json")
    assert garbled.status_code == 400 and problem(garbled)
    assert state() == before


_json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=20),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=8)


@hsettings(max_examples=120, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.dictionaries(st.sampled_from(["session_id", "app", "user_id", "port", "envs", "arguments",
                                             "open_to_public", "allowed_client_ips", "redirect", "extra"]),
                            _json_values, max_size=6) | _json_values)
def test_fuzzed_route_bodies_never_fail_and_never_change_anything(client, body):
    before = state()
    response = call(client, "POST", "/routes", body)
    assert 400 <= response.status_code < 500, response.content
    problem(response)
    assert state() == before


@hsettings(max_examples=120, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.dictionaries(st.sampled_from(["name", "frontend_mode", "protocols", "advertised_host", "api_endpoint",
                                             "port_range", "wildcard_domain", "wildcard_port", "capacity"]),
                            _json_values, max_size=7) | _json_values)
def test_fuzzed_registrations_never_fail(client, body, worker_bearer):
    before = Worker.objects.count()
    response = call(client, "POST", "/workers/register", body, secret=None, bearer=worker_bearer)
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        problem(response)
        assert Worker.objects.count() == before


@pytest.fixture
def worker_bearer(db):
    return services.issue_token("fuzz")[1]


# --- the manager's side: one interface, chosen by configuration ---------------------------------

@pytest.mark.urls("backendai.urls")
def test_the_manager_uses_the_in_process_coordinator_without_a_url(client):
    assert isinstance(gateway.coordinator(), gateway.InProcessCoordinator)
    with override_settings(APPPROXY_COORDINATOR_URL="http://127.0.0.1:6030"):
        assert isinstance(gateway.coordinator(), gateway.HTTPCoordinator)
    # the manager does not serve the coordinator's REST API: workers fall back to PUT …/workers/<name>
    response = call(client, "POST", "/workers/register", REGISTER, secret=None, bearer="bpt_x")
    assert response.status_code == 404


@pytest.mark.urls("backendai.urls")
def test_start_service_with_the_coordinator_down_is_a_503_not_a_500(signed, running, owner, unused_port):
    make_worker()
    running(owner)
    before = state()
    with override_settings(APPPROXY_COORDINATOR_URL=f"http://127.0.0.1:{unused_port}", APPPROXY_COORDINATOR_TIMEOUT=2):
        response = signed(owner).post("/session/s1/start-service", {"app": "web"})
    assert response.status_code == 503, response.content
    assert slug(response) == "service-unavailable"
    assert state() == before


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: nothing listens there


# --- configuration -------------------------------------------------------------------------------

def test_coordinator_settings_are_checked_and_the_secret_is_generated_once(tmp_path):
    env = {"BACKEND_DATA_DIR": str(tmp_path)}
    first = config.load(env)
    path = tmp_path / config.APPPROXY_COORDINATOR_SECRET_FILE
    assert first.appproxy_coordinator_url is None and len(first.appproxy_coordinator_secret) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert config.load(env).appproxy_coordinator_secret == first.appproxy_coordinator_secret
    given_ = config.load({**env, "APPPROXY_COORDINATOR_URL": "http://coord:6030/",
                          "APPPROXY_COORDINATOR_SECRET": "x" * 20, "APPPROXY_COORDINATOR_TIMEOUT": "3"})
    assert (given_.appproxy_coordinator_url, given_.appproxy_coordinator_secret,
            given_.appproxy_coordinator_timeout) == ("http://coord:6030", "x" * 20, 3.0)
    for name, value in (("APPPROXY_COORDINATOR_URL", "coord:6030"), ("APPPROXY_COORDINATOR_SECRET", "short"),
                        ("APPPROXY_COORDINATOR_TIMEOUT", "0")):
        with pytest.raises(config.ConfigError) as caught:
            config.load({**env, name: value})
        assert caught.value.variable == name


@pytest.mark.parametrize("argv, env, named", [
    (["--port", "99999"], {}, "--port"),
    (["--port", "http"], {}, "--port"),
    ([], {"APPPROXY_COORDINATOR_PORT": "-1"}, "APPPROXY_COORDINATOR_PORT"),
    (["--host", "a b"], {}, "--host"),
    (["--log-level", "LOUD"], {}, "--log-level"),
])
def test_bad_coordinator_options_stop_start_up_naming_the_option(argv, env, named):
    result = subprocess.run([sys.executable, "-m", "appproxy.coordinator", *argv], capture_output=True, text=True,
                            timeout=60, env={**os.environ, **env})
    assert result.returncode == 2, result.stderr
    assert named in result.stderr


# --- the worker's registration, wherever the coordinator runs -------------------------------------

def _register_with_the_worker_client(url: str, token: str) -> dict:
    import asyncio

    from appproxy.worker.client import CoordinatorClient

    async def go():
        client = CoordinatorClient(url, token, "w1", timeout=10)
        try:
            payload = {k: v for k, v in REGISTER.items() if k != "name"}
            return await client.register(payload), client._register_by_post
        finally:
            await client.close()
    return asyncio.run(go())


@pytest.mark.django_db(transaction=True)
def test_the_worker_registers_by_post_at_a_coordinator(live_server):
    answer, by_post = _register_with_the_worker_client(live_server.url, services.issue_token("t")[1])
    assert by_post is True and answer["worker_id"] == str(Worker.objects.get(authority="w1").pk)
    assert answer["routes"] == []


@pytest.mark.urls("backendai.urls")
@pytest.mark.django_db(transaction=True)
def test_the_worker_falls_back_to_put_at_a_manager_with_the_coordinator_inside(live_server):
    answer, by_post = _register_with_the_worker_client(live_server.url, services.issue_token("t")[1])
    assert by_post is False and answer["worker"]["authority"] == "w1" and "routes" not in answer
    assert Worker.objects.get().api_endpoint == "http://127.0.0.1:6130"


def test_the_embedded_stack_runs_the_coordinator_on_its_own_only_when_asked(tmp_path):
    from backendai import stack

    def commands_for(*extra):
        args = stack.build_parser().parse_args(["--port", "8093", "--data-dir", str(tmp_path), *extra])
        stack.resolve_ports(args)
        return args, stack.processes(args, euid=1000)

    args, inside = commands_for()
    assert "coordinator" not in inside
    assert inside["proxy"][inside["proxy"].index("--coordinator-url") + 1] == "http://127.0.0.1:8093"
    args, separate = commands_for("--coordinator-port", "16030")
    assert separate["coordinator"][-4:] == ["--host", "127.0.0.1", "--port", "16030"]
    assert separate["proxy"][separate["proxy"].index("--coordinator-url") + 1] == "http://127.0.0.1:16030"
    assert [c.option for c in stack.port_claims(args)][-1] == "--coordinator-port"
