"""The serving part of ``/admin/gql``: the documents the official clients send (``service list``
is ``endpoint_list``, ``service info`` / ``get-endpoint`` are ``endpoint``), every field of their
field sets, routes, token listings without token values, ``modify_endpoint`` through the
services, hostile arguments, and every root field under the permission matrix."""
from __future__ import annotations

import uuid

import pytest

from helpers import problem
from permission_matrix import ROLES, Case, World, check, gql_data, gql_post, params
from permission_matrix import gql_case as gql
from serving_api_support import create_service, serve_with_two_routes, service_state

pytestmark = pytest.mark.django_db

# client 23.9.10 / 24.9.14 ``Service.paginated_list`` (pagination.execute_paginated_query) with the default fields
LIST_DOC = """query($limit:Int!, $offset:Int!, $filter: String, $order: String) {
  endpoint_list(
      limit:$limit, offset:$offset, filter:$filter, order:$order) {
    items { endpoint_id name image desired_session_count routings { routing_id session status traffic_ratio } session_owner open_to_public }
    total_count
  }
}"""
# ``Service.detail`` with the CLI's ``_default_detail_fields`` (service info, get-endpoint)
INFO_DOC = """query($endpoint_id: UUID!) {
    endpoint(endpoint_id: $endpoint_id) {endpoint_id name image desired_session_count routings { routing_id session status traffic_ratio } session_owner url open_to_public}
}"""
# every field of ``service_fields`` in 23.9.10 (with its misspelt model_mount_destiation) and 24.9.14
ALL_FIELDS = ("endpoint_id image domain project resource_group resource_slots url model model_mount_destiation "
              "model_mount_destination created_user session_owner tag startup_command bootstrap_script callback_url "
              "environ name resource_opts desired_session_count cluster_mode cluster_size open_to_public "
              "routings { routing_id session status traffic_ratio }")
EXTRAS = ("replicas active_route_count lifecycle_stage status retries created_at destroyed_at "
          "runtime_variant { name human_readable_name } errors { session_id errors { src name repr } } "
          "created_user_email session_owner_email model_definition_path extra_mounts architecture")
ROUTING_DOC = ("query($id: UUID!) { routing(routing_id: $id) { routing_id endpoint endpoint_id session status "
               "traffic_ratio created_at error_data } }")
ROUTING_LIST_DOC = """query($limit:Int!, $offset:Int!, $endpoint_id: UUID) {
  routing_list(limit:$limit, offset:$offset, endpoint_id:$endpoint_id) {
    items { routing_id session status traffic_ratio } total_count } }"""
TOKENS_DOC = """query($limit:Int!, $offset:Int!, $endpoint_id: UUID) {
  endpoint_token_list(limit:$limit, offset:$offset, endpoint_id:$endpoint_id) {
    items { id endpoint_id hint created_at valid_until created_by_email } total_count } }"""
MODIFY_DOC = """mutation($id: UUID!, $props: ModifyEndpointInput!) {
  modify_endpoint(endpoint_id: $id, props: $props) { ok msg endpoint { endpoint_id replicas desired_session_count
    open_to_public } } }"""


@pytest.fixture
def served(owner, signed, cluster, model):
    endpoint_id, routes = serve_with_two_routes(signed(owner), model.pk)
    token = signed(owner).post(f"/services/{endpoint_id}/token", {"duration": "1d"}).json()["token"]
    return {"id": endpoint_id, "routes": [str(r.pk) for r in routes],
            "sessions": [str(r.session_id) for r in routes], "token": token}


def page(**extra):
    return {"limit": 20, "offset": 0, **extra}


def test_the_clients_service_list_query_answers_items_and_a_total(owner, signed, served):
    data = gql_data(gql_post(signed(owner), LIST_DOC, page(filter=None, order=None)))["endpoint_list"]
    assert data["total_count"] == 1
    item = data["items"][0]
    assert (item["endpoint_id"], item["name"], item["image"], item["desired_session_count"], item["session_owner"],
            item["open_to_public"]) == (served["id"], "svc-one", "bai-test/http:1.0", 2, str(owner.pk), False)
    assert sorted((r["routing_id"], r["session"], r["status"], r["traffic_ratio"]) for r in item["routings"]) == sorted(
        [(served["routes"][0], served["sessions"][0], "HEALTHY", 1.0),
         (served["routes"][1], served["sessions"][1], "PROVISIONING", 1.0)])


def test_the_clients_service_info_query_answers_the_endpoint(owner, signed, served):
    data = gql_data(gql_post(signed(owner), INFO_DOC, {"endpoint_id": served["id"]}))["endpoint"]
    assert data["endpoint_id"] == served["id"] and data["url"] is None and len(data["routings"]) == 2


def test_every_field_of_the_clients_field_sets_is_answered(owner, signed, served, model):
    doc = f"query($id: UUID!) {{ endpoint(endpoint_id: $id) {{ {ALL_FIELDS} {EXTRAS} }} }}"
    data = gql_data(gql_post(signed(owner), doc, {"id": served["id"]}))["endpoint"]
    assert data["model"] == str(model.pk)
    assert data["model_mount_destination"] == data["model_mount_destiation"] == "/models"
    assert data["environ"] == '{"A": "1"}' and data["resource_slots"] == '{"cpu": "1", "mem": "256m"}'
    assert (data["domain"], data["resource_group"], data["cluster_mode"], data["cluster_size"]) == (
        "default", "default", "single-node", 1)
    assert (data["replicas"], data["active_route_count"], data["lifecycle_stage"], data["status"]) == (
        2, 1, "CREATED", "HEALTHY")
    assert data["runtime_variant"] == {"name": "custom", "human_readable_name": "Custom (Default)"}
    assert data["created_user"] == data["session_owner"] == str(owner.pk)
    assert data["errors"] == [] and data["retries"] == 0


def test_the_status_follows_the_routes(owner, signed, served):
    from serving.models import Routing

    def status():
        doc = "query($id: UUID!) { endpoint(endpoint_id: $id) { status errors { session_id errors { name } } } }"
        return gql_data(gql_post(signed(owner), doc, {"id": served["id"]}))["endpoint"]

    Routing.objects.filter(pk=served["routes"][1]).update(status="unhealthy")
    assert status()["status"] == "DEGRADED"
    Routing.objects.filter(pk=served["routes"][0]).update(status="failed_to_start", error_data={
        "errors": [{"src": "agent", "name": "ImagePullError", "repr": "gone"}]})
    answer = status()
    assert answer["status"] == "UNHEALTHY"
    assert answer["errors"] == [{"session_id": served["sessions"][0], "errors": [{"name": "ImagePullError"}]}]


def test_the_list_filters_orders_and_pages(owner, signed, served, model):
    create_service(signed(owner), str(model.pk), name="svc-two", replicas=0)
    api = signed(owner)
    named = gql_data(gql_post(api, LIST_DOC, page(filter='name == "svc-two"', order=None)))["endpoint_list"]
    assert [i["name"] for i in named["items"]] == ["svc-two"] and named["total_count"] == 1
    ordered = gql_data(gql_post(api, LIST_DOC, page(filter=None, order="name")))["endpoint_list"]
    assert [i["name"] for i in ordered["items"]] == ["svc-one", "svc-two"]
    second = gql_data(gql_post(api, LIST_DOC, {"limit": 1, "offset": 1, "filter": None, "order": "-name"}))
    assert [i["name"] for i in second["endpoint_list"]["items"]] == ["svc-one"]
    assert second["endpoint_list"]["total_count"] == 2


@pytest.mark.parametrize("variables", [
    page(filter='secret_key == "x"', order=None), page(filter="name ~~ drop table", order=None),
    page(filter=None, order="token_secret"), {"limit": -1, "offset": 0}, {"limit": 20, "offset": -5},
    {"limit": 10**6, "offset": 0}, {"limit": "ten", "offset": 0}, page(filter="x" * 20000, order=None),
])
def test_bad_list_arguments_are_refused(owner, signed, served, variables):
    response = gql_post(signed(owner), LIST_DOC, variables)
    assert response.status_code == 400, response.content
    problem(response)


@pytest.mark.parametrize("bad", ["not-a-uuid", "x" * 5000, 7, None, ""])
def test_an_endpoint_id_that_is_not_a_uuid_is_refused(owner, signed, served, bad):
    response = gql_post(signed(owner), INFO_DOC, {"endpoint_id": bad})
    assert response.status_code == 400, response.content
    problem(response)


def test_an_unknown_endpoint_is_not_found(owner, signed, served):
    response = gql_post(signed(owner), INFO_DOC, {"endpoint_id": str(uuid.uuid4())})
    assert response.status_code == 404 and problem(response)["type"].endswith("object-not-found")


def test_routing_and_routing_list_answer_the_routes(owner, signed, served):
    api = signed(owner)
    route = gql_data(gql_post(api, ROUTING_DOC, {"id": served["routes"][0]}))["routing"]
    assert (route["routing_id"], route["endpoint_id"], route["session"], route["status"], route["traffic_ratio"]) == (
        served["routes"][0], served["id"], served["sessions"][0], "HEALTHY", 1.0)
    listed = gql_data(gql_post(api, ROUTING_LIST_DOC, page(endpoint_id=served["id"])))["routing_list"]
    assert listed["total_count"] == 2
    assert {r["routing_id"] for r in listed["items"]} == set(served["routes"])


def test_the_token_list_shows_no_token_value_nor_digest(owner, signed, served):
    from serving.models import EndpointToken

    response = gql_post(signed(owner), TOKENS_DOC, page(endpoint_id=served["id"]))
    data = gql_data(response)["endpoint_token_list"]
    row = EndpointToken.objects.get()
    assert data["total_count"] == 1
    item = data["items"][0]
    assert (item["id"], item["hint"], item["created_by_email"]) == (str(row.pk), row.hint, "owner@example.com")
    assert served["token"] not in response.content.decode() and row.digest not in response.content.decode()
    with pytest.raises(AssertionError):  # the type has no field holding the token
        gql_data(gql_post(signed(owner), TOKENS_DOC.replace("hint", "token"), page(endpoint_id=served["id"])))


def test_modify_endpoint_scales_through_the_service(owner, signed, served):
    from serving.models import Endpoint, EndpointEvent

    answer = gql_data(gql_post(signed(owner), MODIFY_DOC, {"id": served["id"], "props": {"replicas": 4}}))
    assert answer["modify_endpoint"]["ok"] is True
    assert answer["modify_endpoint"]["endpoint"]["replicas"] == 4
    assert Endpoint.objects.get(pk=served["id"]).replicas == 4
    assert EndpointEvent.objects.filter(endpoint_id=served["id"], kind="scale").exists()
    legacy = gql_data(gql_post(signed(owner), MODIFY_DOC, {"id": served["id"],
                                                          "props": {"desired_session_count": 1}}))
    assert legacy["modify_endpoint"]["endpoint"]["desired_session_count"] == 1


def test_modify_endpoint_opens_the_endpoint_to_the_public(owner, signed, served):
    from serving.models import Endpoint

    answer = gql_data(gql_post(signed(owner), MODIFY_DOC, {"id": served["id"], "props": {"open_to_public": True}}))
    assert answer["modify_endpoint"]["endpoint"]["open_to_public"] is True
    assert Endpoint.objects.get(pk=served["id"]).open_to_public is True


@pytest.mark.parametrize("props", [{"replicas": -1}, {"replicas": 65}, {"replicas": 2**40}, {"replicas": "3"},
                                   {"desired_session_count": -3}, {"open_to_public": "yes"}, {"unknown": 1}])
def test_modify_endpoint_refuses_bad_props_and_changes_nothing(owner, signed, served, props):
    before = service_state(served["id"])
    response = gql_post(signed(owner), MODIFY_DOC, {"id": served["id"], "props": props})
    assert response.status_code == 400, response.content
    problem(response)
    assert service_state(served["id"]) == before


# --- the permission matrix ----------------------------------------------------------------------

@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, served):
    from serving.models import Endpoint

    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    return World(users=users, objects=served,
                 system_secrets=[served["token"], Endpoint.objects.get(pk=served["id"]).token_secret])


def sid(w):
    return w.objects["id"]


def state(w):
    return service_state(sid(w))


OWNER_AND_SUPERADMIN = {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}
ALL_OK = {role: 200 for role in ROLES}

GRAPHQL = [
    Case("gql endpoint(owner's)", gql(INFO_DOC, lambda w: {"endpoint_id": sid(w)}), OWNER_AND_SUPERADMIN,
         marker=lambda w: "svc-one"),
    Case("gql endpoint_list", gql(LIST_DOC, lambda w: page(filter=None, order=None)), ALL_OK, marker=sid,
         sees=("owner", "superadmin")),
    Case("gql endpoint_list(domain_name: default)", gql(LIST_DOC.replace(
        "order:$order)", 'order:$order, domain_name: "default")'), lambda w: page(filter=None, order=None)), ALL_OK,
         marker=sid, sees=("owner", "superadmin")),
    Case("gql routing(owner's)", gql(ROUTING_DOC, lambda w: {"id": w.objects["routes"][0]}), OWNER_AND_SUPERADMIN,
         marker=lambda w: w.objects["sessions"][0]),
    Case("gql routing_list", gql(ROUTING_LIST_DOC, lambda w: page()), ALL_OK,
         marker=lambda w: w.objects["sessions"][0], sees=("owner", "superadmin")),
    Case("gql routing_list(endpoint_id: owner's)", gql(ROUTING_LIST_DOC, lambda w: page(endpoint_id=sid(w))),
         OWNER_AND_SUPERADMIN, marker=lambda w: w.objects["sessions"][0]),
    Case("gql endpoint_token_list(endpoint_id: owner's)", gql(TOKENS_DOC, lambda w: page(endpoint_id=sid(w))),
         OWNER_AND_SUPERADMIN, marker=lambda w: "owner@example.com"),
    Case("gql endpoint_token_list", gql(TOKENS_DOC, lambda w: page()), ALL_OK, marker=lambda w: "owner@example.com",
         sees=("owner", "superadmin")),
    Case("gql modify_endpoint(owner's)", gql(MODIFY_DOC, lambda w: {"id": sid(w), "props": {"replicas": 3}}),
         OWNER_AND_SUPERADMIN, unchanged=state),
]


@pytest.mark.parametrize("case, role", params(GRAPHQL))
def test_serving_graphql_fields_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)
