"""The session REST API and GraphQL documents, as the official client uses them."""
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Keypair, KeypairResourcePolicy
from agents.models import ScalingGroup
from helpers import client_body, slug
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db


body = client_body


def test_the_clients_create_body_enqueues_a_pending_session(signed, owner, cluster):
    response = signed(owner).post("/session", body())
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "PENDING" and data["created"] is True and data["sessionName"] == "mysess01"
    assert data["servicePorts"] == [{"name": "web", "protocol": "http", "ports": [8080]}]
    session = Session.objects.get(pk=data["sessionId"])
    kernel = session.kernels.get()
    assert session.requested_slots == {"cpu": "1", "mem": "1073741824"} and session.environ == {"FOO": "bar"}
    assert kernel.status == "PENDING" and kernel.cluster_hostname == "main1" and session.tag == "t1"
    assert session.resource_opts == {"shmem": str(64 * 2**20)}


def test_an_alias_and_missing_resources_fall_back_to_image_minimums(signed, owner, cluster):
    response = signed(owner).post("/session", body(image="http", **{"config.resources": {}}))
    assert response.status_code == 201, response.content
    session = Session.objects.get(pk=response.json()["sessionId"])
    assert session.image == "bai-test/http:1.0"
    assert session.requested_slots == {"cpu": "0.1", "mem": str(96 * 2**20)}  # 32m minimum + 64m shmem


def test_a_cluster_session_gets_one_kernel_per_node(signed, owner, cluster):
    response = signed(owner).post("/session", body(clusterSize=3, clusterMode="multi-node"))
    session = Session.objects.get(pk=response.json()["sessionId"])
    assert [k.cluster_hostname for k in session.kernels.order_by("local_rank")] == ["main1", "sub1", "sub2"]
    assert session.requested_slots == {"cpu": "3", "mem": str(3 * 2**30)}


def test_reuse_if_exists_returns_the_same_session(signed, owner, cluster):
    api = signed(owner)
    first = api.post("/session", body()).json()
    again = api.post("/session", body())
    assert again.status_code == 200 and again.json()["sessionId"] == first["sessionId"] and again.json()["created"] is False
    clash = api.post("/session", body(reuseIfExists=False))
    assert clash.status_code == 400 and slug(clash) == "session-already-exists"
    assert clash.json()["data"]["existingSessionId"] == first["sessionId"]


@pytest.mark.parametrize("overrides,expected_slug,status", [
    ({"image": "nope/nothing:1"}, "object-not-found", 404),
    ({"name": "x"}, "invalid-api-params", 400),
    ({"name": "bad name!"}, "invalid-api-params", 400),
    ({"name": "from-template"}, "invalid-api-params", 400),
    ({"config.scalingGroup": "forbidden"}, "invalid-api-params", 400),
    ({"config.resources": {"cpu": "1", "mem": "8g"}}, "invalid-api-params", 400),
    ({"config.resources": {"cpu": "1", "mem": "16m"}}, "invalid-api-params", 400),
    ({"config.resources": {"cpu": "1", "gpu.fancy": "1"}}, "invalid-api-params", 400),
    ({"config.resources": {"cpu": "lots"}}, "invalid-api-params", 400),
    ({"type": "batch"}, "invalid-api-params", 400),
    ({"type": "weird"}, "invalid-api-params", 400),
    ({"starts_at": "1h"}, "invalid-api-params", 400),
    ({"group": "nope"}, "object-not-found", 404),
    ({"dependencies": ["no-such-session"]}, "object-not-found", 404),
    ({"config.agent_list": ["node-1"]}, "insufficient-privilege", 403),
    ({"priority": 101}, "invalid-api-params", 400),
    ({"clusterSize": 0}, "invalid-api-params", 400),
    ({"config.preopen_ports": [80]}, "invalid-api-params", 400),
    ({"config.environ": {"A": 1}}, "invalid-api-params", 400),
])
def test_bad_input_gets_the_right_error_and_enqueues_nothing(signed, owner, cluster, overrides, expected_slug, status):
    ScalingGroup.objects.create(name="forbidden")
    response = signed(owner).post("/session", body(**overrides))
    assert response.status_code == status, response.content
    assert slug(response) == expected_slug
    assert not Session.objects.exists() and not Kernel.objects.exists()


def test_malformed_json_enqueues_nothing(signed, owner, cluster):
    response = signed(owner).request("POST", "/session", data="{oops", content_type="application/json")
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
    assert not Session.objects.exists()


def test_an_over_quota_request_is_refused(signed, owner, cluster):
    policy = KeypairResourcePolicy.objects.create(name="small", total_resource_slots={"cpu": "1", "mem": "2g"},
                                                  default_for_unspecified="LIMITED")
    Keypair.objects.filter(pk=owner.main_keypair_id).update(resource_policy=policy)
    response = signed(owner).post("/session", body(**{"config.resources": {"cpu": "2", "mem": "1g"}}))
    assert response.status_code == 412 and slug(response) == "quota-exceeded"
    assert "cpu" in response.json()["msg"] and not Session.objects.exists()


def test_the_pending_count_limit_is_enforced(signed, owner, cluster):
    KeypairResourcePolicy.objects.filter(name="default").update(max_pending_session_count=1)
    api = signed(owner)
    assert api.post("/session", body(name="first-one")).status_code == 201
    second = api.post("/session", body(name="second-one"))
    assert second.status_code == 412 and slug(second) == "quota-exceeded"


def test_a_disallowed_scaling_group_is_refused(signed, outsider, cluster):
    response = signed(outsider).post("/session", body(domain="other", group="default"))
    assert response.status_code in (400, 404)
    assert not Session.objects.exists()


def test_a_batch_session_takes_a_reserved_start_and_dependencies(signed, owner, cluster):
    api = signed(owner)
    first = api.post("/session", body(name="producer", type="batch", startupCommand="echo hi")).json()
    response = api.post("/session", body(name="consumer", type="batch", startupCommand="echo later",
                                         starts_at="30m", dependencies=["producer"], batch_timeout=60))
    assert response.status_code == 201, response.content
    session = Session.objects.get(pk=response.json()["sessionId"])
    assert session.starts_at > timezone.now() + timedelta(minutes=29) and session.batch_timeout == 60
    assert [str(d.depends_on_id) for d in session.dependency_links.all()] == [first["sessionId"]]


def test_get_info_answers_the_camel_case_dict(signed, owner, cluster):
    api = signed(owner)
    created = api.post("/session", body()).json()
    for ref in ("mysess01", created["sessionId"], created["sessionId"].replace("-", "")):
        info = api.get(f"/session/{ref}")
        assert info.status_code == 200, info.content
        data = info.json()
        assert data["status"] == "PENDING" and data["image"] == "bai-test/http:1.0"
        assert data["requestedSlots"] == {"cpu": "1", "mem": "1073741824"} and data["domainName"] == "default"
        assert isinstance(data["age"], int) and "idleChecks" in data


def test_other_users_sessions_are_not_found(signed, owner, member, cluster):
    created = signed(owner).post("/session", body()).json()
    for ref in ("mysess01", created["sessionId"]):
        response = signed(member).get(f"/session/{ref}")
        assert response.status_code == 404 and slug(response) == "object-not-found"
        assert signed(member).delete(f"/session/{ref}").status_code == 404
    assert Session.objects.get().status == "PENDING"


def test_an_admin_reaches_another_keypairs_session_with_owner_access_key(signed, owner, domain_admin, cluster):
    signed(owner).post("/session", body())
    response = signed(domain_admin).get(f"/session/mysess01?owner_access_key={owner.main_keypair_id}")
    assert response.status_code == 200
    refused = signed(owner).get(f"/session/mysess01?owner_access_key={domain_admin.main_keypair_id}")
    assert refused.status_code == 403


def test_destroying_a_pending_session_cancels_it(signed, owner, cluster):
    api = signed(owner)
    api.post("/session", body())
    response = api.delete("/session/mysess01")
    assert response.status_code == 200 and response.json() == {"stats": {}}
    session = Session.objects.get()
    assert session.status == "CANCELLED" and session.kernels.get().status == "CANCELLED"
    assert api.get("/session/mysess01").json()["status"] == "CANCELLED"


def test_destroy_recursive_also_ends_dependents(signed, owner, cluster):
    api = signed(owner)
    api.post("/session", body(name="producer", type="batch", startupCommand="true"))
    api.post("/session", body(name="consumer", type="batch", startupCommand="true", dependencies=["producer"]))
    response = api.delete("/session/producer?recursive=true")
    assert response.status_code == 200 and len(response.json()) == 2
    assert set(Session.objects.values_list("status", flat=True)) == {"CANCELLED"}


def test_rename_match_and_apps(signed, owner, cluster):
    api = signed(owner)
    created = api.post("/session", body()).json()
    assert api.post("/session/mysess01/rename?name=renamed01").status_code == 204
    assert api.get("/session/renamed01").json()["sessionId"] == created["sessionId"]
    matches = api.get("/session/_/match?id=ren").json()["matches"]
    assert matches == [{"id": created["sessionId"], "name": "renamed01", "status": "PENDING"}]
    assert api.get("/stream/session/renamed01/apps").json() == [{"name": "web", "protocol": "http", "ports": [8080]}]
    bad = api.post("/session/renamed01/rename?name=no")
    assert bad.status_code == 400


def test_restart_needs_a_running_session(signed, owner, cluster):
    api = signed(owner)
    api.post("/session", body())
    response = api.patch("/session/mysess01")
    assert response.status_code == 403 and slug(response) == "generic-forbidden"


def test_presets_check_presets_and_scaling_groups(signed, owner, cluster):
    from sessions.models import ResourcePreset

    ResourcePreset.objects.create(name="small", resource_slots={"cpu": "1", "mem": "1073741824"})
    ResourcePreset.objects.create(name="huge", resource_slots={"cpu": "64", "mem": "1073741824"})
    api = signed(owner)
    presets = api.get("/resource/presets").json()["presets"]
    assert {p["name"] for p in presets} == {"small", "huge"}
    checked = api.post("/resource/check-presets", {"group": "default"}).json()
    allocatable = {p["name"]: p["allocatable"] for p in checked["presets"]}
    assert allocatable == {"small": True, "huge": False}
    assert checked["scaling_groups"]["default"]["remaining"] == {"cpu": "4", "mem": "8589934592"}
    assert checked["keypair_limits"]["cpu"] == "Infinity"
    assert api.get("/scaling-groups").json() == {"scaling_groups": [{"name": "default"}]}


# --- GraphQL ----------------------------------------------------------------------------------------

PS_QUERY = """query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, $order: String) {
  compute_session_list(
      limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter, order:$order) {
    items { name access_key id group_name main_kernel_id image type status status_info status_changed result tag created_at occupying_slots }
    total_count
  }
}"""
INFO_QUERY = """query($id: UUID!) {  compute_session(id: $id) {    name id main_kernel_id image tag created_at terminated_at status status_info status_data occupying_slots idle_checks containers { id cluster_role cluster_idx cluster_hostname session_id image registry status status_info status_data status_changed agent container_id resource_opts occupied_slots preopen_ports live_stat last_stat id } dependencies { name id }  }}"""
AGENT_QUERY = """query($limit:Int!, $offset:Int!, $status: String, $scaling_group: String, $filter: String, $order: String) {
  agent_list(
      limit:$limit, offset:$offset, status:$status, scaling_group:$scaling_group, filter:$filter, order:$order) {
    items { id status architecture scaling_group region first_contact cpu_cur_pct mem_cur_bytes available_slots occupied_slots }
    total_count
  }
}"""


def gql(api, query, variables=None):
    response = api.post("/admin/gql", {"query": query, "variables": variables or {}})
    assert response.status_code == 200, response.content
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_gql_keypair_answers_the_callers_own_with_the_secret_masked(signed, owner, cluster):
    data = gql(signed(owner), "query {  keypair {    user_id access_key secret_key is_active is_admin  }}")
    assert data["keypair"] == {"user_id": owner.email, "access_key": owner.main_keypair_id,
                               "secret_key": "********", "is_active": True, "is_admin": False}


def test_gql_ps_pages_consistently_and_json_fields_are_strings(signed, owner, member, cluster):
    api = signed(owner)
    for i in range(5):
        api.post("/session", body(name=f"sess-{i:02d}"))
    signed(member).post("/session", body(name="not-mine"))
    seen, offset = [], 0
    while True:
        data = gql(api, PS_QUERY, {"status": "PENDING,RUNNING", "access_key": None, "filter": None, "order": None,
                                   "limit": 2, "offset": offset})["compute_session_list"]
        seen.extend(i["name"] for i in data["items"])
        offset += len(data["items"])
        if offset >= data["total_count"]:
            break
    assert sorted(seen) == [f"sess-{i:02d}" for i in range(5)]
    item = data["items"][0]
    assert item["type"] == "INTERACTIVE" and item["result"] == "UNDEFINED"
    assert json.loads(item["occupying_slots"]) == {}


def test_gql_compute_session_answers_the_info_document(signed, owner, cluster):
    api = signed(owner)
    created = api.post("/session", body()).json()
    data = gql(api, INFO_QUERY, {"id": created["sessionId"]})["compute_session"]
    assert data["name"] == "mysess01" and len(data["containers"]) == 1 and data["dependencies"] == []
    assert json.loads(data["containers"][0]["resource_opts"]) == {"shmem": str(64 * 2**20)}
    other = gql(signed(owner), INFO_QUERY, {"id": "00000000-0000-0000-0000-000000000000"})
    assert other["compute_session"] is None


def test_gql_agent_list_is_for_superadmins(signed, owner, superadmin, cluster):
    data = gql(signed(superadmin), AGENT_QUERY, {"status": "ALIVE", "scaling_group": None, "filter": None,
                                                 "order": None, "limit": 20, "offset": 0})["agent_list"]
    assert data["total_count"] == 1 and data["items"][0]["id"] == "node-1"
    assert json.loads(data["items"][0]["available_slots"]) == {"cpu": "4", "mem": "8589934592"}
    refused = signed(owner).post("/admin/gql", {"query": AGENT_QUERY, "variables": {"limit": 20, "offset": 0}})
    assert refused.status_code == 403


def test_gql_images_lists_what_admin_image_list_asks(signed, superadmin, cluster):
    data = gql(signed(superadmin), "query($is_operation: Boolean) {  images(is_operation: $is_operation) {    "
               "name registry architecture tag digest size_bytes aliases  }}", {"is_operation": False})
    assert data["images"] == [{"name": "bai-test/http", "registry": "local", "architecture": "x86_64", "tag": "1.0",
                               "digest": None, "size_bytes": 0.0, "aliases": ["http"]}]


def test_a_bad_gql_document_is_a_graphql_error(signed, owner, cluster):
    response = signed(owner).post("/admin/gql", {"query": "query { nothing_here }"})
    assert response.status_code == 400 and slug(response) == "graphql-error"
