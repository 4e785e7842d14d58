"""Who sees an endpoint, and the operations on it: scale, traffic ratios, removing a route,
tokens, errors, destroy, ``/services/_/try``."""
import pytest
from django.utils import timezone

from appproxy import tokens as proxy_tokens
from backendai.api import errors
from backendai.models import BackgroundTask
from serving.models import Endpoint, EndpointEvent, EndpointToken, LifecycleStage, RouteStatus, Routing
from serving.services import endpoints, reconcile


@pytest.fixture
def everyone(owner, member, outsider, domain_admin, foreign_admin, superadmin):
    return {"owner": owner, "member": member, "outsider": outsider, "domain_admin": domain_admin,
            "foreign_admin": foreign_admin, "superadmin": superadmin}


SEES = {"owner": True, "member": False, "outsider": False, "domain_admin": True, "foreign_admin": False,
        "superadmin": True}


@pytest.mark.parametrize("who", list(SEES))
def test_an_endpoint_is_visible_to_its_owner_its_domain_admin_and_superadmins(service, everyone, who):
    endpoint = service()
    actor = everyone[who]
    assert endpoints.visible_endpoints(actor).filter(pk=endpoint.pk).exists() is SEES[who]
    if SEES[who]:
        assert endpoints.get_endpoint(actor, str(endpoint.pk)) == endpoint
    else:
        with pytest.raises(errors.ObjectNotFound):
            endpoints.get_endpoint(actor, str(endpoint.pk))


@pytest.mark.parametrize("who", list(SEES))
def test_only_those_who_see_an_endpoint_may_change_it(service, everyone, who):
    endpoint = service()
    actor = everyone[who]
    if SEES[who]:
        assert endpoints.scale(actor, endpoint, 2).replicas == 2
        token_row, token = endpoints.issue_token(actor, endpoint, "1h")
        assert token_row.created_by == actor
    else:
        for call in (lambda: endpoints.scale(actor, endpoint, 2), lambda: endpoints.issue_token(actor, endpoint, "1h"),
                     lambda: endpoints.destroy(actor, endpoint), lambda: endpoints.clear_errors(actor, endpoint)):
            with pytest.raises(errors.ObjectNotFound):
                call()
        endpoint.refresh_from_db()
        assert endpoint.replicas == 1 and endpoint.lifecycle_stage == LifecycleStage.CREATED
        assert not EndpointToken.objects.exists()


def test_an_endpoint_is_found_by_name_and_a_destroyed_one_is_not(owner, service):
    endpoint = service()
    assert endpoints.get_endpoint(owner, "echo-svc") == endpoint
    Endpoint.objects.filter(pk=endpoint.pk).update(lifecycle_stage=LifecycleStage.DESTROYED)
    with pytest.raises(errors.ObjectNotFound):
        endpoints.get_endpoint(owner, "echo-svc")
    assert endpoints.get_endpoint(owner, str(endpoint.pk), include_destroyed=True) == endpoint
    assert not endpoints.visible_endpoints(owner).exists()


@pytest.mark.parametrize("ref", ["", "x" * 65, None, "no-such-service"])
def test_unknown_references_are_not_found(owner, service, ref):
    service()
    with pytest.raises(errors.ObjectNotFound):
        endpoints.get_endpoint(owner, ref)


@pytest.mark.parametrize("value", [-1, 65, "lots", True, 2.5, None])
def test_scale_refuses_replicas_out_of_range(owner, service, value):
    endpoint = service()
    with pytest.raises(errors.InvalidAPIParameters):
        endpoints.scale(owner, endpoint, value)
    endpoint.refresh_from_db()
    assert endpoint.replicas == 1
    assert not EndpointEvent.objects.filter(endpoint=endpoint, kind="scale").exists()


def test_apply_replicas_records_who_and_why(owner, service):
    endpoint = service()
    endpoints.apply_replicas(endpoint, 3, kind="autoscale", message="request_rate 12 > 10",
                             data={"rule": "r1", "metric": "request_rate", "value": 12.0, "threshold": 10.0})
    endpoint.refresh_from_db()
    assert endpoint.replicas == 3
    event = EndpointEvent.objects.get(endpoint=endpoint, kind="autoscale")
    assert event.message == "request_rate 12 > 10"
    assert event.data == {"from": 1, "to": 3, "rule": "r1", "metric": "request_rate", "value": 12.0, "threshold": 10.0}


def test_a_destroying_endpoint_cannot_be_scaled_and_destroy_is_idempotent(owner, service):
    endpoint = service()
    endpoints.destroy(owner, endpoint)
    endpoints.destroy(owner, endpoint)
    assert EndpointEvent.objects.filter(endpoint=endpoint, message__startswith="Destroy requested").count() == 1
    with pytest.raises(errors.InvalidAPIParameters, match="destroying"):
        endpoints.scale(owner, endpoint, 2)


def running_service(service, replicas, count=2):
    endpoint = service(replicas=count)
    reconcile.reconcile_endpoints()
    replicas.run_all(endpoint)
    reconcile.reconcile_endpoints()
    return endpoint


def test_traffic_ratios_change_within_bounds_and_reach_the_circuit(owner, service, replicas, proxy_worker):
    from appproxy.models import Circuit

    endpoint = running_service(service, replicas)
    first, second = Routing.objects.filter(endpoint=endpoint).order_by("created_at")
    endpoints.set_traffic_ratio(owner, endpoint, str(first.pk), 3)
    reconcile.reconcile_endpoints()
    circuit = Circuit.objects.get(endpoint_id=endpoint.pk)
    assert {r["route_id"]: r["traffic_ratio"] for r in circuit.routes} == {str(first.pk): 3.0, str(second.pk): 1.0}
    for bad in (-0.1, 100.5, "x", True, float("nan")):
        with pytest.raises(errors.InvalidAPIParameters, match="traffic_ratio"):
            endpoints.set_traffic_ratio(owner, endpoint, str(first.pk), bad)
    with pytest.raises(errors.ObjectNotFound):
        endpoints.set_traffic_ratio(owner, endpoint, "5f0e3c9a-0000-4000-8000-000000000000", 1)
    first.refresh_from_db()
    assert first.traffic_ratio == 3.0


def test_removing_a_route_drains_it_and_takes_one_replica_away(owner, service, replicas, proxy_worker):
    endpoint = running_service(service, replicas)
    first = Routing.objects.filter(endpoint=endpoint).order_by("created_at").first()
    endpoints.remove_route(owner, endpoint, str(first.pk))
    endpoint.refresh_from_db()
    first.refresh_from_db()
    assert endpoint.replicas == 1 and first.status == RouteStatus.TERMINATING and first.drain_until
    summary = reconcile.reconcile_endpoints()
    assert summary["started"] == 0 and summary["drained"] == 0
    with pytest.raises(errors.InvalidAPIParameters, match="only a live route"):
        endpoints.remove_route(owner, endpoint, str(first.pk))


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("2h", 7200), ("3d", 259200), ("1w", 604800),
                                          ("3600", 3600), (None, 30 * 86400), (120, 120)])
def test_token_durations_are_parsed(text, seconds):
    assert endpoints.parse_token_duration(text) == seconds


@pytest.mark.parametrize("text", ["10s", "0m", "400d", "soon", "-1h", "1.5h", True, "9" * 40])
def test_token_durations_out_of_bounds_are_refused(text):
    with pytest.raises(errors.InvalidAPIParameters, match="duration"):
        endpoints.parse_token_duration(text)


def test_a_token_is_shown_once_and_only_its_digest_is_kept(owner, service):
    endpoint = service()
    row, token = endpoints.issue_token(owner, endpoint, "2h")
    assert row.digest == endpoints.token_digest(token) and token not in (row.digest, row.hint)
    assert token.endswith(row.hint)
    claims = proxy_tokens.verify_endpoint_token(endpoint.token_secret, str(endpoint.pk), token)
    assert claims.user == str(owner.pk)
    assert 7100 < (row.expires_at - timezone.now()).total_seconds() <= 7200
    with pytest.raises(proxy_tokens.TokenError):
        proxy_tokens.verify_endpoint_token("another-secret", str(endpoint.pk), token)


def test_try_checks_the_spec_like_create_and_starts_a_background_task(owner, cluster, model, body):
    task_id = endpoints.try_start(owner, owner.main_keypair, body())
    task = BackgroundTask.objects.get(pk=task_id)
    assert task.func_path == "serving.services.endpoints.try_task" and task.owner_id == str(owner.pk)
    assert task.args[0]["model_definition"]["port"] == 8000
    assert not Endpoint.objects.exists()
    with pytest.raises(errors.InvalidAPIParameters, match="runtime_variant"):
        endpoints.try_start(owner, owner.main_keypair, body(runtime_variant="nope"))
    assert BackgroundTask.objects.count() == 1


def test_sync_pushes_the_route_table_again(owner, service, replicas, proxy_worker):
    from appproxy.models import Circuit

    endpoint = running_service(service, replicas, count=1)
    assert reconcile.reconcile_endpoints()["pushed"] == 0  # unchanged: not pushed again
    Circuit.objects.filter(endpoint_id=endpoint.pk).update(routes=[])  # the coordinator lost it
    summary = endpoints.sync(owner, endpoint)
    assert summary["pushed"] == 1
    assert len(Circuit.objects.get(endpoint_id=endpoint.pk).routes) == 1


def test_open_to_public_changes_reach_the_circuit(owner, member, service, replicas, proxy_worker):
    from appproxy.models import Circuit

    endpoint = running_service(service, replicas, count=1)
    endpoints.set_open_to_public(owner, endpoint, True)
    reconcile.reconcile_endpoints()
    assert Circuit.objects.get(endpoint_id=endpoint.pk).open_to_public is True
    with pytest.raises(errors.InvalidAPIParameters, match="open_to_public"):
        endpoints.set_open_to_public(owner, endpoint, "yes")
    with pytest.raises(errors.ObjectNotFound):
        endpoints.set_open_to_public(member, endpoint, False)
    endpoint.refresh_from_db()
    assert endpoint.open_to_public is True
