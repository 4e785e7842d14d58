"""``/services`` (Backend.AI's model serving REST API) as the official clients 23.9.10 and 24.9.14
call it: every path with its answer's shape, hostile input (non-UUID ids, wrong types, huge
strings, replicas and ratios out of range, bad token durations) answered with a 4xx
problem+json that changes nothing, and every path under the permission matrix."""
from __future__ import annotations

import time
import uuid

import pytest

from helpers import problem, slug
from permission_matrix import ROLES, Case, World, check, params
from serving_api_support import create_body, create_service, reconcile_once, serve_with_two_routes, service_state

pytestmark = pytest.mark.django_db

OWNER_AND_SUPERADMIN = {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}


@pytest.fixture
def served(owner, signed, cluster, model):
    """The owner's service with two replicas: routes made by the reconciler, the first one healthy."""
    endpoint_id, routes = serve_with_two_routes(signed(owner), model.pk)
    return {"id": endpoint_id, "routes": [str(r.pk) for r in routes],
            "sessions": [str(r.session_id) for r in routes]}


def endpoint_count() -> int:
    from serving.models import Endpoint

    return Endpoint.objects.count()


# --- the official client's calls and Backend.AI's answers ------------------------------------------

def test_the_23_09_client_create_body_makes_a_service_and_answers_its_id(owner, signed, cluster, model):
    from serving.models import Endpoint

    response = signed(owner).post("/services", create_body(model.name, replicas=2))
    assert response.status_code == 200, response.content
    body = response.json()
    endpoint = Endpoint.objects.get(pk=body["endpoint_id"])
    assert (endpoint.name, endpoint.replicas, endpoint.model_id, endpoint.session_owner_id) == (
        "svc-one", 2, model.pk, owner.pk)
    assert endpoint.environ == {"A": "1"}
    assert body == {"endpoint_id": str(endpoint.pk), "model_id": str(model.pk), "extra_mounts": [],
                    "name": "svc-one", "replicas": 2, "desired_session_count": 2, "active_routes": [],
                    "service_endpoint": None, "is_public": False, "runtime_variant": "custom",
                    "lifecycle_stage": "created"}


def test_the_24_09_client_body_with_extra_mounts_and_a_definition_path_is_taken(owner, signed, cluster, make_model,
                                                                              host):
    from vfolders import services as folder_services

    folder = make_model(owner, name="withpath", path="conf/serve.yaml")
    data = folder_services.create_folder(owner, name="extras")
    body = create_body(str(folder.pk), name="svc-24", replicas=1, runtime_variant="custom",
                       **{"config.model_definition_path": "conf/serve.yaml",
                          "config.extra_mounts": {str(data.pk): {"mount_destination": "/data", "type": None}}})
    response = signed(owner).post("/services", body)
    assert response.status_code == 200, response.content
    assert response.json()["extra_mounts"] == [str(data.pk)]


def test_the_service_list_answers_the_callers_services_by_name(owner, signed, served):
    api = signed(owner)
    listed = api.get("/services").json()
    assert listed == [{"id": served["id"], "name": "svc-one", "replicas": 2, "desired_session_count": 2,
                       "active_route_count": 1, "service_endpoint": None, "is_public": False,
                       "runtime_variant": "custom", "lifecycle_stage": "created"}]
    assert [s["id"] for s in api.get("/services?name=svc-one").json()] == [served["id"]]
    assert api.get("/services?name=other").json() == []


def test_service_info_shows_only_healthy_routes_as_active(owner, signed, served):
    info = signed(owner).get(f"/services/{served['id']}").json()
    assert info["endpoint_id"] == served["id"]
    assert info["active_routes"] == [{"route_id": served["routes"][0], "session_id": served["sessions"][0],
                                      "traffic_ratio": 1.0}]
    hexed = signed(owner).get(f"/services/{uuid.UUID(served['id']).hex}")
    assert hexed.status_code == 200 and hexed.json()["endpoint_id"] == served["id"]


def test_scale_answers_the_current_and_target_route_counts(owner, signed, served):
    from serving.models import Endpoint, EndpointEvent

    response = signed(owner).post(f"/services/{served['id']}/scale", {"to": 5})
    assert response.status_code == 200, response.content
    assert response.json() == {"current_route_count": 2, "target_count": 5}
    assert Endpoint.objects.get(pk=served["id"]).replicas == 5
    assert EndpointEvent.objects.filter(endpoint_id=served["id"], kind="scale").exists()


@pytest.mark.parametrize("value", [-1, 65, 10**20, True, "3", 2.5, None, [1], {"n": 1}, "x" * 5000])
def test_scale_refuses_replicas_out_of_range_or_of_a_wrong_type_and_changes_nothing(owner, signed, served, value):
    before = service_state(served["id"])
    response = signed(owner).post(f"/services/{served['id']}/scale", {"to": value})
    assert response.status_code == 400, response.content
    assert slug(response) == "invalid-api-params"
    assert service_state(served["id"]) == before


def test_a_traffic_ratio_change_answers_the_route(owner, signed, served):
    from serving.models import Routing

    route = served["routes"][1]
    response = signed(owner).request("PUT", f"/services/{served['id']}/routings/{route}", {"traffic_ratio": 2.5})
    assert response.status_code == 200, response.content
    assert response.json() == {"success": True, "route_id": route, "session_id": served["sessions"][1],
                               "traffic_ratio": 2.5}
    assert Routing.objects.get(pk=route).traffic_ratio == 2.5


@pytest.mark.parametrize("value", [-0.1, 100.5, 1e308, "nan", "1", True, None, [], "x" * 3000])
def test_a_traffic_ratio_out_of_range_or_not_a_number_is_refused(owner, signed, served, value):
    before = service_state(served["id"])
    route = served["routes"][0]
    response = signed(owner).request("PUT", f"/services/{served['id']}/routings/{route}", {"traffic_ratio": value})
    assert response.status_code == 400, response.content
    assert slug(response) == "invalid-api-params"
    assert service_state(served["id"]) == before


def test_removing_a_route_drains_it_and_takes_one_replica_away(owner, signed, served):
    from serving.models import Endpoint, Routing

    route = served["routes"][0]
    response = signed(owner).delete(f"/services/{served['id']}/routings/{route}")
    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}
    assert Routing.objects.get(pk=route).status == "terminating"
    assert Endpoint.objects.get(pk=served["id"]).replicas == 1


def test_a_route_of_another_service_is_not_found(owner, signed, served, model):
    other = create_service(signed(owner), str(model.pk), name="svc-two", replicas=0)
    before = service_state(served["id"])
    route = served["routes"][0]
    response = signed(owner).delete(f"/services/{other['endpoint_id']}/routings/{route}")
    assert response.status_code == 404 and slug(response) == "object-not-found"
    missing = signed(owner).request("PUT", f"/services/{served['id']}/routings/{uuid.uuid4()}", {"traffic_ratio": 1})
    assert missing.status_code == 404
    assert service_state(served["id"]) == before


def test_a_token_is_answered_once_and_only_its_digest_is_kept(owner, signed, served):
    from serving.models import EndpointToken

    response = signed(owner).post(f"/services/{served['id']}/token", {"duration": "2h"})
    assert response.status_code == 200, response.content
    token = response.json()["token"]
    assert list(response.json()) == ["token"] and len(token) > 20
    row = EndpointToken.objects.get(endpoint_id=served["id"])
    assert token not in (row.digest, row.hint) and token.endswith(row.hint)
    assert 7000 < (row.expires_at - row.created_at).total_seconds() <= 7200 + 1
    by_time = signed(owner).post(f"/services/{served['id']}/token", {"valid_until": int(time.time()) + 3600})
    assert by_time.status_code == 200 and by_time.json()["token"] != token


def test_revoking_the_tokens_makes_every_issued_one_invalid_and_pushes_the_new_secret(owner, signed, served):
    from django.utils import timezone

    from appproxy import tokens
    from appproxy.models import Circuit, Worker
    from serving.models import Endpoint, EndpointEvent, EndpointToken

    Worker.objects.create(authority="w1", frontend_mode="port", advertised_host="127.0.0.1",
                          api_endpoint="http://w1:6130", secret="s" * 40, protocols=["http", "tcp"],
                          port_range_start=40000, port_range_end=40009, last_heartbeat=timezone.now())
    reconcile_once()  # the endpoint's circuit, with the secret the tokens are signed with
    assert Circuit.objects.get(endpoint_id=served["id"]).token_secret == \
        Endpoint.objects.get(pk=served["id"]).token_secret
    api = signed(owner)
    issued = [api.post(f"/services/{served['id']}/token", {"duration": "1h"}).json()["token"] for _ in range(2)]
    old_secret = Endpoint.objects.get(pk=served["id"]).token_secret
    assert tokens.verify(old_secret, "endpoint", issued[0]).circuit == served["id"]

    response = api.delete(f"/services/{served['id']}/token")
    assert response.status_code == 200, response.content
    assert response.json() == {"success": True, "revoked": 2}
    endpoint = Endpoint.objects.get(pk=served["id"])
    assert endpoint.token_secret != old_secret and not EndpointToken.objects.filter(endpoint=endpoint).exists()
    for token in issued:
        with pytest.raises(tokens.TokenError):
            tokens.verify(endpoint.token_secret, "endpoint", token)
    assert EndpointEvent.objects.filter(endpoint=endpoint, message__contains="revoked").exists()
    reconcile_once()  # the next pass pushes the new secret to the endpoint's circuit
    assert Circuit.objects.get(endpoint_id=endpoint.pk).token_secret == endpoint.token_secret
    fresh = api.post(f"/services/{served['id']}/token", {"duration": "1h"}).json()["token"]
    assert tokens.verify(endpoint.token_secret, "endpoint", fresh).circuit == served["id"]


@pytest.mark.parametrize("body", [
    {"duration": "abc"}, {"duration": "0s"}, {"duration": "-1h"}, {"duration": "30s"}, {"duration": "400d"},
    {"duration": 10**12}, {"duration": True}, {"duration": ["1h"]}, {"duration": "9" * 4000},
    {"valid_until": 1}, {"valid_until": 2**62}, {"valid_until": "tomorrow"}, {}, {"duration": None},
])
def test_a_token_with_a_bad_duration_is_refused_and_none_is_issued(owner, signed, served, body):
    response = signed(owner).post(f"/services/{served['id']}/token", body)
    assert response.status_code == 400, response.content
    assert slug(response) == "invalid-api-params"
    assert service_state(served["id"])[2] == 0


def test_errors_list_the_routes_that_failed_to_start_and_clear_forgets_them(owner, signed, served):
    from serving.models import Endpoint, Routing

    failed = served["routes"][1]
    # what the reconciler records when a replica's session dies before its first health check passes
    Routing.objects.filter(pk=failed).update(status="failed_to_start", error_data={
        "errors": [{"src": "agent", "name": "ImagePullError", "repr": "no such image"}]})
    Endpoint.objects.filter(pk=served["id"]).update(retries=2)
    answer = signed(owner).get(f"/services/{served['id']}/errors")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["retries"] == 2
    assert [(e["session_id"], e["error"]) for e in body["errors"]] == [
        (served["sessions"][1], {"errors": [{"src": "agent", "name": "ImagePullError", "repr": "no such image"}]})]
    cleared = signed(owner).post(f"/services/{served['id']}/errors/clear")
    assert cleared.status_code == 204, cleared.content
    assert not Routing.objects.filter(pk=failed).exists()
    assert signed(owner).get(f"/services/{served['id']}/errors").json() == {"errors": [], "retries": 0}


def test_runtimes_are_listed_with_their_readable_names(owner, signed, defaults):
    response = signed(owner).get("/services/_/runtimes")
    assert response.status_code == 200
    runtimes = {r["name"]: r["human_readable_name"] for r in response.json()["runtimes"]}
    assert {"custom", "vllm", "huggingface-tgi", "nim", "cmd"} <= set(runtimes)


def test_try_checks_the_request_and_answers_a_background_task(owner, signed, cluster, model):
    from backendai.models import BackgroundTask

    response = signed(owner).post("/services/_/try", create_body(str(model.pk), name="svc-try", replicas=1))
    assert response.status_code == 200, response.content
    task = BackgroundTask.objects.get(pk=response.json()["task_id"])
    assert (task.func_path, task.owner_id) == ("serving.services.endpoints.try_task", str(owner.pk))
    assert endpoint_count() == 0


def test_try_with_a_bad_request_starts_no_task(owner, signed, cluster, model):
    from backendai.models import BackgroundTask

    response = signed(owner).post("/services/_/try", create_body(str(model.pk), runtime_variant="nope"))
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
    assert BackgroundTask.objects.count() == 0


def test_deleting_a_service_starts_its_destruction(owner, signed, served):
    from serving.models import Endpoint

    response = signed(owner).delete(f"/services/{served['id']}")
    assert response.status_code == 200 and response.json() == {"success": True}
    assert Endpoint.objects.get(pk=served["id"]).lifecycle_stage == "destroying"
    scaled = signed(owner).post(f"/services/{served['id']}/scale", {"to": 3})
    assert scaled.status_code == 400


def test_sync_runs_a_pass_now_and_answers_success(owner, signed, served):
    from serving.models import Endpoint, EndpointEvent

    response = signed(owner).post(f"/services/{served['id']}/sync")
    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}
    assert EndpointEvent.objects.filter(endpoint_id=served["id"], message__startswith="Sync requested").exists()
    # the pass pushed the route table again; with no app-proxy worker the push fails, and says so
    assert Endpoint.objects.get(pk=served["id"]).last_error.startswith("app proxy: ")


# --- hostile input ------------------------------------------------------------------------------

BAD_IDS = ["not-a-uuid", "x" * 2000, "..%2f..%2fetc", "%00", "123", "00000000-0000-0000-0000-00000000000g"]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("method, suffix, body", [
    ("GET", "", None), ("DELETE", "", None), ("POST", "/scale", {"to": 1}), ("POST", "/sync", None),
    ("POST", "/token", {"duration": "1h"}), ("DELETE", "/token", None), ("GET", "/errors", None),
    ("POST", "/errors/clear", None),
])
def test_a_service_id_that_is_not_a_uuid_is_refused(owner, signed, served, bad, method, suffix, body):
    before = service_state(served["id"])
    response = signed(owner).request(method, f"/services/{bad}{suffix}", body)
    assert 400 <= response.status_code < 500, response.content
    problem(response)
    assert service_state(served["id"]) == before


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_route_id_that_is_not_a_uuid_is_refused(owner, signed, served, bad):
    before = service_state(served["id"])
    for method, body in (("PUT", {"traffic_ratio": 1}), ("DELETE", None)):
        response = signed(owner).request(method, f"/services/{served['id']}/routings/{bad}", body)
        assert 400 <= response.status_code < 500, response.content
        problem(response)
    assert service_state(served["id"]) == before


@pytest.mark.parametrize("override", [
    {"name": "x" * 5000}, {"name": 12}, {"name": ""}, {"name": "bad name!"}, {"name": None},
    {"desired_session_count": -1}, {"desired_session_count": 65}, {"desired_session_count": 10**30},
    {"desired_session_count": "two"}, {"desired_session_count": True}, {"desired_session_count": None},
    {"image": None}, {"image": ["a"]}, {"image": "y" * 5000}, {"image": "no/such:image"},
    {"cluster_size": 0}, {"cluster_size": 10**9}, {"cluster_mode": "swarm"}, {"open_to_public": {"a": 1}},
    {"owner_access_key": "AKIA" + "X" * 100}, {"group": "g" * 500}, {"runtime_variant": "nope"},
    {"config": None}, {"config": []}, {"config.model": None}, {"config.model": "m" * 1000},
    {"config.model": "someone-elses"}, {"config.environ": {"A": 1}}, {"config.environ": ["A=1"]},
    {"config.resources": {"cpu": "-1"}}, {"config.resources": "cpu=1"}, {"config.resources": {"cpu": "1e999"}},
    {"config.model_mount_destination": "relative"}, {"config.model_mount_destination": "/" + "d" * 1000},
    {"config.model_definition_path": "../../etc/passwd"}, {"config.extra_mounts": "folder"},
    {"config.extra_mounts": {"not-a-uuid": {}}}, {"callback_url": "ftp://x" + "y" * 3000},
    {"startup_command": 7}, {"bootstrap_script": "b" * (300 * 1024)}, {"tag": "t" * 100},
])
def test_a_bad_create_request_is_refused_and_creates_nothing(owner, signed, cluster, model, override):
    from backendai.models import BackgroundTask

    body = create_body(str(model.pk), **override)
    for path in ("/services", "/services/_/try"):
        response = signed(owner).post(path, body)
        assert 400 <= response.status_code < 500, (path, response.content)
        problem(response)
    assert endpoint_count() == 0 and BackgroundTask.objects.count() == 0


@pytest.mark.parametrize("raw", ["[]", '"x"', "null", "1e999", "{", "[" * 5000])
def test_a_create_body_that_is_not_an_object_is_refused(owner, signed, cluster, raw):
    response = signed(owner).request("POST", "/services", raw)
    assert response.status_code == 400, response.content
    problem(response)
    assert endpoint_count() == 0


def test_a_model_folder_without_a_definition_is_refused_with_a_clear_message(owner, signed, cluster, make_model):
    folder = make_model(owner, name="empty", definition=None)
    response = signed(owner).post("/services", create_body(str(folder.pk)))
    assert response.status_code == 400
    assert "model-definition.yaml" in problem(response)["msg"]
    assert endpoint_count() == 0


def test_a_second_service_with_the_same_name_is_refused(owner, signed, served, model):
    response = signed(owner).post("/services", create_body(str(model.pk)))
    assert response.status_code == 400 and "already exists" in problem(response)["msg"]
    assert endpoint_count() == 1


# --- the permission matrix ----------------------------------------------------------------------

@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, served, signed):
    from serving.models import Endpoint

    token = signed(owner).post(f"/services/{served['id']}/token", {"duration": "1d"}).json()["token"]
    endpoint = Endpoint.objects.get(pk=served["id"])
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users, objects={**served, "access_key": owner.main_keypair_id},
                 system_secrets=[token, endpoint.token_secret])


def sid(w):
    return w.objects["id"]


def rid(w):
    return w.objects["routes"][0]


def state(w):
    return service_state(sid(w))


def marker(w):
    return sid(w)


def on_behalf(api, w, role):
    return api.post("/services", create_body("mymodel", name="onbehalf", replicas=0,
                                             owner_access_key=w.objects["access_key"]))


REST = [
    Case("GET /services", lambda api, w, r: api.get("/services"), {role: 200 for role in ROLES}, marker=marker,
         sees=("owner",)),
    Case("GET /services?owner_access_key=owner's", lambda api, w, r: api.get(
        f"/services?owner_access_key={w.objects['access_key']}"),
         {"owner": 200, "member": 403, "outsider": 403, "foreign_admin": (403, 404), "superadmin": 200},
         marker=marker),
    Case("GET /services/_/runtimes", lambda api, w, r: api.get("/services/_/runtimes"), {role: 200 for role in ROLES}),
    Case("POST /services for the owner (owner_access_key)", on_behalf,
         {"owner": 200, "member": 403, "outsider": 403, "foreign_admin": (403, 404), "superadmin": 200}),
    Case("POST /services/_/try with the owner's model folder",
         lambda api, w, r: api.post("/services/_/try", create_body("mymodel", name="tried", replicas=1)),
         {"owner": 200, "member": 404, "outsider": (400, 404), "foreign_admin": (400, 404),
          "superadmin": (200, 404)}),
    Case("GET /services/{owner's}", lambda api, w, r: api.get(f"/services/{sid(w)}"), OWNER_AND_SUPERADMIN,
         marker=lambda w: "svc-one"),
    Case("POST /services/{owner's}/scale", lambda api, w, r: api.post(f"/services/{sid(w)}/scale", {"to": 3}),
         OWNER_AND_SUPERADMIN, unchanged=state),
    Case("POST /services/{owner's}/sync", lambda api, w, r: api.post(f"/services/{sid(w)}/sync"),
         OWNER_AND_SUPERADMIN, unchanged=state),
    Case("PUT /services/{owner's}/routings/{rid}", lambda api, w, r: api.request(
        "PUT", f"/services/{sid(w)}/routings/{rid(w)}", {"traffic_ratio": 3}), OWNER_AND_SUPERADMIN, unchanged=state),
    Case("DELETE /services/{owner's}/routings/{rid}", lambda api, w, r: api.delete(
        f"/services/{sid(w)}/routings/{rid(w)}"), OWNER_AND_SUPERADMIN, unchanged=state),
    Case("POST /services/{owner's}/token", lambda api, w, r: api.post(f"/services/{sid(w)}/token", {"duration": "1h"}),
         OWNER_AND_SUPERADMIN, unchanged=state),
    Case("DELETE /services/{owner's}/token", lambda api, w, r: api.delete(f"/services/{sid(w)}/token"),
         OWNER_AND_SUPERADMIN, unchanged=state),
    Case("GET /services/{owner's}/errors", lambda api, w, r: api.get(f"/services/{sid(w)}/errors"),
         OWNER_AND_SUPERADMIN),
    Case("POST /services/{owner's}/errors/clear", lambda api, w, r: api.post(f"/services/{sid(w)}/errors/clear"),
         {**OWNER_AND_SUPERADMIN, "owner": 204, "superadmin": 204}, unchanged=state),
    Case("DELETE /services/{owner's}", lambda api, w, r: api.delete(f"/services/{sid(w)}"), OWNER_AND_SUPERADMIN,
         unchanged=state),
]


@pytest.mark.parametrize("case, role", params(REST))
def test_services_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


def test_a_domain_admin_manages_the_services_of_their_domain(owner, domain_admin, signed, served):
    api = signed(domain_admin)
    assert api.get(f"/services/{served['id']}").status_code == 200
    assert api.post(f"/services/{served['id']}/scale", {"to": 1}).status_code == 200
    # the list is the caller's own services (Backend.AI's); an admin names the owner to see theirs
    assert api.get("/services").json() == []
    listed = api.get(f"/services?owner_access_key={owner.main_keypair_id}").json()
    assert [s["id"] for s in listed] == [served["id"]]
