"""Resource policies over GraphQL: the keypair policy documents of ``admin
keypair-resource-policy`` (23.9.10 and 24.9.14), the user policy documents of 26.9.6,
and project policies; who sees which policy, superadmins alone change them, refusals
change nothing, changes visible in the Django admin and REST."""
from __future__ import annotations

import json

import pytest

from accounts import services as account_services
from accounts.models import KeypairResourcePolicy, ProjectResourcePolicy, UserResourcePolicy
from helpers import slug
from permission_matrix import ROLES, Case, World, check, gql_case, params
from permission_matrix import gql_data as data
from permission_matrix import gql_post as gql

pytestmark = pytest.mark.django_db

ALL_OK = {role: 200 for role in ROLES}
SUPERADMIN_ONLY = {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 403, "superadmin": 200}

KRP_FIELDS = ("name created_at total_resource_slots max_concurrent_sessions max_vfolder_count max_vfolder_size "
              "idle_timeout max_containers_per_session allowed_vfolder_hosts")
KRP_FIELDS_24 = ("name created_at total_resource_slots max_concurrent_sessions idle_timeout max_containers_per_session "
                 "allowed_vfolder_hosts max_session_lifetime max_pending_session_count "
                 "max_pending_session_resource_slots max_concurrent_sftp_sessions")
INFO = "query($name: String) {  keypair_resource_policy(name: $name) {    " + KRP_FIELDS + "  }}"
LIST = "query {  keypair_resource_policies {    " + KRP_FIELDS + "  }}"
LIST_24 = "query {\n    keypair_resource_policies {\n        " + KRP_FIELDS_24 + "\n    }\n}\n"
CREATE = ("mutation($name: String!, $input: CreateKeyPairResourcePolicyInput!) {  create_keypair_resource_policy("
          "name: $name, props: $input) {    ok msg resource_policy { name }  }}")
MODIFY = ("mutation($name: String!, $input: ModifyKeyPairResourcePolicyInput!) {  modify_keypair_resource_policy("
          "name: $name, props: $input) {    ok msg  }}")
DELETE = "mutation($name: String!) {  delete_keypair_resource_policy(name: $name) {    ok msg  }}"
USER_CREATE = ("mutation($name: String!, $input: CreateUserResourcePolicyInput!) {\n    create_user_resource_policy("
               "name: $name, props: $input) {\n            ok\n            msg\n        }\n}\n")
USER_MODIFY = ("mutation($name: String!, $input: ModifyUserResourcePolicyInput!) {\n    modify_user_resource_policy("
               "name: $name, props: $input) {\n        ok\n    }\n}\n")
USER_DELETE = "mutation($name: String!) {\n    delete_user_resource_policy(name: $name) {\n        ok\n        msg\n    }\n}\n"
USER_INFO = ("query($name: String!) { user_resource_policy(name: $name) { name max_vfolder_count max_quota_scope_size "
             "max_session_count_per_model_session max_customized_image_count } }")
USER_LIST = "query { user_resource_policies { name max_vfolder_count max_quota_scope_size } }"
PROJECT_CREATE = ("mutation($name: String!, $input: CreateProjectResourcePolicyInput!) { create_project_resource_policy("
                  "name: $name, props: $input) { ok msg resource_policy { name max_quota_scope_size } } }")


def add_input(**overrides) -> dict:
    """What ``admin keypair-resource-policy add NAME`` sends by default (23.9.10)."""
    return {"default_for_unspecified": "UNLIMITED", "total_resource_slots": "{}", "max_session_lifetime": 0,
            "max_concurrent_sessions": 30, "max_concurrent_sftp_sessions": 30, "max_containers_per_session": 1,
            "idle_timeout": 1800, "allowed_vfolder_hosts": json.dumps({"local:volume1": ["create-vfolder"]}),
            **overrides}


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin):
    gold = KeypairResourcePolicy.objects.create(name="gold-policy", max_concurrent_sessions=3)
    account_services.assign_keypair_policy([owner.main_keypair], gold)
    return World(users={"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
                        "superadmin": superadmin})


def gold_row(world):
    return tuple(KeypairResourcePolicy.objects.filter(pk="gold-policy").values_list(
        "max_concurrent_sessions", "idle_timeout", "total_resource_slots").get()) + (
        KeypairResourcePolicy.objects.count(),)


CASES = [
    Case("keypair_resource_policy(gold)", gql_case(INFO, {"name": "gold-policy"}), ALL_OK,
         marker=lambda w: "gold-policy", sees=("owner", "superadmin")),
    Case("keypair_resource_policies", gql_case(LIST), ALL_OK, marker=lambda w: "gold-policy",
         sees=("owner", "superadmin")),
    Case("create_keypair_resource_policy", gql_case(CREATE, {"name": "new-policy", "input": add_input()}),
         SUPERADMIN_ONLY, unchanged=gold_row),
    Case("modify_keypair_resource_policy(gold)", gql_case(MODIFY, {"name": "gold-policy", "input": {
        "max_concurrent_sessions": 99}}), SUPERADMIN_ONLY, unchanged=gold_row),
    Case("delete_keypair_resource_policy(in use)", gql_case(DELETE, {"name": "gold-policy"}),
         {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 403, "superadmin": 400}, unchanged=gold_row),
    Case("create_user_resource_policy", gql_case(USER_CREATE, {"name": "u-new", "input": {
        "max_vfolder_count": 5, "max_quota_scope_size": -1, "max_session_count_per_model_session": 10,
        "max_customized_image_count": 3}}), SUPERADMIN_ONLY,
         unchanged=lambda w: UserResourcePolicy.objects.count()),
]


@pytest.mark.parametrize("case, role", params(CASES))
def test_policy_fields_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


def test_without_a_name_the_policy_is_the_calling_keypairs(signed, world):
    owner = world.users["owner"]
    shown = data(gql(signed(owner), "query { keypair_resource_policy { name max_concurrent_sessions } }"))
    assert shown["keypair_resource_policy"] == {"name": "gold-policy", "max_concurrent_sessions": 3}


def test_the_24_09_list_document_gets_every_field_it_asks(signed, world, superadmin):
    listed = data(gql(signed(superadmin), LIST_24))["keypair_resource_policies"]
    gold = next(p for p in listed if p["name"] == "gold-policy")
    assert gold["max_pending_session_count"] is None and gold["max_concurrent_sftp_sessions"] == 1
    assert json.loads(gold["total_resource_slots"]) == {} and gold["max_session_lifetime"] == 0


def test_a_superadmin_adds_a_policy_with_the_clients_defaults_and_the_admin_shows_it(signed, client, superadmin):
    made = data(gql(signed(superadmin), CREATE, {"name": "single", "input": add_input(
        max_concurrent_sessions=1, total_resource_slots='{"cpu": "2", "mem": "4g"}', max_pending_session_count=None,
        max_pending_session_resource_slots=None)}))
    assert made["create_keypair_resource_policy"] == {"ok": True, "msg": "success", "resource_policy": {"name": "single"}}
    policy = KeypairResourcePolicy.objects.get(pk="single")
    assert policy.max_concurrent_sessions == 1 and policy.idle_timeout == 1800
    assert policy.total_resource_slots == {"cpu": "2", "mem": str(4 * 2**30)}
    assert policy.allowed_vfolder_hosts == {"local:volume1": ["create-vfolder"]}
    client.force_login(superadmin)
    assert "single" in client.get("/admin/accounts/keypairresourcepolicy/").content.decode()
    info = data(gql(signed(superadmin), INFO, {"name": "single"}))["keypair_resource_policy"]
    assert info["max_vfolder_count"] == 0 and info["max_vfolder_size"] == 0
    assert json.loads(info["total_resource_slots"]) == {"cpu": "2", "mem": str(4 * 2**30)}


def test_modifying_a_policy_changes_what_the_keypairs_rest_shows_through_it(signed, world, superadmin):
    owner = world.users["owner"]
    data(gql(signed(superadmin), MODIFY, {"name": "gold-policy", "input": {
        "max_concurrent_sessions": 1, "default_for_unspecified": "LIMITED", "idle_timeout": -1}}))
    policy = KeypairResourcePolicy.objects.get(pk="gold-policy")
    assert (policy.max_concurrent_sessions, policy.default_for_unspecified, policy.idle_timeout) == (1, "LIMITED", -1)
    assert signed(owner).get(f"/keypairs/{owner.main_keypair_id}").json()["resource_policy"] == "gold-policy"


@pytest.mark.parametrize("props, expected", [
    ({"default_for_unspecified": "SOMETIMES"}, "default_for_unspecified"),
    ({"max_concurrent_sessions": -1}, "max_concurrent_sessions"),
    ({"max_containers_per_session": 0}, "max_containers_per_session"),
    ({"total_resource_slots": '{"cpu": "-2"}'}, "total_resource_slots"),
    ({"total_resource_slots": '{"bad name!": "1"}'}, "total_resource_slots"),
    ({"allowed_vfolder_hosts": '{"h": [1, 2]}'}, "allowed_vfolder_hosts"),
    ({"idle_timeout": -5}, "idle_timeout"),
])
def test_a_bad_value_is_refused_cleanly_and_changes_nothing(signed, world, superadmin, props, expected):
    before = gold_row(world)
    response = gql(signed(superadmin), MODIFY, {"name": "gold-policy", "input": props})
    assert response.status_code == 400 and slug(response) == "invalid-api-params", response.content
    assert expected in response.json()["msg"]
    assert gold_row(world) == before
    created = gql(signed(superadmin), CREATE, {"name": "never", "input": add_input(**props)})
    assert created.status_code == 400 and not KeypairResourcePolicy.objects.filter(pk="never").exists()


def test_an_int_too_large_for_graphql_is_a_clean_error(signed, world, superadmin):
    response = gql(signed(superadmin), MODIFY, {"name": "gold-policy", "input": {"max_concurrent_sessions": 2**40}})
    assert response.status_code == 400 and gold_row(world)[0] == 3


def test_a_policy_in_use_or_the_default_is_not_deleted_an_unused_one_is(signed, world, superadmin):
    api = signed(superadmin)
    in_use = gql(api, DELETE, {"name": "gold-policy"})
    assert in_use.status_code == 400 and "still used" in in_use.json()["msg"]
    assert gql(api, DELETE, {"name": "default"}).status_code == 400
    data(gql(api, CREATE, {"name": "spare", "input": add_input()}))
    assert data(gql(api, DELETE, {"name": "spare"}))["delete_keypair_resource_policy"]["ok"]
    assert not KeypairResourcePolicy.objects.filter(pk="spare").exists()
    assert gql(api, DELETE, {"name": "spare"}).status_code == 404


def test_the_26_09_user_policy_documents_create_modify_read_and_delete(signed, superadmin, owner):
    api = signed(superadmin)
    data(gql(api, USER_CREATE, {"name": "big", "input": {"max_vfolder_count": 5, "max_quota_scope_size": 2**40,
                                                         "max_session_count_per_model_session": 10,
                                                         "max_customized_image_count": 3}}))
    assert UserResourcePolicy.objects.get(pk="big").max_quota_scope_size == 2**40
    data(gql(api, USER_MODIFY, {"name": "big", "input": {"max_vfolder_count": 7}}))
    info = data(gql(api, USER_INFO, {"name": "big"}))["user_resource_policy"]
    assert info["max_vfolder_count"] == 7 and info["max_quota_scope_size"] == 2**40
    # users see the policy they have, not the others
    assert [p["name"] for p in data(gql(signed(owner), USER_LIST))["user_resource_policies"]] == ["default"]
    assert data(gql(signed(owner), USER_INFO, {"name": "big"}))["user_resource_policy"] is None
    assert data(gql(api, USER_DELETE, {"name": "big"}))["delete_user_resource_policy"] == {"ok": True, "msg": "success"}
    assert not UserResourcePolicy.objects.filter(pk="big").exists()


def test_project_policies_are_created_by_superadmins_only(signed, superadmin, domain_admin):
    made = data(gql(signed(superadmin), PROJECT_CREATE, {"name": "lab", "input": {"max_quota_scope_size": 10**12}}))
    assert made["create_project_resource_policy"]["resource_policy"] == {"name": "lab",
                                                                         "max_quota_scope_size": 10**12}
    refused = gql(signed(domain_admin), PROJECT_CREATE, {"name": "lab2", "input": {}})
    assert refused.status_code == 403 and not ProjectResourcePolicy.objects.filter(pk="lab2").exists()
