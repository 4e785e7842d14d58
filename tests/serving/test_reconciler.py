"""The reconciler keeps ``replicas`` routes per endpoint through the real scheduler and the
session lifecycle, maps sessions and proxy health to route statuses, drains and destroys."""
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from appproxy.gateway import coordinator
from appproxy.models import Circuit
from serving.models import Endpoint, EndpointEvent, LifecycleStage, RouteStatus, Routing
from serving.services import endpoints, reconcile
from sessions.lifecycle import SessionStatus
from sessions.models import Session


def routes(endpoint, *statuses):
    query = Routing.objects.filter(endpoint=endpoint).select_related("session").order_by("created_at")
    return list(query.filter(status__in=statuses) if statuses else query)


def test_it_starts_the_missing_replicas_as_inference_sessions(owner, service, model):
    endpoint = service(replicas=2)
    summary = reconcile.reconcile_endpoints()
    assert summary["started"] == 2
    started = routes(endpoint)
    assert [r.status for r in started] == [RouteStatus.PROVISIONING] * 2
    for route in started:
        session = route.session
        assert session.session_type == "inference" and session.user == owner
        assert session.name == f"echo-svc-{route.pk.hex[:8]}"
        assert session.status == SessionStatus.PENDING
        assert session.startup_command == "python3 -m http.server 8000"
        assert any(m["vfolder_id"] == str(model.pk) and m["container_path"] == "/models"
                   for m in session.vfolder_mounts)
        main = session.kernels.get(cluster_role="main")
        assert main.service_ports[0] == {"name": "inference", "protocol": "inference", "container_ports": [8000]}
    assert EndpointEvent.objects.filter(endpoint=endpoint, kind="route", message__contains="starting").count() == 2
    # converged: the next pass starts nothing
    assert reconcile.reconcile_endpoints()["started"] == 0
    assert len(routes(endpoint)) == 2


def test_a_running_replica_goes_into_the_circuit_and_its_health_becomes_the_route_status(
        service, replicas, proxy_worker):
    endpoint = service(replicas=1)
    reconcile.reconcile_endpoints()
    replicas.run_all(endpoint)
    reconcile.reconcile_endpoints()
    endpoint.refresh_from_db()
    circuit = Circuit.objects.get(endpoint_id=endpoint.pk)
    assert endpoint.circuit_id == circuit.pk and endpoint.url.startswith("http://127.0.0.1:4000")
    route = routes(endpoint)[0]
    assert circuit.app_mode == "inference" and circuit.container_port == 8000
    assert [(r["route_id"], r["active"], bool(r["port"])) for r in circuit.routes] == [(str(route.pk), True, True)]
    assert circuit.health_check["path"] == "/health" and circuit.token_secret == endpoint.token_secret
    assert route.status == RouteStatus.PROVISIONING  # the worker has not checked it yet

    replicas.health(proxy_worker, endpoint, {route.pk: "healthy"})
    summary = reconcile.reconcile_endpoints()
    assert summary["healthy"] == 1
    route.refresh_from_db()
    assert route.status == RouteStatus.HEALTHY and route.error_data.get("healthy_once") is True

    replicas.health(proxy_worker, endpoint, {route.pk: "unhealthy"})
    reconcile.reconcile_endpoints()
    route.refresh_from_db()
    assert route.status == RouteStatus.UNHEALTHY
    assert route.error_data["last_error"] == "connection refused"
    assert EndpointEvent.objects.filter(endpoint=endpoint, kind="error", message__contains="unhealthy").exists()


def test_a_replica_that_fails_before_it_was_healthy_fails_to_start_with_backoff(owner, service, replicas):
    endpoint = service(replicas=1)
    now = timezone.now()
    reconcile.reconcile_endpoints(now)
    replicas.run_all(endpoint, status="ERROR")
    summary = reconcile.reconcile_endpoints(now)
    assert summary["failed"] == 1 and summary["started"] == 0
    failed = routes(endpoint)[0]
    assert failed.status == RouteStatus.FAILED_TO_START
    assert failed.error_data["session_status"] == SessionStatus.ERROR
    assert failed.error_data["message"].startswith("the session is ERROR")
    endpoint.refresh_from_db()
    assert endpoint.retries == 1 and endpoint.next_attempt_at == now + timedelta(seconds=5)
    assert failed.session.status in (SessionStatus.TERMINATED, SessionStatus.TERMINATING)  # cleaned up

    # no new replica before the backoff ends
    assert reconcile.reconcile_endpoints(now + timedelta(seconds=4))["started"] == 0
    assert reconcile.reconcile_endpoints(now + timedelta(seconds=6))["started"] == 1
    replicas.run_all(endpoint, status="ERROR")
    later = now + timedelta(seconds=6)
    reconcile.reconcile_endpoints(later)
    endpoint.refresh_from_db()
    assert endpoint.retries == 2 and endpoint.next_attempt_at == later + timedelta(seconds=10)

    report = endpoints.errors(endpoint)
    assert report["retries"] == 2 and len(report["errors"]) == 2
    assert endpoints.clear_errors(owner, endpoint) == 2
    endpoint.refresh_from_db()
    assert endpoint.retries == 0 and endpoint.next_attempt_at is None
    assert reconcile.reconcile_endpoints(later)["started"] == 1


def test_the_backoff_doubles_up_to_five_minutes():
    assert [reconcile.backoff(n).total_seconds() for n in (1, 2, 3, 4, 7, 20)] == [5, 10, 20, 40, 300, 300]


def test_a_healthy_replica_whose_session_dies_is_replaced(service, replicas, proxy_worker):
    endpoint = service(replicas=1)
    reconcile.reconcile_endpoints()
    replicas.run_all(endpoint)
    reconcile.reconcile_endpoints()
    first = routes(endpoint)[0]
    replicas.health(proxy_worker, endpoint, {first.pk: "healthy"})
    reconcile.reconcile_endpoints()

    replicas.report(first.session, "TERMINATED", reason="process exited")
    summary = reconcile.reconcile_endpoints()
    assert summary["replaced"] == 1 and summary["started"] == 1
    current = routes(endpoint)
    assert len(current) == 1 and current[0].pk != first.pk and current[0].status == RouteStatus.PROVISIONING
    endpoint.refresh_from_db()
    assert endpoint.retries == 0
    circuit = Circuit.objects.get(endpoint_id=endpoint.pk)
    assert [r["route_id"] for r in circuit.routes] == []  # the new one runs only once placed and running
    assert EndpointEvent.objects.filter(endpoint=endpoint, message__contains="it is replaced").exists()


def test_scaling_down_drains_a_route_then_destroys_its_session(owner, service, replicas, proxy_worker):
    endpoint = service(replicas=2)
    now = timezone.now()
    reconcile.reconcile_endpoints(now)
    replicas.run_all(endpoint)
    reconcile.reconcile_endpoints(now)
    both = routes(endpoint)
    replicas.health(proxy_worker, endpoint, {both[0].pk: "healthy", both[1].pk: "unhealthy"})
    reconcile.reconcile_endpoints(now)

    endpoints.scale(owner, endpoint, 1)
    summary = reconcile.reconcile_endpoints(now)
    assert summary["drained"] == 1
    drained = Routing.objects.get(endpoint=endpoint, status=RouteStatus.TERMINATING)
    assert drained.pk == both[1].pk  # the unhealthy one goes first
    assert drained.drain_until == now + timedelta(seconds=2 + 5)  # health interval + 5 s
    circuit = Circuit.objects.get(endpoint_id=endpoint.pk)
    assert {r["route_id"]: r["active"] for r in circuit.routes} == {str(both[0].pk): True, str(both[1].pk): False}
    assert drained.session.status == SessionStatus.RUNNING  # in-flight requests finish

    reconcile.reconcile_endpoints(now + timedelta(seconds=3))
    assert Routing.objects.filter(pk=drained.pk).exists()
    summary = reconcile.reconcile_endpoints(now + timedelta(seconds=8))
    assert summary["removed"] == 1
    assert not Routing.objects.filter(pk=drained.pk).exists()
    assert Session.objects.get(pk=drained.session_id).status == SessionStatus.TERMINATING
    circuit.refresh_from_db()
    assert [r["route_id"] for r in circuit.routes] == [str(both[0].pk)]
    assert EndpointEvent.objects.filter(endpoint=endpoint, kind="scale", message__contains="to 1").exists()


def test_scaling_up_starts_more_and_zero_replicas_drain_all(owner, service, replicas):
    endpoint = service(replicas=1)
    reconcile.reconcile_endpoints()
    endpoints.scale(owner, endpoint, 3)
    assert reconcile.reconcile_endpoints()["started"] == 2
    endpoints.scale(owner, endpoint, 0)
    assert reconcile.reconcile_endpoints()["drained"] == 3
    assert len(routes(endpoint, RouteStatus.TERMINATING)) == 3


def test_destroy_drains_every_route_removes_the_circuit_and_ends_destroyed(owner, service, replicas, proxy_worker):
    endpoint = service(replicas=2)
    now = timezone.now()
    reconcile.reconcile_endpoints(now)
    replicas.run_all(endpoint)
    reconcile.reconcile_endpoints(now)
    assert Circuit.objects.filter(endpoint_id=endpoint.pk).exists()

    endpoints.destroy(owner, endpoint)
    endpoint.refresh_from_db()
    assert endpoint.lifecycle_stage == LifecycleStage.DESTROYING
    reconcile.reconcile_endpoints(now)
    assert len(routes(endpoint, RouteStatus.TERMINATING)) == 2
    circuit = Circuit.objects.get(endpoint_id=endpoint.pk)
    assert all(r["active"] is False for r in circuit.routes)

    summary = reconcile.reconcile_endpoints(now + timedelta(seconds=10))
    assert summary["removed"] == 2 and summary["destroyed"] == 1
    endpoint.refresh_from_db()
    assert endpoint.lifecycle_stage == LifecycleStage.DESTROYED and endpoint.destroyed_at is not None
    assert not Circuit.objects.filter(endpoint_id=endpoint.pk).exists()
    assert not Routing.objects.filter(endpoint=endpoint).exists()
    assert not Session.objects.filter(name__startswith="echo-svc-").exclude(
        status__in=[SessionStatus.TERMINATING, SessionStatus.TERMINATED, SessionStatus.CANCELLED]).exists()
    # the next pass leaves it alone
    assert reconcile.reconcile_endpoints(now + timedelta(seconds=20))["endpoints"] == 0


def test_destroying_an_endpoint_without_replicas_ends_it_at_once(owner, service):
    endpoint = service(replicas=0)
    endpoints.destroy(owner, endpoint)
    assert reconcile.reconcile_endpoints()["destroyed"] == 1
    endpoint.refresh_from_db()
    assert endpoint.lifecycle_stage == LifecycleStage.DESTROYED


def test_a_replica_the_scheduler_refuses_to_enqueue_is_a_failed_route(owner, service, cluster, proxy_worker):
    endpoint = service(replicas=1)
    group = cluster[0]
    group.scheduler_opts = {**group.scheduler_opts, "allowed_session_types": ["interactive"]}
    group.save()
    summary = reconcile.reconcile_endpoints()
    assert summary["failed"] == 1 and summary["started"] == 0
    failed = routes(endpoint)[0]
    assert failed.status == RouteStatus.FAILED_TO_START and failed.session is None
    assert "does not accept inference sessions" in failed.error_data["message"]
    endpoint.refresh_from_db()
    assert endpoint.retries == 1 and "does not accept" in endpoint.last_error
    assert EndpointEvent.objects.filter(endpoint=endpoint, kind="error").exists()


def test_without_a_proxy_worker_the_error_is_recorded_once(service, replicas):
    endpoint = service(replicas=1)
    reconcile.reconcile_endpoints()
    replicas.run_all(endpoint)
    for _ in range(3):
        assert reconcile.reconcile_endpoints()["push_errors"] == 1
    endpoint.refresh_from_db()
    assert endpoint.last_error.startswith("app proxy: ")
    recorded = EndpointEvent.objects.filter(endpoint=endpoint, message__contains="circuit could not be updated")
    assert recorded.count() == 1


def test_a_steady_pass_reads_in_bulk(owner, service, replicas, proxy_worker, model, body):
    first = service(replicas=1)
    reconcile.reconcile_endpoints()
    replicas.run_all(first)
    reconcile.reconcile_endpoints()
    with CaptureQueriesContext(connection) as one:
        reconcile.reconcile_endpoints()
    others = [endpoints.create_endpoint(owner, owner.main_keypair, body(service_name=f"svc-{n}")) for n in range(2)]
    reconcile.reconcile_endpoints()
    for endpoint in others:
        replicas.run_all(endpoint)
    reconcile.reconcile_endpoints()
    with CaptureQueriesContext(connection) as three:
        reconcile.reconcile_endpoints()
    with CaptureQueriesContext(connection) as health:
        coordinator().endpoint_health(first.pk)
    # what grows with the endpoints: the app proxy's health reads and each endpoint's savepoint
    grown = [q["sql"] for q in three.captured_queries if "SAVEPOINT" not in q["sql"]]
    base = [q["sql"] for q in one.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(grown) - len(base) == 2 * len(health), "\n".join(grown)
    assert Endpoint.objects.count() == 3
