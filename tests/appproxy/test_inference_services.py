"""Inference circuits at the coordinator (``appproxy.services.inference``): syncing an
endpoint's circuit, route targets, revisions only on change, what workers report (route
health, traffic samples), the health/traffic/series answers, the sweeps leaving inference
circuits alone, and the coordinator's REST routes for them (secret, bad input)."""
import json
import uuid
from datetime import timedelta

import pytest
from coordinator_support import make_worker
from django.test import override_settings
from django.utils import timezone

from appproxy import gateway, services
from appproxy.models import AppMode, Circuit, CircuitTombstone, InferenceSample, RouteHealth, Worker
from backendai.api.errors import BackendAIError
from helpers import problem, slug
from sessions import services as session_services
from sessions.models import Session

pytestmark = pytest.mark.django_db

SECRET = "coordinator-secret-for-tests-0123456789"
INFERENCE_PORTS = [{"name": "inference", "protocol": "http", "container_ports": [8000], "host_ports": [32001]},
                   {"name": "web", "protocol": "http", "container_ports": [8080], "host_ports": [32002]}]
UNPUBLISHED = [{"name": "inference", "protocol": "http", "container_ports": [8000], "host_ports": []}]
CHECK = {"path": "/health", "interval": 0.5, "timeout": 0.5, "threshold": 2, "initial_delay": 0,
         "expected_status": 200}


@pytest.fixture(autouse=True)
def coordinator_settings():
    with override_settings(APPPROXY_COORDINATOR_SECRET=SECRET, APPPROXY_COORDINATOR_URL=None):
        yield


@pytest.fixture
def replica(agent):
    def make(user, name, ports=INFERENCE_PORTS, status="RUNNING", host="127.0.0.1"):
        session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent,
                                                           slots={"cpu": "1"}, name=name)
        Session.objects.filter(pk=session.pk).update(status=status)
        session.kernels.update(status="RUNNING", service_ports=ports, kernel_host=host)
        return Session.objects.get(pk=session.pk)
    return make


def route(session, ratio=1.0, active=True, route_id=None):
    return {"route_id": str(route_id or uuid.uuid4()), "session_id": str(session.pk), "traffic_ratio": ratio,
            "active": active}


def spec(owner, routes, **changes):
    return {"owner_id": owner.pk, "name": "llm", "scaling_group_id": "default", "app": "inference",
            "container_port": 8000, "routes": routes, "open_to_public": False, "health_check": CHECK,
            "token_secret": "t" * 32, **changes}


def state():
    return (sorted(Circuit.objects.values_list("pk", "worker_id", "port", "revision", "routes")),
            sorted(Worker.objects.values_list("authority", "revision", "occupancy")),
            CircuitTombstone.objects.count(), RouteHealth.objects.count(), InferenceSample.objects.count())


# --- sync, revisions, removal ----------------------------------------------------------------

def test_sync_creates_an_inference_circuit_whose_worker_sees_only_published_routes(replica, owner):
    worker = make_worker()
    ready, starting = replica(owner, "r1"), replica(owner, "r2", ports=UNPUBLISHED)
    endpoint = uuid.uuid4()
    routes = [route(ready, 3), route(starting, 1)]
    answer = services.sync_endpoint(endpoint, **spec(owner, routes))
    circuit = Circuit.objects.get(endpoint_id=endpoint)
    assert answer == {"circuit_id": str(circuit.pk), "url": "http://127.0.0.1:40000", "worker_id": str(worker.pk)}
    assert (circuit.app_mode, circuit.session_id, circuit.port, circuit.owner_id) == (
        AppMode.INFERENCE, None, 40000, owner.pk)
    table = services.circuit_table(services.issue_token("t")[0], "w1")
    (sent,) = table["circuits"]
    assert sent["app_mode"] == "inference" and sent["endpoint_id"] == str(endpoint)
    assert sent["session_id"] is None and sent["token_secret"] == "t" * 32 and sent["health_check"] == CHECK
    assert sent["routes"] == [{"route_id": routes[0]["route_id"], "session_id": str(ready.pk), "host": "127.0.0.1",
                               "port": 32001, "traffic_ratio": 3.0, "active": True}]
    assert Worker.objects.get().occupancy == 1


def test_sync_takes_a_new_revision_only_when_something_the_worker_sees_changed(replica, owner,
                                                                              django_capture_on_commit_callbacks):
    make_worker()
    first, second = replica(owner, "r1"), replica(owner, "r2")
    endpoint = uuid.uuid4()
    routes = [route(first), route(second)]
    services.sync_endpoint(endpoint, **spec(owner, routes))
    revision = Circuit.objects.get().revision
    with django_capture_on_commit_callbacks() as hints:
        services.sync_endpoint(endpoint, **spec(owner, list(reversed(routes))))
    assert Circuit.objects.get().revision == revision and not hints, "same routes in another order: no change"
    services.sync_endpoint(endpoint, **spec(owner, routes, name="renamed"))
    assert Circuit.objects.get().revision == revision, "the name is not the worker's business"
    routes[1]["active"] = False
    with django_capture_on_commit_callbacks() as hints:
        services.sync_endpoint(endpoint, **spec(owner, routes))
    circuit = Circuit.objects.get()
    assert circuit.revision == revision + 1 and len(hints) == 1
    assert [r["active"] for r in circuit.routes if r["route_id"] == routes[1]["route_id"]] == [False]
    services.sync_endpoint(endpoint, **spec(owner, routes, health_check={**CHECK, "threshold": 5}))
    assert Circuit.objects.get().revision == revision + 2
    assert Circuit.objects.count() == 1


def test_a_port_published_later_reaches_the_worker_through_the_sweep(replica, owner):
    make_worker()
    late = replica(owner, "r1", ports=UNPUBLISHED)
    endpoint = uuid.uuid4()
    services.sync_endpoint(endpoint, **spec(owner, [route(late)]))
    circuit = Circuit.objects.get()
    assert services.circuit_json(circuit)["routes"] == []
    assert services.sweep_circuits()["endpoints"] == 0
    late.kernels.update(service_ports=INFERENCE_PORTS)
    assert services.sweep_circuits()["endpoints"] == 1
    updated = Circuit.objects.get()
    assert updated.revision > circuit.revision
    assert [(r["host"], r["port"]) for r in services.circuit_json(updated)["routes"]] == [("127.0.0.1", 32001)]
    Session.objects.filter(pk=late.pk).update(status="TERMINATED")
    assert services.sweep_circuits()["endpoints"] == 1
    assert services.circuit_json(Circuit.objects.get())["routes"] == [], "an ended replica leaves the table"


def test_remove_endpoint_leaves_a_tombstone_and_then_finds_nothing(replica, owner):
    worker = make_worker()
    endpoint = uuid.uuid4()
    services.sync_endpoint(endpoint, **spec(owner, [route(replica(owner, "r1"))]))
    circuit = Circuit.objects.get()
    assert services.remove_endpoint(endpoint) == 1
    tombstone = CircuitTombstone.objects.get()
    assert (tombstone.circuit_id, tombstone.reason) == (circuit.pk, "endpoint-destroyed")
    assert services.remove_endpoint(endpoint) == 0
    assert Worker.objects.get(pk=worker.pk).occupancy == 0


def test_sync_without_a_free_worker_is_a_503_and_records_nothing(replica, owner):
    before = state()
    with pytest.raises(services.WorkerNotAvailable):
        services.sync_endpoint(uuid.uuid4(), **spec(owner, [route(replica(owner, "r1"))]))
    assert state() == before


def test_a_lost_workers_endpoint_moves_to_another_worker_at_the_next_sync(replica, owner):
    old = make_worker("w1")
    endpoint = uuid.uuid4()
    routes = [route(replica(owner, "r1"))]
    services.sync_endpoint(endpoint, **spec(owner, routes))
    Worker.objects.filter(pk=old.pk).update(status="LOST")
    new = make_worker("w2")
    answer = services.sync_endpoint(endpoint, **spec(owner, routes))
    assert answer["worker_id"] == str(new.pk)
    assert CircuitTombstone.objects.get().worker_id == old.pk


@pytest.mark.parametrize("change, named", [
    ({"routes": "nope"}, "routes"),
    ({"routes": [{"route_id": "x", "session_id": str(uuid.uuid4())}]}, "routes[0].route_id"),
    ({"routes": [{"route_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "traffic_ratio": -1}]},
     "routes[0].traffic_ratio"),
    ({"routes": [{"route_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4()), "active": "yes"}]},
     "routes[0].active"),
    ({"container_port": 70000}, "container_port"),
    ({"container_port": "8000"}, "container_port"),
    ({"health_check": {"path": "health"}}, "health_check.path"),
    ({"health_check": {"interval": 0}}, "health_check.interval"),
    ({"health_check": {"threshold": 1.5}}, "health_check.threshold"),
    ({"health_check": {"bogus": 1}}, "health_check"),
    ({"token_secret": ""}, "token_secret"),
    ({"open_to_public": "no"}, "open_to_public"),
    ({"owner_id": "me"}, "owner_id"),
])
def test_bad_sync_input_is_a_400_naming_the_field_and_changes_nothing(replica, owner, change, named):
    make_worker()
    before = state()
    with pytest.raises(BackendAIError) as caught:
        services.sync_endpoint(uuid.uuid4(), **{**spec(owner, [route(replica(owner, "r1"))]), **change})
    assert caught.value.status_code == 400 and named in caught.value.msg
    assert state() == before


def test_the_sweeps_and_heartbeats_leave_inference_circuits_alone(replica, owner, client):
    make_worker()
    endpoint = uuid.uuid4()
    services.sync_endpoint(endpoint, **spec(owner, [route(replica(owner, "r1"))]))
    Circuit.objects.update(last_access=timezone.now() - timedelta(days=3))
    result = services.sweep_circuits()
    assert (result["ended"], result["idle"]) == (0, 0)
    assert services.collect_idle_circuits(timeout_seconds=1) == 0
    token = services.issue_token("t")[1]
    circuit = Circuit.objects.get()
    response = client.post("/appproxy-api/v1/workers/w1/heartbeat",
                           json.dumps({"circuits": {str(circuit.pk): timezone.now().timestamp()}}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert Circuit.objects.filter(pk=circuit.pk).exists()


# --- what workers report ----------------------------------------------------------------------

def report(status, checked, failures=0, error=""):
    return {"status": status, "changed_at": checked - 1, "checked_at": checked, "failures": failures,
            "last_error": error}


def test_route_health_from_the_carrying_worker_is_recorded_and_never_goes_back_in_time(replica, owner, client):
    make_worker()
    make_worker("w2", port_range_start=41000, port_range_end=41009)
    endpoint = uuid.uuid4()
    routes = [route(replica(owner, "r1")), route(replica(owner, "r2"))]
    services.sync_endpoint(endpoint, **spec(owner, routes))
    circuit = Circuit.objects.get()
    assert services.endpoint_health(endpoint) == {r["route_id"]: {"status": "unknown", "changed_at": None,
                                                                  "checked_at": None, "failures": 0,
                                                                  "last_error": ""} for r in routes}
    token = services.issue_token("t")[1]
    now = timezone.now().timestamp()
    a, b = routes[0]["route_id"], routes[1]["route_id"]

    def send(worker, reports):
        return client.post(f"/appproxy-api/v1/workers/{worker}/route-health", json.dumps({"circuits": reports}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    stranger = send("w2", {str(circuit.pk): {a: report("healthy", now)}})
    assert stranger.status_code == 200 and stranger.json() == {"recorded": 0}, "not the carrying worker"
    answer = send("w1", {str(circuit.pk): {a: report("healthy", now), b: report("unhealthy", now, 3, "HTTP 500"),
                                           str(uuid.uuid4()): report("healthy", now)}})
    assert answer.json() == {"recorded": 2}
    health = services.endpoint_health(endpoint)
    assert health[a]["status"] == "healthy" and health[b]["status"] == "unhealthy"
    assert (health[b]["failures"], health[b]["last_error"]) == (3, "HTTP 500")
    send("w1", {str(circuit.pk): {a: report("unhealthy", now - 10)}})
    assert services.endpoint_health(endpoint)[a]["status"] == "healthy", "an older report loses"
    bad = send("w1", {str(circuit.pk): "nope"})
    assert bad.status_code == 400
    problem(bad)
    assert send("w1", {str(circuit.pk): {a: report("sleepy", now + 5)}}).json() == {"recorded": 0}
    # a route removed from the endpoint takes its health row with it
    services.sync_endpoint(endpoint, **spec(owner, routes[:1]))
    assert list(services.endpoint_health(endpoint)) == [a]
    assert RouteHealth.objects.count() == 1


def test_heartbeats_carry_health_and_counters_into_samples(replica, owner, client):
    make_worker()
    endpoint = uuid.uuid4()
    routes = [route(replica(owner, "r1"))]
    services.sync_endpoint(endpoint, **spec(owner, routes))
    circuit = Circuit.objects.get()
    rid = routes[0]["route_id"]
    counters = {"requests_total": 10, "errors_total": 1, "inflight": 2, "latency_sum": 1.5, "latency_count": 10,
                "latency_buckets": {"0.1": 8, "0.5": 10, "+Inf": 10}, "healthy_routes": 1,
                "routes": {rid: {"requests": 10, "errors": 1}}}
    body = {"inference": {str(circuit.pk): {"health": {rid: report("healthy", timezone.now().timestamp())},
                                            "counters": counters}}}
    response = client.post("/appproxy-api/v1/workers/w1/heartbeat", json.dumps(body),
                           content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {services.issue_token('t')[1]}")
    assert response.status_code == 200, response.content
    sample = InferenceSample.objects.get()
    assert (sample.endpoint_id, sample.requests_total, sample.errors_total, sample.inflight) == (endpoint, 10, 1, 2)
    assert sample.latency_buckets == {"0.1": 8, "0.5": 10, "+Inf": 10}
    assert services.endpoint_health(endpoint)[rid]["status"] == "healthy"


# --- traffic and series math ---------------------------------------------------------------------

def sample(circuit, at, requests, errors, latency_sum, buckets, routes=None, inflight=0, healthy=1, worker=None):
    return InferenceSample.objects.create(
        circuit=circuit, endpoint_id=circuit.endpoint_id, worker=worker or circuit.worker, at=at,
        requests_total=requests, errors_total=errors, inflight=inflight, latency_sum=latency_sum,
        latency_count=buckets["+Inf"], latency_buckets=buckets, healthy_routes=healthy, routes=routes or {})


@pytest.fixture
def endpoint_circuit(replica, owner):
    make_worker()
    endpoint = uuid.uuid4()
    services.sync_endpoint(endpoint, **spec(owner, [route(replica(owner, "r1"))]))
    return Circuit.objects.get()


def test_traffic_is_the_difference_of_samples_over_the_window(endpoint_circuit):
    c, now = endpoint_circuit, timezone.now()
    sample(c, now - timedelta(seconds=100), 1000, 10, 50.0, {"0.1": 900, "1": 1000, "+Inf": 1000})  # before
    sample(c, now - timedelta(seconds=50), 1100, 12, 60.0, {"0.1": 950, "1": 1100, "+Inf": 1100},
           routes={"a": {"requests": 60, "errors": 0}, "b": {"requests": 40, "errors": 2}})
    sample(c, now - timedelta(seconds=10), 1300, 20, 100.0, {"0.1": 1050, "1": 1300, "+Inf": 1300},
           routes={"a": {"requests": 210, "errors": 4}, "b": {"requests": 90, "errors": 6}}, inflight=7, healthy=2)
    traffic = services.endpoint_traffic(c.endpoint_id, 60, now=now)
    # base: the sample 100 s ago (the last one before the window); newest 10 s ago: 90 s apart
    assert traffic["requests"] == 300 and traffic["errors"] == 10 and traffic["samples"] == 2
    assert traffic["request_rate"] == pytest.approx(300 / 90)
    assert traffic["error_rate"] == pytest.approx(10 / 90) and traffic["error_ratio"] == pytest.approx(10 / 300)
    assert traffic["latency_mean"] == pytest.approx(50.0 / 300)
    # 300 observations: 150 at or below 0.1 s, 150 in (0.1, 1]: the median is the 0.1 bound, p99 near 1 s
    assert traffic["latency_p50"] == pytest.approx(0.1)
    assert traffic["latency_p99"] == pytest.approx(0.1 + 0.9 * (297 - 150) / 150)
    assert (traffic["inflight"], traffic["healthy_routes"]) == (7, 2)
    assert traffic["per_route"]["a"]["requests"] == 210 and traffic["per_route"]["b"]["errors"] == 6


def test_a_worker_restart_counts_its_new_counters_as_the_increase(endpoint_circuit):
    c, now = endpoint_circuit, timezone.now()
    sample(c, now - timedelta(seconds=40), 5000, 0, 10.0, {"1": 5000, "+Inf": 5000})
    sample(c, now - timedelta(seconds=20), 30, 3, 3.0, {"1": 30, "+Inf": 30})  # counters started again
    traffic = services.endpoint_traffic(c.endpoint_id, 60, now=now)
    assert (traffic["requests"], traffic["errors"]) == (30, 3)
    assert traffic["latency_mean"] == pytest.approx(0.1)


def test_an_endpoint_without_samples_or_circuit_has_quiet_traffic():
    quiet = services.endpoint_traffic(uuid.uuid4(), 60)
    assert (quiet["request_rate"], quiet["latency_p50"], quiet["samples"], quiet["per_route"]) == (0.0, None, 0, {})
    assert services.endpoint_health(uuid.uuid4()) == {}
    assert all(p["request_rate"] == 0 for p in services.endpoint_series(uuid.uuid4(), 1, 10))


def test_the_series_has_one_point_per_step(endpoint_circuit):
    c, now = endpoint_circuit, timezone.now()
    sample(c, now - timedelta(seconds=55), 0, 0, 0.0, {"+Inf": 0})
    sample(c, now - timedelta(seconds=35), 100, 0, 10.0, {"+Inf": 100}, inflight=3)
    sample(c, now - timedelta(seconds=5), 400, 30, 40.0, {"+Inf": 400}, inflight=1)
    series = services.endpoint_series(c.endpoint_id, minutes=1, step_seconds=20, now=now)
    assert len(series) == 3
    # steps: (-60, -40], (-40, -20], (-20, 0]: each increase counts in the step of its later sample
    assert [p["request_rate"] for p in series] == [0.0, pytest.approx(100 / 20), pytest.approx(300 / 20)]
    assert [p["error_rate"] for p in series] == [0.0, 0.0, pytest.approx(30 / 20)]
    assert [p["inflight"] for p in series] == [0, 3, 1]
    assert series[0]["latency_mean"] is None and series[1]["latency_mean"] == pytest.approx(0.1)
    assert series[0]["at"] == (now - timedelta(seconds=60)).isoformat()


def test_samples_older_than_an_hour_are_pruned_by_the_sweep(endpoint_circuit):
    c, now = endpoint_circuit, timezone.now()
    sample(c, now - timedelta(minutes=61), 1, 0, 0.0, {"+Inf": 1})
    sample(c, now - timedelta(minutes=59), 2, 0, 0.0, {"+Inf": 2})
    assert services.sweep_circuits(now=now)["samples"] == 1
    assert InferenceSample.objects.get().requests_total == 2


@pytest.mark.parametrize("call", [
    lambda e: services.endpoint_traffic(e, 0), lambda e: services.endpoint_traffic(e, 3601),
    lambda e: services.endpoint_traffic(e, "60"), lambda e: services.endpoint_series(e, 61, 30),
    lambda e: services.endpoint_series(e, 60, 1), lambda e: services.endpoint_series(e, 15, 0),
    lambda e: services.endpoint_health("not-a-uuid"),
])
def test_bad_windows_and_ids_are_400s(call):
    with pytest.raises(BackendAIError) as caught:
        call(uuid.uuid4())
    assert caught.value.status_code == 400


# --- the coordinator's REST routes -----------------------------------------------------------------

def rest(client, method, path, body=None, secret=SECRET, bearer=None):
    headers = {}
    if secret is not None:
        headers["HTTP_X_BACKENDAI_TOKEN"] = secret
    if bearer is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {bearer}"
    data = b"" if body is None else json.dumps(body)
    return client.generic(method, path, data=data, content_type="application/json", **headers)


def rest_body(owner, routes):
    return {**spec(owner, routes), "owner_id": str(owner.pk)}


@pytest.mark.urls("appproxy.coordinator.urls")
def test_the_endpoint_routes_need_the_coordinator_secret_and_refusals_change_nothing(client, replica, owner):
    make_worker()
    endpoint = uuid.uuid4()
    body = rest_body(owner, [route(replica(owner, "r1"))])
    calls = [("POST", f"/v2/endpoints/{endpoint}", body), ("DELETE", f"/v2/endpoints/{endpoint}", None),
             ("GET", f"/v2/endpoints/{endpoint}/health", None), ("GET", f"/v2/endpoints/{endpoint}/traffic", None),
             ("GET", f"/v2/endpoints/{endpoint}/series", None)]
    worker_token = services.issue_token("w")[1]
    before = state()
    for method, path, data in calls:
        for secret, bearer in ((None, None), ("wrong-secret-0123456789", None), (None, worker_token)):
            response = rest(client, method, path, data, secret=secret, bearer=bearer)
            assert response.status_code in (401, 403), (method, path, response.content)
            problem(response)
    assert state() == before


@pytest.mark.urls("appproxy.coordinator.urls")
def test_the_endpoint_routes_sync_read_and_remove(client, replica, owner):
    make_worker()
    endpoint = uuid.uuid4()
    routes = [route(replica(owner, "r1"))]
    created = rest(client, "POST", f"/v2/endpoints/{endpoint}", rest_body(owner, routes))
    assert created.status_code == 200, created.content
    assert created.json()["url"] == "http://127.0.0.1:40000"
    health = rest(client, "GET", f"/v2/endpoints/{endpoint}/health")
    assert health.json() == {"routes": {routes[0]["route_id"]: {"status": "unknown", "changed_at": None,
                                                                "checked_at": None, "failures": 0,
                                                                "last_error": ""}}}
    traffic = rest(client, "GET", f"/v2/endpoints/{endpoint}/traffic?window=30")
    assert traffic.status_code == 200 and traffic.json()["window"] == 30
    series = rest(client, "GET", f"/v2/endpoints/{endpoint}/series?minutes=2&step=30")
    assert len(series.json()["series"]) == 4
    removed = rest(client, "DELETE", f"/v2/endpoints/{endpoint}?reason=test")
    assert removed.json() == {"removed": 1} and CircuitTombstone.objects.get().reason == "test"


@pytest.mark.urls("appproxy.coordinator.urls")
@pytest.mark.parametrize("method, path, body, named", [
    ("POST", "/v2/endpoints/nope", "BODY", "endpoint_id"),
    ("POST", "/v2/endpoints/{e}", ["a list"], "JSON object"),
    ("POST", "/v2/endpoints/{e}", {"owner_id": "x"}, "required"),
    ("POST", "/v2/endpoints/{e}", "BODY+extra", "unknown keys"),
    ("POST", "/v2/endpoints/{e}", "BODY+badroutes", "routes"),
    ("DELETE", "/v2/endpoints/nope", None, "endpoint_id"),
    ("GET", "/v2/endpoints/{e}/traffic?window=abc", None, "window"),
    ("GET", "/v2/endpoints/{e}/traffic?window=0", None, "window"),
    ("GET", "/v2/endpoints/{e}/series?minutes=99", None, "minutes"),
    ("GET", "/v2/endpoints/{e}/series?step=x", None, "step"),
    ("GET", "/v2/endpoints/nope/health", None, "endpoint_id"),
])
def test_bad_endpoint_requests_are_400_problems_and_change_nothing(client, replica, owner, method, path, body,
                                                                   named):
    make_worker()
    good = rest_body(owner, [route(replica(owner, "r1"))])
    body = {"BODY": good, "BODY+extra": {**good, "surprise": 1},
            "BODY+badroutes": {**good, "routes": [{"route_id": 1}]}}.get(body, body) if isinstance(body, str) \
        else body
    before = state()
    response = rest(client, method, path.format(e=uuid.uuid4()), body)
    assert response.status_code == 400, response.content
    assert slug(response) == "invalid-api-params" and named in response.json()["msg"]
    assert state() == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("appproxy.coordinator.urls")
def test_the_manager_reaches_the_same_services_through_the_http_coordinator(live_server, replica, owner):
    make_worker()
    endpoint = uuid.uuid4()
    routes = [route(replica(owner, "r1"))]
    remote = gateway.HTTPCoordinator(live_server.url, SECRET, timeout=10)
    try:
        answer = remote.sync_endpoint(endpoint, **spec(owner, routes))
        assert answer["circuit_id"] == str(Circuit.objects.get(endpoint_id=endpoint).pk)
        assert remote.endpoint_health(endpoint)[routes[0]["route_id"]]["status"] == "unknown"
        assert remote.endpoint_traffic(endpoint, 60)["requests"] == 0
        assert len(remote.endpoint_series(endpoint, 1, 30)) == 2
        with pytest.raises(gateway.RemoteProblem) as caught:
            remote.endpoint_traffic(endpoint, 0)
        assert caught.value.status_code == 400
        assert remote.remove_endpoint(endpoint) == 1
    finally:
        remote.close()
    in_process = gateway.InProcessCoordinator()
    assert in_process.endpoint_health(endpoint) == {} and in_process.remove_endpoint(endpoint) == 0


# --- the admin ------------------------------------------------------------------------------------

def test_an_endpoints_circuit_shows_in_the_admin_without_its_secret(admin_client, replica, owner):
    make_worker()
    endpoint = uuid.uuid4()
    services.sync_endpoint(endpoint, **spec(owner, [route(replica(owner, "r1"))]))
    circuit = Circuit.objects.get()
    listing = admin_client.get("/admin/appproxy/circuit/")
    assert listing.status_code == 200 and f"endpoint {endpoint}" in listing.content.decode()
    page = admin_client.get(f"/admin/appproxy/circuit/{circuit.pk}/change/")
    assert page.status_code == 200 and "t" * 32 not in page.content.decode()
    refused = admin_client.post("/admin/appproxy/circuit/add/", {"app": "x", "protocol": "http", "target_host": "h",
                                                                 "target_port": 1, "worker": circuit.worker_id})
    assert refused.status_code == 200, refused.content
    assert "belongs to a session" in str(refused.context["adminform"].form.errors["session"])
    assert Circuit.objects.count() == 1
