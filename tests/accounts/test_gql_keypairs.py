"""Keypairs over GraphQL with the official client's documents (23.9.10): ``keypair``,
``keypairs``, ``keypair_list`` and ``create_keypair``, ``modify_keypair`` (also the
``activate``/``deactivate`` documents), ``delete_keypair``.  Secrets: masked to everyone
except the owner of a keypair in the answer that created it."""
from __future__ import annotations

import pytest

from accounts import hooks
from accounts import services as account_services
from accounts.models import Keypair, KeypairResourcePolicy
from helpers import slug
from permission_matrix import ROLES, Case, World, check, gql_case, params
from permission_matrix import gql_data as data
from permission_matrix import gql_post as gql

pytestmark = pytest.mark.django_db

ALL_OK = {role: 200 for role in ROLES}
ADMIN_ONLY_OWNER = {"owner": 403, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}

KP_FIELDS = ("user_id projects user_info { full_name } access_key secret_key is_active is_admin created_at last_used "
             "resource_policy rate_limit concurrency_used")
KEYPAIR_INFO = ("query {  keypair {    user_id user_info { full_name } access_key secret_key is_active is_admin "
                "created_at last_used resource_policy rate_limit concurrency_used  }}")
KEYPAIRS = "query($email: String!, $is_active: Boolean) {  keypairs(email: $email, is_active: $is_active) {    " \
           + KP_FIELDS + "  }}"
KEYPAIR_LIST = ("query($limit:Int!, $offset:Int!, $is_active: Boolean, $domain_name: String, $email: String, "
                "$filter: String, $order: String) {\n  keypair_list(\n      limit:$limit, offset:$offset, "
                "is_active:$is_active, domain_name:$domain_name, email:$email, filter:$filter, order:$order) {\n"
                "    items { " + KP_FIELDS + " }\n    total_count\n  }\n}")
CREATE = ("mutation($user_id: String!, $input: KeyPairInput!) {  create_keypair(user_id: $user_id, props: $input) {"
          "    ok msg keypair { access_key secret_key }  }}")
MODIFY = ("mutation($access_key: String!, $input: ModifyKeyPairInput!) {  modify_keypair(access_key: $access_key, "
          "props: $input) {    ok msg  }}")
DELETE = "mutation($access_key: String!) {  delete_keypair(access_key: $access_key) {    ok msg  }}"


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin):
    second, _ = account_services.create_keypair(owner)
    return World(users={"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
                        "superadmin": superadmin}, objects={"second": second.access_key})


def second_key(world):
    return world.objects["second"]


def second_row(world):
    return tuple(Keypair.objects.filter(pk=second_key(world)).values_list(
        "is_active", "is_admin", "resource_policy_id", "rate_limit", "secret_key").get())


def page(**extra):
    return lambda world: {"limit": 20, "offset": 0, **{k: v(world) if callable(v) else v for k, v in extra.items()}}


QUERIES = [
    Case("keypairs(email: owner's)", gql_case(KEYPAIRS, lambda w: {"email": w.users["owner"].email}), ALL_OK,
         marker=second_key, sees=("owner", "superadmin")),
    Case("keypair_list", gql_case(KEYPAIR_LIST, page()), ALL_OK, marker=second_key, sees=("owner", "superadmin")),
    Case("keypair_list(domain_name: default)", gql_case(KEYPAIR_LIST, page(domain_name="default")), ALL_OK,
         marker=second_key, sees=("owner", "superadmin")),
]

MUTATIONS = [
    Case("modify_keypair(owner's) policy", gql_case(MODIFY, lambda w: {"access_key": second_key(w), "input": {
        "resource_policy": "gold"}}), ADMIN_ONLY_OWNER, unchanged=second_row),
    Case("modify_keypair(owner's) deactivate", gql_case(MODIFY, lambda w: {"access_key": second_key(w), "input": {
        "is_active": False, "is_admin": None, "resource_policy": None, "rate_limit": None}}),
         {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}, unchanged=second_row),
    Case("delete_keypair(owner's second)", gql_case(DELETE, lambda w: {"access_key": second_key(w)}),
         ADMIN_ONLY_OWNER, unchanged=second_row),
    Case("create_keypair(owner)", gql_case(CREATE, lambda w: {"user_id": w.users["owner"].email, "input": {
        "is_active": True, "is_admin": False, "resource_policy": "default", "rate_limit": 5000}}), ADMIN_ONLY_OWNER,
         unchanged=lambda w: Keypair.objects.filter(user=w.users["owner"]).count()),
]


@pytest.fixture(autouse=True)
def gold(db):
    return KeypairResourcePolicy.objects.create(name="gold", max_concurrent_sessions=1)


@pytest.mark.parametrize("case, role", params(QUERIES))
def test_keypair_queries_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


@pytest.mark.parametrize("case, role", params(MUTATIONS))
def test_keypair_mutations_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


def test_the_keypair_info_document_answers_every_field_with_the_secret_masked(signed, owner):
    info = data(gql(signed(owner), KEYPAIR_INFO))["keypair"]
    assert info["access_key"] == owner.main_keypair_id and info["secret_key"] == account_services.MASKED_SECRET
    assert info["user_id"] == owner.email and info["resource_policy"] == "default" and info["is_admin"] is False
    assert info["user_info"] == {"full_name": ""}
    assert "concurrency_used" in info


def test_concurrency_used_is_what_the_registered_counter_answers(signed, owner):
    def counter(keys):
        return {key: 3 for key in keys}

    hooks.register_concurrency_counter(counter)
    try:
        assert data(gql(signed(owner), KEYPAIR_INFO))["keypair"]["concurrency_used"] >= 3
    finally:
        hooks.unregister_concurrency_counter(counter)


def test_a_domain_admin_lists_and_filters_the_keypairs_of_their_domain(signed, world, domain_admin, outsider):
    api = signed(domain_admin)
    listed = data(gql(api, KEYPAIR_LIST, page()(world)))["keypair_list"]
    keys = {item["access_key"] for item in listed["items"]}
    assert second_key(world) in keys and outsider.main_keypair_id not in keys
    assert listed["total_count"] == len(listed["items"])
    assert {item["secret_key"] for item in listed["items"]} == {account_services.MASKED_SECRET}
    filtered = data(gql(api, KEYPAIR_LIST, page(filter=f'access_key == "{second_key(world)}"')(world)))
    assert [i["access_key"] for i in filtered["keypair_list"]["items"]] == [second_key(world)]
    inactive = data(gql(api, KEYPAIRS, {"email": world.users["owner"].email, "is_active": False}))["keypairs"]
    assert inactive == []


def test_an_admin_creates_a_keypair_for_someone_else_and_is_not_shown_its_secret(signed, superadmin, owner, gold):
    made = data(gql(signed(superadmin), CREATE, {"user_id": owner.email, "input": {
        "is_active": True, "is_admin": False, "resource_policy": "gold", "rate_limit": 5000}}))["create_keypair"]
    keypair = Keypair.objects.get(pk=made["keypair"]["access_key"])
    assert made["ok"] and made["keypair"]["secret_key"] == account_services.MASKED_SECRET
    assert keypair.user == owner and keypair.resource_policy == gold and keypair.rate_limit == 5000
    # the owner sees it through REST, still without its secret
    listed = signed(owner).get("/keypairs").json()["keypairs"]
    assert keypair.access_key in {k["access_key"] for k in listed} and keypair.secret_key not in str(listed)


def test_a_superadmin_creating_their_own_keypair_sees_its_secret_once_and_it_signs(signed, superadmin):
    made = data(gql(signed(superadmin), CREATE, {"user_id": superadmin.email, "input": {"is_active": True}}))
    access_key, secret = made["create_keypair"]["keypair"]["access_key"], made["create_keypair"]["keypair"]["secret_key"]
    keypair = Keypair.objects.get(pk=access_key)
    assert secret == keypair.secret_key
    assert signed(keypair).get("/auth").status_code == 200
    again = data(gql(signed(superadmin), KEYPAIRS, {"email": superadmin.email}))["keypairs"]
    assert secret not in str(again)


def test_a_domain_admin_creates_a_keypair_for_their_domain_but_not_for_a_superadmin(signed, domain_admin, owner,
                                                                                    superadmin, outsider):
    api = signed(domain_admin)
    assert data(gql(api, CREATE, {"user_id": owner.email, "input": {"is_active": False}}))
    assert Keypair.objects.filter(user=owner, is_active=False).count() == 1
    for target, status in ((superadmin, 403), (outsider, 404)):
        before = Keypair.objects.filter(user=target).count()
        assert gql(api, CREATE, {"user_id": target.email, "input": {}}).status_code == status
        assert Keypair.objects.filter(user=target).count() == before


@pytest.mark.parametrize("props, status, expected", [
    ({"resource_policy": "nope"}, 404, "object-not-found"),
    ({"is_admin": True}, 400, "invalid-api-params"),
    ({"rate_limit": 0}, 400, "invalid-api-params"),
    ({"resource_policy": "x" * 10_000}, 400, "invalid-api-params"),
])
def test_create_keypair_refuses_bad_input_and_creates_nothing(signed, superadmin, owner, props, status, expected):
    before = Keypair.objects.count()
    response = gql(signed(superadmin), CREATE, {"user_id": owner.email, "input": props})
    assert response.status_code == status and slug(response) == expected
    assert Keypair.objects.count() == before


def test_create_keypair_refuses_an_int_user_id_as_backend_ai_does(signed, superadmin):
    response = gql(signed(superadmin), CREATE.replace("String!, $input", "Int!, $input"),
                   {"user_id": 7, "input": {}})
    assert response.status_code == 400 and slug(response) == "graphql-error"


def test_modify_keypair_changes_the_policy_and_rate_limit_seen_by_rest_and_the_admin(signed, client, world,
                                                                                     superadmin, gold):
    owner = world.users["owner"]
    assert data(gql(signed(superadmin), MODIFY, {"access_key": second_key(world), "input": {
        "resource_policy": "gold", "rate_limit": 77}}))["modify_keypair"]["ok"]
    shown = signed(owner).get(f"/keypairs/{second_key(world)}").json()
    assert shown["resource_policy"] == "gold" and shown["rate_limit"] == 77
    client.force_login(superadmin)
    page = client.get(f"/admin/accounts/keypair/{second_key(world)}/change/").content.decode()
    assert '<option value="gold" selected>' in page and 'value="77"' in page


def test_the_clients_activate_and_deactivate_documents_switch_a_keypair(signed, world, superadmin):
    owner = world.users["owner"]
    null = {"is_admin": None, "resource_policy": None, "rate_limit": None}
    data(gql(signed(superadmin), MODIFY, {"access_key": second_key(world), "input": {"is_active": False, **null}}))
    assert Keypair.objects.get(pk=second_key(world)).is_active is False
    data(gql(signed(owner), MODIFY, {"access_key": second_key(world), "input": {"is_active": True, **null}}))
    assert Keypair.objects.get(pk=second_key(world)).is_active is True


def test_a_user_cannot_change_the_policy_or_rate_limit_of_their_own_keypair(signed, world):
    owner = world.users["owner"]
    before = second_row(world)
    for props in ({"resource_policy": "gold"}, {"rate_limit": 999999}, {"is_admin": True}):
        response = gql(signed(owner), MODIFY, {"access_key": second_key(world), "input": props})
        assert response.status_code == 403 and slug(response) == "insufficient-privilege"
    assert second_row(world) == before


def test_a_domain_admin_cannot_touch_a_superadmins_keypair(signed, domain_admin, superadmin):
    key = superadmin.main_keypair_id
    assert gql(signed(domain_admin), MODIFY, {"access_key": key, "input": {"is_active": False}}).status_code == 403
    assert gql(signed(domain_admin), DELETE, {"access_key": key}).status_code == 403
    assert Keypair.objects.get(pk=key).is_active


def test_delete_keypair_removes_a_keypair_but_never_a_main_one(signed, world, domain_admin):
    owner = world.users["owner"]
    api = signed(domain_admin)
    main = gql(api, DELETE, {"access_key": owner.main_keypair_id})
    assert main.status_code == 400 and "main access key" in main.json()["msg"]
    assert data(gql(api, DELETE, {"access_key": second_key(world)}))["delete_keypair"]["ok"]
    assert not Keypair.objects.filter(pk=second_key(world)).exists()
    assert Keypair.objects.filter(pk=owner.main_keypair_id).exists()
    assert signed(owner).get(f"/keypairs/{second_key(world)}").status_code == 404


@pytest.mark.parametrize("access_key", ["", "x" * 5000, "AKIA' OR 1=1 --"])
def test_hostile_access_keys_are_clean_errors(signed, superadmin, access_key):
    response = gql(signed(superadmin), MODIFY, {"access_key": access_key, "input": {"is_active": False}})
    assert response.status_code in (400, 404)
    assert gql(signed(superadmin), "query($ak: String) { keypair(access_key: $ak) { access_key } }",
               {"ak": access_key}).status_code == 200
