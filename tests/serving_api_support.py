"""Pieces of the serving API tests (tests/serving/test_services_*.py, test_serving_admin.py): the official
client's create body, a service created through the real ``POST /services``, its routes made by one
pass of the real reconciler, and a snapshot that a refused request must leave unchanged.  The cluster
and the model folder are the fixtures of ``tests/serving/conftest.py``."""
from __future__ import annotations

IMAGE = "bai-test/http:1.0"


def create_body(model: str, name: str = "svc-one", replicas: int = 2, **overrides) -> dict:
    """The official client 23.9.10's ``POST /services`` body (``Service.create``)."""
    body = {
        "name": name, "desired_session_count": replicas, "image": IMAGE, "arch": "x86_64", "group": "default",
        "domain": "default", "cluster_size": 1, "cluster_mode": "single-node", "tag": None,
        "startup_command": None, "bootstrap_script": None, "owner_access_key": None, "open_to_public": False,
        "config": {"model": model, "model_version": None, "model_mount_destination": "/models",
                   "environ": {"A": "1"}, "scaling_group": "default", "resources": {"cpu": "1", "mem": "256m"},
                   "resource_opts": {}},
    }
    for key, value in overrides.items():
        if key.startswith("config."):
            body["config"][key[7:]] = value
        else:
            body[key] = value
    return body


def create_service(api, model: str, **kwargs) -> dict:
    response = api.post("/services", create_body(model, **kwargs))
    assert response.status_code == 200, response.content
    return response.json()


def reconcile_once():
    """One pass of the real reconciler: the endpoint's replicas are enqueued as routes (PROVISIONING);
    with no app-proxy worker, the circuit push fails and is recorded on the endpoint."""
    from serving.services import reconcile

    return reconcile.reconcile_endpoints()


def mark_healthy(route_ids):
    """What the reconciler records once the proxy's health check passes for these routes."""
    from django.utils import timezone

    from serving.models import RouteStatus, Routing

    Routing.objects.filter(pk__in=list(route_ids)).update(status=RouteStatus.HEALTHY, status_changed=timezone.now())


def service_state(endpoint_id) -> tuple:
    """A snapshot of an endpoint and its routes (a refused request must not change it)."""
    from serving.models import Endpoint, EndpointToken, Routing

    endpoint = Endpoint.objects.filter(pk=endpoint_id).values_list(
        "name", "replicas", "lifecycle_stage", "open_to_public", "retries", "token_secret").get()
    routes = tuple(Routing.objects.filter(endpoint_id=endpoint_id).order_by("pk").values_list(
        "pk", "status", "traffic_ratio"))
    tokens = EndpointToken.objects.filter(endpoint_id=endpoint_id).count()
    return endpoint, routes, tokens


def serve_with_two_routes(api, model_id) -> tuple[str, list]:
    """A service of two replicas made through ``POST /services``: its routes (made by one reconciler
    pass), the first one marked healthy.  ``(endpoint id, routes)``."""
    from serving.models import Routing

    created = create_service(api, str(model_id))
    reconcile_once()
    routes = list(Routing.objects.filter(endpoint_id=created["endpoint_id"]).order_by("created_at"))
    assert len(routes) == 2
    mark_healthy([routes[0].pk])
    return created["endpoint_id"], routes
