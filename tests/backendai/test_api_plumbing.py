"""Version negotiation, problem+json errors, the unsigned root, health checks."""
import json

import pytest

from backendai import __version__, signing
from helpers import slug

pytestmark = pytest.mark.django_db


def test_the_root_answers_the_version_unsigned(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"version": "v8.20240915", "manager": __version__}
    assert response["Server"] == "BackendAI"


def test_the_root_version_matches_the_strict_client_format(client):
    import re

    assert re.fullmatch(r"v(\d+)\.(\d{8})", client.get("/").json()["version"])


def test_a_browser_at_the_root_is_sent_to_the_web_ui(client):
    response = client.get("/", HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert response.status_code == 302
    assert response["Location"] == "/ui/"


@pytest.mark.parametrize("version", signing.API_VERSIONS)
def test_every_listed_version_is_accepted(signed, owner, version):
    assert signed(owner, version=version).get("/auth/test").status_code == 200


@pytest.mark.parametrize("version", ["v9.20250723", "v10.20260101", "v8.20240916", "v8", "8.20240915", "garbage"])
def test_an_unknown_version_is_refused_with_400(client, version):
    response = client.get("/", HTTP_X_BACKENDAI_VERSION=version)
    assert response.status_code == 400
    assert slug(response) == "generic-bad-request"
    assert "Unsupported API version" in response.json()["title"]


def test_an_unknown_path_is_problem_json(client):
    response = client.get("/no/such/path")
    assert response.status_code == 404
    assert slug(response) == "url-not-found"


def test_a_wrong_method_is_problem_json(signed, owner):
    response = signed(owner).delete("/auth/role")
    assert response.status_code == 405
    assert slug(response) == "method-not-allowed"


def test_x_method_override_reroutes_the_request(signed, owner, client):
    api = signed(owner)
    headers = api.headers("GET", "/auth/test", "application/json")  # signed over the effective method
    response = client.generic("POST", "/auth/test", json.dumps({"echo": "x"}), content_type="application/json",
                              HTTP_X_METHOD_OVERRIDE="GET", **headers)
    assert response.status_code == 200
    assert response.json()["echo"] == ""


def test_x_method_override_signed_over_the_wire_method_is_refused(signed, owner):
    response = signed(owner).request("POST", "/auth/test", data={"echo": "x"}, extra={"HTTP_X_METHOD_OVERRIDE": "GET"})
    assert response.status_code == 401


def test_malformed_json_is_invalid_api_params(signed, owner):
    response = signed(owner).request("POST", "/auth/update-password", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert slug(response) == "invalid-api-params"


def test_healthz_is_alive_without_auth(client):
    assert client.get("/healthz").json() == {"status": "alive"}


def test_readyz_checks_the_database_and_redis(client, settings):
    from backendai import health

    health.record_heartbeat(health.BEAT)  # a beat that just ticked (tests/backendai/test_beat_health.py)
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["checks"]["database"] == {"ok": True}
    assert body["checks"]["redis"] == {"ok": True, "configured": bool(settings.REDIS_URL)}


def test_readyz_reports_an_unreachable_redis(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    redis = response.json()["checks"]["redis"]
    assert redis["ok"] is False and redis["error"]


def test_the_openapi_schema_and_swagger_page_are_served_locally(client):
    schema = client.get("/spec/openapi?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/auth/authorize" in paths and "/config/resource-slots" in paths
    page = client.get("/spec/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "cdn" not in html.lower()
    asset = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_resource_slots_lists_the_known_slot_types(signed, owner):
    response = signed(owner).get("/config/resource-slots")
    assert response.status_code == 200
    assert response.json()["cpu"] == "count" and response.json()["mem"] == "bytes"


def test_the_announcement_is_set_by_superadmins_only(signed, owner, superadmin):
    assert signed(owner).get("/manager/announcement").json() == {"enabled": False, "message": ""}
    refused = signed(owner).post("/manager/announcement", {"enabled": True, "message": "hacked"})
    assert refused.status_code == 403 and slug(refused) == "insufficient-privilege"
    assert signed(superadmin).post("/manager/announcement", {"enabled": True, "message": "Maintenance at 18:00"}).status_code == 204
    assert signed(owner).get("/manager/announcement").json() == {"enabled": True, "message": "Maintenance at 18:00"}
    bad = signed(superadmin).post("/manager/announcement", {"enabled": "yes"})
    assert bad.status_code == 400 and slug(bad) == "invalid-api-params"


def test_metrics_show_sessions_and_agents_by_status(client, owner, settings):
    settings.METRICS_PUBLIC = True  # the public port serves /metrics only when configured
    from agents import services as agent_services
    from agents.models import Agent

    group = agent_services.ensure_default_scaling_group()
    Agent.objects.create(id="m1", scaling_group=group)
    body = client.get("/metrics").content.decode()
    assert 'backendai_agent_count{status="ALIVE"} 1.0' in body
    assert "django_http_requests" in body
