"""GraphQL scaling groups with Backend.AI's names and shapes (the documents of the
official client 23.9.10): each query answers each role what it may see, each
mutation is the superadmin's (anyone else is refused and nothing changes), and
the change shows in the Django admin and the REST API."""
from __future__ import annotations

import json

import pytest

from agents_gql_support import (
    SG_ASSOC_DOMAIN,
    SG_ASSOC_GROUP,
    SG_ASSOC_KEYPAIR,
    SG_CREATE,
    SG_DELETE,
    SG_DISSOC_ALL_DOMAIN,
    SG_DISSOC_ALL_GROUP,
    SG_DISSOC_DOMAIN,
    SG_DISSOC_GROUP,
    SG_DISSOC_KEYPAIR,
    SG_FOR_DOMAIN,
    SG_FOR_GROUP,
    SG_FOR_KEYPAIR,
    SG_INFO,
    SG_LIST,
    SG_MODIFY,
    WSPROXY_TOKEN,
    create_input,
    data_of,
    groups_state,
)
from helpers import slug
from permission_matrix import ALL_OK, SUPERADMIN_ONLY, Case, check, params
from permission_matrix import gql_case as gql

pytestmark = pytest.mark.django_db


def project(world):
    return world.objects["project"]


def owner_key(world):
    return world.objects["access_key"]


QUERIES = [
    Case("scaling_groups: a keypair's group", gql(SG_LIST, {"is_active": None}), ALL_OK,
         marker=lambda w: "sg-kp", sees=("owner", "superadmin")),
    Case("scaling_groups: the other domain's group", gql(SG_LIST, {"is_active": None}), ALL_OK,
         marker=lambda w: "sg-other", sees=("outsider", "foreign_admin", "superadmin")),
    Case("scaling_groups: a non-public group", gql(SG_LIST, {"is_active": None}), ALL_OK,
         marker=lambda w: "sg-private", sees=("superadmin",)),
    Case("scaling_group(name: sg-kp)", gql(SG_INFO, {"name": "sg-kp"}), ALL_OK,
         marker=lambda w: "sg-kp", sees=("owner", "superadmin")),
    Case("scaling_group(name: sg-other)", gql(SG_INFO, {"name": "sg-other"}), ALL_OK,
         marker=lambda w: "sg-other", sees=("outsider", "foreign_admin", "superadmin")),
    Case("scaling_groups_for_domain(default)", gql(SG_FOR_DOMAIN, {"d": "default"}),
         {"owner": 200, "member": 200, "outsider": 403, "foreign_admin": 403, "superadmin": 200},
         marker=lambda w: "sg-private", sees=("superadmin",)),
    Case("scaling_groups_for_user_group(default project)", gql(SG_FOR_GROUP, lambda w: {"g": project(w)}),
         {"owner": 200, "member": 200, "outsider": 404, "foreign_admin": 404, "superadmin": 200}),
    Case("scaling_groups_for_keypair(owner's)", gql(SG_FOR_KEYPAIR, lambda w: {"k": owner_key(w)}),
         {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200},
         marker=lambda w: "sg-kp"),
]


@pytest.mark.parametrize("case, role", params(QUERIES))
def test_scaling_group_queries_answer_each_role_what_it_may_see(case, role, world, signed):
    check(case, role, world, signed)


def mutation(name, document, variables):
    return Case(name, gql(document, variables), SUPERADMIN_ONLY, unchanged=groups_state)


MUTATIONS = [
    mutation("create_scaling_group", SG_CREATE, {"name": "sg-new", "input": create_input(description="fresh")}),
    mutation("modify_scaling_group", SG_MODIFY, {"name": "sg-other", "input": {"description": "changed",
                                                                                "is_public": False}}),
    mutation("delete_scaling_group", SG_DELETE, {"name": "sg-kp"}),
    mutation("associate_scaling_group_with_domain", SG_ASSOC_DOMAIN, {"scaling_group": "sg-kp", "domain": "other"}),
    mutation("disassociate_scaling_group_with_domain", SG_DISSOC_DOMAIN,
             {"scaling_group": "default", "domain": "default"}),
    mutation("disassociate_all_scaling_groups_with_domain", SG_DISSOC_ALL_DOMAIN, {"domain": "default"}),
    mutation("associate_scaling_group_with_user_group", SG_ASSOC_GROUP,
             lambda w: {"scaling_group": "sg-other", "user_group": project(w)}),
    mutation("disassociate_scaling_group_with_user_group", SG_DISSOC_GROUP,
             lambda w: {"scaling_group": "sg-other", "user_group": project(w)}),
    mutation("disassociate_all_scaling_groups_with_group", SG_DISSOC_ALL_GROUP, lambda w: {"group_id": project(w)}),
    mutation("associate_scaling_group_with_keypair", SG_ASSOC_KEYPAIR,
             lambda w: {"scaling_group": "sg-other", "access_key": owner_key(w)}),
    mutation("disassociate_scaling_group_with_keypair", SG_DISSOC_KEYPAIR,
             lambda w: {"scaling_group": "sg-kp", "access_key": owner_key(w)}),
]


@pytest.mark.parametrize("case, role", params(MUTATIONS))
def test_scaling_group_mutations_are_the_superadmins_alone(case, role, world, signed):
    check(case, role, world, signed)


@pytest.mark.parametrize("case", MUTATIONS, ids=str)
def test_a_domain_admin_of_the_same_domain_is_refused_every_mutation_and_nothing_changes(case, world, domain_admin,
                                                                                       signed):
    before = groups_state()
    response = case.call(signed(domain_admin), world, "domain_admin")
    assert response.status_code == 403 and slug(response) == "insufficient-privilege"
    assert "Only superadmins" in response.json()["msg"]
    assert groups_state() == before


def test_the_clients_add_info_update_and_delete_round_trip(world, superadmin, signed):
    api = signed(superadmin)
    created = data_of(api.post("/admin/gql", {"query": SG_CREATE, "variables": {
        "name": "gpu", "input": create_input(description="GPUs", scheduler="drf", wsproxy_addr="http://proxy:5050",
                                             wsproxy_api_token="proxy-token-0d1e2f",
                                             scheduler_opts=json.dumps({"pending_timeout": 30}))}}))
    assert created["create_scaling_group"] == {"ok": True, "msg": "success", "scaling_group": {"name": "gpu"}}
    info = data_of(api.post("/admin/gql", {"query": SG_INFO, "variables": {"name": "gpu"}}))["scaling_group"]
    assert info["description"] == "GPUs" and info["scheduler"] == "drf" and info["is_public"] is True
    assert json.loads(info["driver_opts"]) == {}
    assert json.loads(info["scheduler_opts"])["pending_timeout"] == 30
    assert info["wsproxy_addr"] == "http://proxy:5050" and info["wsproxy_api_token"] == "********"
    updated = data_of(api.post("/admin/gql", {"query": SG_MODIFY, "variables": {
        "name": "gpu", "input": {"is_active": False, "is_public": False}}}))
    assert updated["modify_scaling_group"] == {"ok": True, "msg": "success"}
    listed = data_of(api.post("/admin/gql", {"query": SG_LIST, "variables": {"is_active": None}}))["scaling_groups"]
    assert {"gpu", "default", "sg-kp", "sg-other", "sg-private"} == {g["name"] for g in listed}
    assert [g for g in listed if g["name"] == "gpu"][0]["is_active"] is False
    assert "proxy-token-0d1e2f" not in json.dumps(listed) and WSPROXY_TOKEN not in json.dumps(listed)
    deleted = data_of(api.post("/admin/gql", {"query": SG_DELETE, "variables": {"name": "gpu"}}))
    assert deleted["delete_scaling_group"] == {"ok": True, "msg": "success"}
    assert data_of(api.post("/admin/gql", {"query": SG_INFO, "variables": {"name": "gpu"}}))["scaling_group"] is None


@pytest.mark.parametrize("variables, message", [
    ({"name": "default", "input": create_input()}, "already exists"),
    ({"name": "bad name!", "input": create_input()}, "name"),
    ({"name": "x1", "input": create_input(scheduler="round-robin")}, "scheduler"),
    ({"name": "x2", "input": create_input(scheduler_opts=json.dumps({"pending_timeout": -1}))}, "pending_timeout"),
    ({"name": "x3", "input": create_input(driver_opts=json.dumps([1, 2]))}, "driver_opts"),
])
def test_a_bad_creation_answers_ok_false_with_the_reason_and_creates_nothing(world, superadmin, signed, variables,
                                                                             message):
    before = groups_state()
    answer = data_of(signed(superadmin).post("/admin/gql", {"query": SG_CREATE, "variables": variables}))
    result = answer["create_scaling_group"]
    assert result["ok"] is False and message in result["msg"] and result["scaling_group"] is None
    assert groups_state() == before


def test_a_group_with_agents_is_not_deleted(world, superadmin, signed):
    answer = data_of(signed(superadmin).post("/admin/gql", {"query": SG_DELETE, "variables": {"name": "default"}}))
    assert answer["delete_scaling_group"]["ok"] is False and "agent" in answer["delete_scaling_group"]["msg"]
    from agents.models import ScalingGroup

    assert ScalingGroup.objects.filter(pk="default").exists()


def test_unknown_targets_answer_ok_false(world, superadmin, signed):
    api = signed(superadmin)
    before = groups_state()
    for document, variables in [
        (SG_ASSOC_DOMAIN, {"scaling_group": "sg-kp", "domain": "nowhere"}),
        (SG_ASSOC_DOMAIN, {"scaling_group": "nothing", "domain": "default"}),
        (SG_DISSOC_GROUP, {"scaling_group": "sg-kp", "user_group": "not-a-uuid"}),
        (SG_ASSOC_KEYPAIR, {"scaling_group": "sg-kp", "access_key": "AKIANOSUCHKEY0000000"}),
        (SG_MODIFY, {"name": "nothing", "input": {"description": "x"}}),
    ]:
        answer = data_of(api.post("/admin/gql", {"query": document, "variables": variables}))
        (result,) = answer.values()
        assert result["ok"] is False and result["msg"], (document, result)
    assert groups_state() == before


def test_a_superadmins_association_opens_the_group_to_the_domain_in_rest_and_the_admin(world, superadmin, outsider,
                                                                                       client, signed):
    before = signed(outsider).get("/scaling-groups")
    assert before.status_code == 200 and "sg-kp" not in before.content.decode()
    answer = data_of(signed(superadmin).post("/admin/gql", {"query": SG_ASSOC_DOMAIN, "variables": {
        "scaling_group": "sg-kp", "domain": "other"}}))
    assert answer["associate_scaling_group_with_domain"] == {"ok": True, "msg": "success"}
    after = signed(outsider).get("/scaling-groups")
    assert {"name": "sg-kp"} in after.json()["scaling_groups"]
    client.force_login(superadmin)
    page = client.get("/admin/agents/scalinggroup/sg-kp/change/").content.decode()
    assert 'value="other" selected' in page or '<option value="other" selected>' in page
    again = data_of(signed(superadmin).post("/admin/gql", {"query": SG_DISSOC_DOMAIN, "variables": {
        "scaling_group": "sg-kp", "domain": "other"}}))
    assert again["disassociate_scaling_group_with_domain"]["ok"] is True
    assert "sg-kp" not in signed(outsider).get("/scaling-groups").content.decode()


def test_a_group_created_over_graphql_shows_in_the_django_admin(world, superadmin, client, signed):
    data_of(signed(superadmin).post("/admin/gql", {"query": SG_CREATE, "variables": {
        "name": "sg-admin-sees", "input": create_input(description="made over GraphQL")}}))
    client.force_login(superadmin)
    page = client.get("/admin/agents/scalinggroup/").content.decode()
    assert "sg-admin-sees" in page and "made over GraphQL" in page


def test_the_project_association_reaches_the_projects_members(world, superadmin, member, signed):
    assert "sg-other" not in signed(member).get("/scaling-groups?group=default").content.decode()
    answer = data_of(signed(superadmin).post("/admin/gql", {"query": SG_ASSOC_GROUP, "variables": {
        "scaling_group": "sg-other", "user_group": project(world)}}))
    assert answer["associate_scaling_group_with_user_group"] == {"ok": True, "msg": "success"}
    assert {"name": "sg-other"} in signed(member).get("/scaling-groups?group=default").json()["scaling_groups"]
    gone = data_of(signed(superadmin).post("/admin/gql", {"query": SG_DISSOC_ALL_GROUP, "variables": {
        "group_id": project(world)}}))
    assert gone["disassociate_all_scaling_groups_with_group"]["ok"] is True
    assert "sg-other" not in signed(member).get("/scaling-groups?group=default").content.decode()


def test_a_domain_admin_sees_the_non_public_groups_of_their_domain_only(world, domain_admin, signed):
    listed = data_of(signed(domain_admin).post("/admin/gql", {"query": SG_LIST, "variables": {"is_active": None}}))
    names = {g["name"] for g in listed["scaling_groups"]}
    assert {"default", "sg-private", "sg-kp"} <= names and "sg-other" not in names
