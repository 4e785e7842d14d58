"""The admin pages of model serving: every page opens for a superadmin and for no one else, the
token secret and token digests never show, and every change (replicas, traffic ratio, route
removal, token, destruction, autoscaling rules) goes through the services."""
from __future__ import annotations

import pytest

from serving_api_support import serve_with_two_routes

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(owner, signed, cluster, model):
    from serving.models import Endpoint

    endpoint_id, routes = serve_with_two_routes(signed(owner), model.pk)
    token = signed(owner).post(f"/services/{endpoint_id}/token", {"duration": "1d"}).json()["token"]
    return Endpoint.objects.get(pk=endpoint_id), routes, token


@pytest.fixture
def admin_client(client, superadmin):
    client.force_login(superadmin)
    return client


def pages(endpoint, routes):
    from serving.models import EndpointEvent, EndpointToken

    token = EndpointToken.objects.get(endpoint=endpoint)
    event = EndpointEvent.objects.filter(endpoint=endpoint).first()
    return ["/admin/serving/endpoint/", f"/admin/serving/endpoint/{endpoint.pk}/change/",
            "/admin/serving/routing/", f"/admin/serving/routing/{routes[0].pk}/change/",
            "/admin/serving/endpointtoken/", f"/admin/serving/endpointtoken/{token.pk}/change/",
            "/admin/serving/autoscalingrule/", "/admin/serving/autoscalingrule/add/",
            "/admin/serving/endpointevent/", f"/admin/serving/endpointevent/{event.pk}/change/"]


def test_every_serving_admin_page_opens_without_showing_secrets(admin_client, served):
    from serving.models import EndpointToken

    endpoint, routes, token = served
    digest = EndpointToken.objects.get(endpoint=endpoint).digest
    for url in pages(endpoint, routes):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        text = response.content.decode()
        for secret in (token, digest, endpoint.token_secret):
            assert secret not in text, url
    detail = admin_client.get(f"/admin/serving/endpoint/{endpoint.pk}/change/").content.decode()
    assert "Service created with 2 replica(s)" in detail  # the recent events
    assert str(routes[0].session_id) in detail  # the routes inline


@pytest.mark.parametrize("role", ["owner", "domain_admin"])
def test_the_serving_admin_pages_are_for_superadmins_only(client, served, role, request):
    endpoint, routes, _ = served
    client.force_login(request.getfixturevalue(role))
    for url in pages(endpoint, routes):
        assert client.get(url).status_code in (302, 403), url


def test_the_admin_cannot_add_or_delete_endpoints_routes_tokens_or_events(admin_client, served):
    endpoint, routes, _ = served
    for model in ("endpoint", "routing", "endpointtoken", "endpointevent"):
        assert admin_client.get(f"/admin/serving/{model}/add/").status_code == 403, model
    assert admin_client.get(f"/admin/serving/endpoint/{endpoint.pk}/delete/").status_code == 403
    assert admin_client.get(f"/admin/serving/routing/{routes[0].pk}/delete/").status_code == 403


def test_changing_replicas_in_the_admin_scales_through_the_service(admin_client, served, superadmin):
    from serving.models import Endpoint, EndpointEvent

    endpoint, _, _ = served
    response = admin_client.post(f"/admin/serving/endpoint/{endpoint.pk}/change/", {
        "replicas": 4, "routings-TOTAL_FORMS": 0, "routings-INITIAL_FORMS": 0})
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Endpoint.objects.get(pk=endpoint.pk).replicas == 4
    event = EndpointEvent.objects.filter(endpoint=endpoint, kind="scale").get()
    assert event.data["by"] == str(superadmin.pk)
    refused = admin_client.post(f"/admin/serving/endpoint/{endpoint.pk}/change/", {
        "replicas": 65, "routings-TOTAL_FORMS": 0, "routings-INITIAL_FORMS": 0})
    assert refused.status_code == 200  # the form shows the error
    assert Endpoint.objects.get(pk=endpoint.pk).replicas == 4


def test_endpoint_actions_scale_issue_a_token_once_and_destroy(admin_client, served):
    from serving.models import Endpoint, EndpointToken

    endpoint, _, _ = served
    changelist = "/admin/serving/endpoint/"
    admin_client.post(changelist, {"action": "add_replica", "_selected_action": [endpoint.pk]})
    assert Endpoint.objects.get(pk=endpoint.pk).replicas == 3
    admin_client.post(changelist, {"action": "scale_to_zero", "_selected_action": [endpoint.pk]})
    assert Endpoint.objects.get(pk=endpoint.pk).replicas == 0
    issued = admin_client.post(changelist, {"action": "issue_token", "_selected_action": [endpoint.pk]}, follow=True)
    newest = EndpointToken.objects.filter(endpoint=endpoint).order_by("-created_at").first()
    text = issued.content.decode()
    assert "shown once" in text and newest.hint in text and newest.digest not in text
    secret = Endpoint.objects.get(pk=endpoint.pk).token_secret
    revoked = admin_client.post(changelist, {"action": "revoke_tokens", "_selected_action": [endpoint.pk]},
                                follow=True)
    assert "Revoked every API token" in revoked.content.decode()
    assert not EndpointToken.objects.filter(endpoint=endpoint).exists()
    assert Endpoint.objects.get(pk=endpoint.pk).token_secret != secret
    admin_client.post(changelist, {"action": "destroy", "_selected_action": [endpoint.pk]})
    assert Endpoint.objects.get(pk=endpoint.pk).lifecycle_stage == "destroying"
    admin_client.post(changelist, {"action": "add_replica", "_selected_action": [endpoint.pk]})
    assert Endpoint.objects.get(pk=endpoint.pk).replicas == 0  # refused: it is being destroyed


def test_a_routes_traffic_ratio_and_removal_go_through_the_services(admin_client, served):
    from serving.models import Endpoint, EndpointEvent, Routing

    endpoint, routes, _ = served
    response = admin_client.post(f"/admin/serving/routing/{routes[0].pk}/change/", {"traffic_ratio": 3.5})
    assert response.status_code == 302
    assert Routing.objects.get(pk=routes[0].pk).traffic_ratio == 3.5
    assert EndpointEvent.objects.filter(endpoint=endpoint, kind="route").exists()
    admin_client.post("/admin/serving/routing/", {"action": "drain_and_remove", "_selected_action": [routes[1].pk]})
    assert Routing.objects.get(pk=routes[1].pk).status == "terminating"
    assert Endpoint.objects.get(pk=endpoint.pk).replicas == 1


def test_autoscaling_rules_are_created_changed_and_deleted_through_the_service(admin_client, served):
    from serving.models import AutoScalingRule

    endpoint, _, _ = served
    form = {"endpoint": endpoint.pk, "metric_source": "proxy", "metric_name": "request_rate", "threshold": 5,
            "comparator": "gt", "step_size": 1, "cooldown_seconds": 60, "min_replicas": 1, "max_replicas": 4,
            "window_seconds": 30, "enabled": "on"}
    response = admin_client.post("/admin/serving/autoscalingrule/add/", form)
    assert response.status_code == 302
    rule = AutoScalingRule.objects.get(endpoint=endpoint)
    assert (rule.metric_name, rule.threshold, rule.max_replicas) == ("request_rate", 5.0, 4)
    admin_client.post(f"/admin/serving/autoscalingrule/{rule.pk}/change/", {**form, "threshold": 9})
    assert AutoScalingRule.objects.get(pk=rule.pk).threshold == 9.0
    bad = admin_client.post("/admin/serving/autoscalingrule/add/", {**form, "metric_name": "no_such_metric"})
    assert bad.status_code in (200, 302)
    assert AutoScalingRule.objects.count() == 1  # the service refused the unknown metric
    admin_client.post(f"/admin/serving/autoscalingrule/{rule.pk}/delete/", {"post": "yes"})
    assert not AutoScalingRule.objects.exists()
