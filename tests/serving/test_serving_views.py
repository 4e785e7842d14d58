"""The serving web UI ("Serving": list, create form, endpoint page, its live fragment and
forms) through Django's test client: who sees and changes what (owner, member of the same
project, outsider, domain admin of another domain, superadmin), refusals beside their fields,
and nothing changed by a refused request."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from agents import services as agent_services
from agents.models import Image
from serving.models import AutoScalingRule, Endpoint, EndpointEvent, EndpointToken, LifecycleStage, Routing
from serving.services import endpoints as endpoint_services
from serving.views import sparkline, status_summary

pytestmark = pytest.mark.django_db

IMAGE = "cr.example.com/serving/echo:1.0"
DEFINITION = """models:
  - name: echo
    model_path: /models
    service:
      start_command: ["python3", "/opt/server.py"]
      port: 8000
      health_check: {path: /health, interval: 2, max_retries: 3}
"""
LIST = reverse("ui-serving:list")
CREATE = reverse("ui-serving:create")
FRAGMENT = {"HTTP_X_LIVE_FRAGMENT": "1"}
ROLES = ("owner", "member", "outsider", "foreign_admin", "domain_admin", "superadmin")
#: who may see and change the owner's endpoint (the services decide: owner, their domain's admin, superadmin)
MANAGERS = {"owner", "domain_admin", "superadmin"}


@pytest.fixture
def cluster(defaults):
    group = agent_services.ensure_default_scaling_group()
    Image.objects.create(
        name=IMAGE, registry_name="cr.example.com", repository="serving/echo", tag="1.0", architecture="x86_64",
        resources={"cpu": {"min": "0.25", "max": None}, "mem": {"min": str(128 * 2**20), "max": None}},
        service_ports=[{"name": "inference", "protocol": "http", "container_ports": [8000]}])
    return group


@pytest.fixture
def model_folder(storage_proxy, cluster):
    """``model_folder(user, name, definition)``: a folder of usage mode 'model' holding the definition
    (written on the proxy's volume, where an upload would have put it)."""
    from vfolders import services as vfolder_services

    vfolder_services.ensure_default_storage_host()

    def make(user, name="echo-model", definition=DEFINITION, usage_mode="model"):
        folder = vfolder_services.create_folder(user, name=name, usage_mode=usage_mode)
        path = Path(storage_proxy.root) / folder.host_id.split(":", 1)[1] / folder.relative_path
        path.mkdir(parents=True, exist_ok=True)
        if definition is not None:
            (path / "model-definition.yaml").write_text(definition)
        return folder

    return make


@pytest.fixture
def people(owner, member, outsider, foreign_admin, domain_admin, superadmin):
    return {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
            "domain_admin": domain_admin, "superadmin": superadmin}


def spec(folder, **overrides) -> dict:
    body = {"name": "echo-svc", "replicas": 2, "image": IMAGE, "runtime_variant": "custom",
            "open_to_public": False, "config": {"model": str(folder.pk), "resources": {"cpu": "0.5", "mem": "256m"}}}
    body.update(overrides)
    return body


@pytest.fixture
def endpoint(owner, model_folder):
    folder = model_folder(owner)
    return endpoint_services.create_endpoint(owner, owner.main_keypair, spec(folder))


def add_route(endpoint, status="healthy", ratio=1.0) -> Routing:
    """A replica's route as the reconciler leaves it (its session is started by the reconciler; the
    page only shows the route)."""
    return Routing.objects.create(endpoint=endpoint, session_owner=endpoint.session_owner, domain=endpoint.domain,
                                  project=endpoint.project, status=status, traffic_ratio=ratio)


def form_data(folder, **overrides) -> dict:
    data = {"name": "web-svc", "model": str(folder.pk), "image": IMAGE, "runtime_variant": "custom", "replicas": "1",
            "cpu": "0.5", "mem": "256m", "model_definition_path": "", "model_mount_destination": "/models"}
    data.update(overrides)
    return data


def field_error(response, field: str) -> str:
    """The error rendered beside ``field`` (the element with id error-<field>)."""
    match = re.search(rf'id="error-{re.escape(field)}"[^>]*>(.*?)</div>', response.content.decode(), re.S)
    return match.group(1).strip() if match else ""


def state(endpoint) -> tuple:
    """Everything a refused request must leave as it was."""
    row = Endpoint.objects.get(pk=endpoint.pk)
    return (row.replicas, row.lifecycle_stage, row.retries, row.token_secret,
            EndpointToken.objects.filter(endpoint=endpoint).count(),
            sorted(Routing.objects.filter(endpoint=endpoint).values_list("id", "traffic_ratio", "status")),
            AutoScalingRule.objects.filter(endpoint=endpoint).count(),
            EndpointEvent.objects.filter(endpoint=endpoint).count())


def url(name, endpoint, **kwargs):
    return reverse(f"ui-serving:{name}", kwargs={"endpoint_id": endpoint.pk, **kwargs})


# --- presentation helpers ---------------------------------------------------------------------------

def test_a_sparkline_scales_its_points_into_the_box_and_skips_missing_samples():
    chart = sparkline([0, None, 2, 4], width=30, height=12)
    points = [tuple(map(float, p.split(","))) for p in chart["points"].split()]
    assert [x for x, _ in points] == [0.0, 20.0, 30.0]
    assert points[0][1] == 11.0 and points[-1][1] == 1.0 and chart["top"] == 4 and chart["last"] == 4
    assert sparkline([None, 1.0]) is None and sparkline([]) is None


def test_the_status_summary_counts_healthy_routes_against_the_replicas_asked_for(endpoint):
    add_route(endpoint, "healthy")
    add_route(endpoint, "provisioning")
    assert status_summary(Endpoint.objects.get(pk=endpoint.pk)) == "1/2 healthy"


# --- the list -------------------------------------------------------------------------------------

def test_anonymous_users_are_sent_to_the_login_page(client, endpoint):
    for target in (LIST, CREATE, url("detail", endpoint), url("live", endpoint)):
        response = client.get(target)
        assert response.status_code == 302 and "/ui/login/" in response["Location"], target


def test_the_navigation_links_the_serving_page(client, owner):
    client.force_login(owner)
    page = client.get(reverse("ui-sessions:list")).content.decode()
    assert f'href="{LIST}"' in page and ">Serving</a>" in page


@pytest.mark.parametrize("role", ROLES)
def test_the_list_shows_an_endpoint_to_those_the_services_let_see_it(client, people, endpoint, role):
    add_route(endpoint, "healthy")
    client.force_login(people[role])
    response = client.get(LIST)
    assert response.status_code == 200
    page = response.content.decode()
    assert ('id="new-endpoint"' in page) and "Serve a model" in page
    if role in MANAGERS:
        row = re.search(rf'<tr data-endpoint="{endpoint.pk}">(.*?)</tr>', page, re.S).group(1)
        assert "echo-svc" in row and "1/2 healthy" in row
        assert (endpoint.session_owner.email in row) == (role != "owner")  # others' endpoints name their owner
    else:
        assert str(endpoint.pk) not in page and "echo-svc" not in page


def test_the_list_says_how_to_start_when_there_is_nothing(client, owner):
    client.force_login(owner)
    assert "No endpoints yet" in client.get(LIST).content.decode()


# --- the create form ------------------------------------------------------------------------------

def test_the_create_form_offers_only_the_users_model_folders_and_the_runtimes(client, owner, member, model_folder):
    mine = model_folder(owner, "mine-model")
    general = model_folder(owner, "plain-data", usage_mode="general")
    theirs = model_folder(member, "their-model")
    client.force_login(owner)
    page = client.get(CREATE).content.decode()
    assert f'value="{mine.pk}"' in page
    assert f'value="{general.pk}"' not in page and f'value="{theirs.pk}"' not in page
    assert f'value="{IMAGE}"' in page
    for runtime in ("custom", "vllm"):
        assert f'value="{runtime}"' in page


def test_an_endpoint_created_in_the_form_opens_its_page(client, owner, model_folder):
    folder = model_folder(owner)
    client.force_login(owner)
    response = client.post(CREATE, form_data(folder, replicas="2", open_to_public="on"))
    created = Endpoint.objects.get(name="web-svc")
    assert response.status_code == 302 and response["Location"] == url("detail", created)
    assert created.session_owner == owner and created.replicas == 2 and created.open_to_public
    assert created.model == folder and created.resource_slots == {"cpu": "0.5", "mem": "256m"}
    assert created.model_definition["port"] == 8000
    page = client.get(response["Location"]).content.decode()
    assert "Endpoint web-svc is created" in page and 'id="endpoint-live"' in page


@pytest.mark.parametrize("overrides, field, words", [
    ({"name": ""}, "name", "required"),
    ({"name": "n" * 60}, "name", "at most"),
    ({"replicas": "65"}, "replicas", "less than or equal to 64"),
    ({"replicas": "-1"}, "replicas", "greater than or equal to 0"),
    ({"mem": "lots"}, "mem", "invalid binary size"),
    ({"cpu": "0"}, "cpu", "positive"),
    ({"runtime_variant": "nope"}, "runtime_variant", "Select a valid choice"),
    ({"image": "cr.example.com/nothing:9"}, "image", "Unknown image"),
    ({"model_mount_destination": "relative/path"}, "model_mount_destination", "absolute path"),
    ({"model_definition_path": "missing.yaml"}, "model_definition_path", "missing.yaml"),
])
def test_refused_input_comes_back_beside_its_field_and_creates_nothing(client, owner, model_folder, overrides, field,
                                                                       words):
    folder = model_folder(owner)
    client.force_login(owner)
    response = client.post(CREATE, form_data(folder, **overrides))
    assert response.status_code == 400
    assert words in field_error(response, field), response.content.decode()
    assert not Endpoint.objects.exists()


def test_a_malformed_model_definition_is_shown_beside_the_definition_path(client, owner, model_folder):
    folder = model_folder(owner, definition="models:\n  - name: echo\n    service: {port: 99999}\n")
    client.force_login(owner)
    response = client.post(CREATE, form_data(folder))
    assert response.status_code == 400
    assert "model definition" in field_error(response, "model_definition_path")
    assert not Endpoint.objects.exists()


def test_someone_elses_model_folder_cannot_be_served(client, owner, member, model_folder):
    theirs = model_folder(member, "their-model")
    client.force_login(owner)
    response = client.post(CREATE, form_data(theirs))
    assert response.status_code == 400
    assert "Pick one of your model folders" in field_error(response, "model")
    assert not Endpoint.objects.exists()


def test_a_taken_name_is_refused_beside_the_name(client, owner, endpoint, model_folder):
    folder = model_folder(owner, "second-model")
    client.force_login(owner)
    response = client.post(CREATE, form_data(folder, name=endpoint.name))
    assert response.status_code == 400
    assert "already exists" in field_error(response, "name")
    assert Endpoint.objects.count() == 1


# --- the endpoint page and its fragment -----------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_the_endpoint_page_and_its_live_fragment_are_for_those_who_may_see_it(client, people, endpoint, role):
    route = add_route(endpoint, "healthy")
    client.force_login(people[role])
    page = client.get(url("detail", endpoint))
    live = client.get(url("live", endpoint), **FRAGMENT)
    if role not in MANAGERS:
        assert page.status_code == 404 and live.status_code == 404
        assert "echo-svc" not in page.content.decode()
        return
    assert page.status_code == 200 and live.status_code == 200
    assert live["X-Live-Fragment"] == "1" and live["Cache-Control"] == "no-store"
    text = page.content.decode()
    assert 'id="endpoint-name">echo-svc<' in text and f'data-route="{route.pk}"' in text
    assert "1/2 healthy" in live.content.decode() and f'data-route="{route.pk}"' in live.content.decode()
    for section in ("scale-form", "token-form", "rule-form", "destroy-endpoint", "event-log", "traffic"):
        assert f'id="{section}"' in text, section
    assert endpoint.token_secret not in text


def test_the_page_shows_the_event_log_with_its_scaling_decisions(client, owner, endpoint):
    endpoint_services.scale(owner, endpoint, 3)
    client.force_login(owner)
    live = client.get(url("live", endpoint), **FRAGMENT).content.decode()
    log = re.search(r'<ol class="event-log" id="event-log">(.*?)</ol>', live, re.S).group(1)
    assert "Scaled by owner@example.com to 3 replica(s)" in log and 'data-kind="scale"' in log
    assert "Service created with 2 replica(s)" in log


def test_the_traffic_card_shows_zeros_before_any_request(client, owner, endpoint):
    client.force_login(owner)
    page = client.get(url("detail", endpoint)).content.decode()
    assert 'id="traffic-numbers"' in page  # the in-process coordinator answers zeros before any request
    assert "0.00 req/s" in page and "p50 —" in page


def test_a_destroyed_endpoint_s_fragment_stops_the_polling(client, owner, endpoint):
    Endpoint.objects.filter(pk=endpoint.pk).update(lifecycle_stage=LifecycleStage.DESTROYED)
    client.force_login(owner)
    live = client.get(url("live", endpoint), HTTP_HX_REQUEST="true")
    assert live.status_code == 286 and "data-live-final" in live.content.decode()
    page = client.get(url("detail", endpoint)).content.decode()
    assert 'id="scale-form"' not in page and "data-live-url" not in page


# --- changes -----------------------------------------------------------------------------------------

def _changes(endpoint, route, rule):
    return [
        ("scale", url("scale", endpoint), {"replicas": "4"}),
        ("ratio", url("traffic-ratio", endpoint, route_id=route.pk), {f"route-{route.pk}-traffic_ratio": "0.25"}),
        ("token", url("token", endpoint), {"duration": "3600"}),
        ("clear", url("clear-errors", endpoint), {}),
        ("revoke", url("revoke-tokens", endpoint), {}),
        ("rule", url("rule-create", endpoint), {"metric_source": "proxy", "metric_name": "request_rate",
                                                 "comparator": "gt", "threshold": "5", "step_size": "1",
                                                 "cooldown_seconds": "60", "window_seconds": "30",
                                                 "min_replicas": "1", "max_replicas": "4"}),
        ("rule-delete", url("rule-delete", endpoint, rule_id=rule.pk), {}),
        ("destroy", url("destroy", endpoint), {}),
    ]


@pytest.mark.parametrize("role", sorted(set(ROLES) - MANAGERS))
def test_nobody_else_changes_an_endpoint_and_nothing_changes(client, people, endpoint, role):
    route = add_route(endpoint, "healthy")
    from serving.services import autoscale

    owner = people["owner"]
    rule = autoscale.create_rule(owner, str(endpoint.pk), {"metric_source": "proxy", "metric_name": "inflight",
                                                           "comparator": "gt", "threshold": 3, "step_size": 1})
    before = state(endpoint)
    client.force_login(people[role])
    for what, target, data in _changes(endpoint, route, rule):
        response = client.post(target, data)
        assert response.status_code == 404, what
        assert state(endpoint) == before, what


@pytest.mark.parametrize("role", sorted(MANAGERS))
def test_those_who_may_manage_an_endpoint_scale_it_and_set_a_route_s_ratio(client, people, endpoint, role):
    route = add_route(endpoint, "healthy")
    client.force_login(people[role])
    response = client.post(url("scale", endpoint), {"replicas": "4"})
    assert response.status_code == 302 and response["Location"] == url("detail", endpoint)
    assert Endpoint.objects.get(pk=endpoint.pk).replicas == 4
    ratio = client.post(url("traffic-ratio", endpoint, route_id=route.pk), {f"route-{route.pk}-traffic_ratio": "0.25"})
    assert ratio.status_code == 302
    assert Routing.objects.get(pk=route.pk).traffic_ratio == 0.25
    page = client.get(url("detail", endpoint)).content.decode()
    assert "4 replicas asked for" in page and "traffic ratio is now 0.25" in page


@pytest.mark.parametrize("replicas, words", [("65", "less than or equal to 64"), ("x", "Enter a whole number"),
                                             ("", "required")])
def test_a_refused_replica_count_comes_back_beside_the_field(client, owner, endpoint, replicas, words):
    before = state(endpoint)
    client.force_login(owner)
    response = client.post(url("scale", endpoint), {"replicas": replicas})
    assert response.status_code == 400
    assert words in field_error(response, "replicas")
    assert state(endpoint) == before


def test_a_refused_traffic_ratio_changes_nothing(client, owner, endpoint):
    route = add_route(endpoint, "healthy")
    before = state(endpoint)
    client.force_login(owner)
    for value in ("101", "-1", "nan", "lots"):
        response = client.post(url("traffic-ratio", endpoint, route_id=route.pk),
                               {f"route-{route.pk}-traffic_ratio": value}, follow=True)
        assert "Traffic ratio:" in response.content.decode(), value
        assert state(endpoint) == before, value
    terminating = add_route(endpoint, "terminating")
    before = state(endpoint)
    response = client.post(url("traffic-ratio", endpoint, route_id=terminating.pk),
                           {f"route-{terminating.pk}-traffic_ratio": "2"}, follow=True)
    assert "Could not change the traffic ratio" in response.content.decode()
    assert state(endpoint) == before


def test_a_token_is_shown_once_with_its_expiry(client, owner, endpoint):
    client.force_login(owner)
    response = client.post(url("token", endpoint), {"duration": "3600"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    page = response.content.decode()
    token = re.search(r'id="token-value"', page) and re.search(r'value="([^"]+)" id="token-value"', page).group(1)
    issued = EndpointToken.objects.get(endpoint=endpoint)
    assert token.endswith(issued.hint) and endpoint_services.token_digest(token) == issued.digest
    assert issued.expires_at.strftime("%Y-%m-%d %H:%M") in re.search(r'id="token-expiry">([^<]+)<', page).group(1)
    again = client.get(url("detail", endpoint)).content.decode()
    assert token not in again and f"…{issued.hint}" in again  # afterwards only its last characters


def test_revoke_all_tokens_leaves_none_and_a_new_secret(client, owner, endpoint):
    client.force_login(owner)
    client.post(url("token", endpoint), {"duration": "3600"})
    secret = Endpoint.objects.get(pk=endpoint.pk).token_secret
    page = client.get(url("detail", endpoint)).content.decode()
    assert 'id="revoke-tokens"' in page and "data-confirm" in page
    response = client.post(url("revoke-tokens", endpoint), follow=True)
    assert response.status_code == 200 and "are revoked (1 listed)" in response.content.decode()
    assert not EndpointToken.objects.filter(endpoint=endpoint).exists()
    assert Endpoint.objects.get(pk=endpoint.pk).token_secret != secret
    assert client.get(url("revoke-tokens", endpoint)).status_code == 405


def test_an_unknown_token_duration_is_refused_beside_the_field(client, owner, endpoint):
    before = state(endpoint)
    client.force_login(owner)
    response = client.post(url("token", endpoint), {"duration": "999999999"})
    assert response.status_code == 400 and "Select a valid choice" in field_error(response, "duration")
    assert state(endpoint) == before


def test_errors_are_listed_and_cleared(client, owner, endpoint):
    failed = add_route(endpoint, "failed_to_start")
    Routing.objects.filter(pk=failed.pk).update(
        error_data={"type": "failed-to-start", "message": "image pull failed: no such image"})
    Endpoint.objects.filter(pk=endpoint.pk).update(retries=3)
    client.force_login(owner)
    live = client.get(url("live", endpoint), **FRAGMENT).content.decode()
    errors = re.search(r'<ul class="error-list" id="error-list">(.*?)</ul>', live, re.S).group(1)
    assert "failed-to-start" in errors and "image pull failed: no such image" in errors
    assert "Failed starts in a row: 3" in live
    response = client.post(url("clear-errors", endpoint), follow=True)
    assert "Errors cleared" in response.content.decode() and 'id="no-errors"' in response.content.decode()
    assert not Routing.objects.filter(pk=failed.pk).exists() and Endpoint.objects.get(pk=endpoint.pk).retries == 0


def test_autoscaling_rules_are_added_listed_and_deleted(client, owner, endpoint):
    client.force_login(owner)
    response = client.post(url("rule-create", endpoint), {
        "metric_source": "proxy", "metric_name": "request_rate", "comparator": "gt", "threshold": "5",
        "step_size": "2", "cooldown_seconds": "60", "window_seconds": "30", "min_replicas": "1", "max_replicas": "6"})
    assert response.status_code == 302
    rule = AutoScalingRule.objects.get(endpoint=endpoint)
    assert (rule.metric_name, rule.comparator, rule.threshold, rule.step_size, rule.max_replicas) == (
        "request_rate", "gt", 5.0, 2, 6)
    page = client.get(url("detail", endpoint)).content.decode()
    assert f'data-rule="{rule.pk}"' in page and "<code>request_rate</code> &gt; 5.0" in page
    deleted = client.post(url("rule-delete", endpoint, rule_id=rule.pk))
    assert deleted.status_code == 302 and not AutoScalingRule.objects.exists()


@pytest.mark.parametrize("overrides, field, words", [
    ({"step_size": "0"}, "step_size", "changes nothing"),
    ({"min_replicas": "5", "max_replicas": "2"}, "max_replicas", "below the minimum"),
    ({"metric_source": "kernel", "metric_name": "request_rate"}, "metric_name", "not a metric"),
    ({"threshold": "abc"}, "threshold", "Enter a number"),
    ({"cooldown_seconds": "999999"}, "cooldown_seconds", "less than or equal to 86400"),
])
def test_a_refused_rule_comes_back_beside_its_field_and_adds_nothing(client, owner, endpoint, overrides, field, words):
    data = {"metric_source": "proxy", "metric_name": "request_rate", "comparator": "gt", "threshold": "5",
            "step_size": "1", "cooldown_seconds": "60", "window_seconds": "30", "min_replicas": "", "max_replicas": ""}
    data.update(overrides)
    before = state(endpoint)
    client.force_login(owner)
    response = client.post(url("rule-create", endpoint), data)
    assert response.status_code == 400
    assert words in field_error(response, field), response.content.decode()
    assert 'id="rule-box" open' in response.content.decode()
    assert state(endpoint) == before


def test_destroy_asks_in_place_and_sends_the_owner_back_to_the_list(client, owner, endpoint):
    client.force_login(owner)
    page = client.get(url("detail", endpoint)).content.decode()
    assert 'id="confirm-destroy"' in page and "<details" in page
    response = client.post(url("destroy", endpoint), follow=True)
    assert response.redirect_chain[-1][0] == LIST
    assert "Endpoint echo-svc is being destroyed" in response.content.decode()
    assert Endpoint.objects.get(pk=endpoint.pk).lifecycle_stage == LifecycleStage.DESTROYING


def test_pages_answer_only_their_methods(client, owner, endpoint):
    client.force_login(owner)
    assert client.get(url("scale", endpoint)).status_code == 405
    assert client.get(url("destroy", endpoint)).status_code == 405
    assert client.post(url("live", endpoint)).status_code == 405
    assert client.get(reverse("ui-serving:detail", kwargs={"endpoint_id": "00000000-0000-0000-0000-000000000000"})
                      ).status_code == 404
