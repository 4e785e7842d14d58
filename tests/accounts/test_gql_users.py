"""Users over GraphQL with the official client's documents (23.9.10): ``user``,
``user_from_uuid``, ``users``, ``user_list`` and ``create_user``, ``modify_user``,
``delete_user``, ``purge_user``; what each role sees and may change, refusals that change
nothing, changes visible in the Django admin and REST, hostile input refused cleanly."""
from __future__ import annotations

import pytest

from accounts import services as account_services
from accounts.models import Keypair, Project, ProjectMembership, User, UserRole, UserStatus
from helpers import slug
from permission_matrix import ROLES, Case, World, assert_no_foreign_secret, check, gql_case, params
from permission_matrix import gql_data as data
from permission_matrix import gql_post as gql

pytestmark = pytest.mark.django_db

ALL_OK = {role: 200 for role in ROLES}
ADMIN_ONLY_OWNER = {"owner": 403, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}
NEW_PASSWORD = "another-Horse-battery-77"

# the client's documents, verbatim in shape (func/user.py)
USER_FIELDS = ("uuid username role email full_name need_password_change status status_info created_at domain_name "
               "groups { id name } allowed_client_ip sudo_session_enabled main_access_key")
USER_BY_EMAIL = "query($email: String) {\n    user(email: $email) {" + USER_FIELDS + "}\n}\n"
USER_SELF = "query {\n    user {" + USER_FIELDS + "}\n}\n"
USER_BY_UUID = "query($user_id: ID) {\n    user_from_uuid(user_id: $user_id) {" + USER_FIELDS + "}\n}\n"
USERS = "query($status: String, $group: UUID) {\n    users(status: $status, group_id: $group) {" + USER_FIELDS + "}\n}\n"
USER_LIST = ("query($limit:Int!, $offset:Int!, $status: String, $group_id: UUID, $filter: String, $order: String) {\n"
             "  user_list(\n      limit:$limit, offset:$offset, status:$status, group_id:$group_id, filter:$filter, "
             "order:$order) {\n    items { " + USER_FIELDS + " }\n    total_count\n  }\n}")
CREATE = ("mutation($email: String!, $input: UserInput!) {\n    create_user(email: $email, props: $input) {\n"
          "        ok msg user {domain_name email username uuid}\n    }\n}\n")
MODIFY = ("mutation($email: String!, $input: ModifyUserInput!) {\n    modify_user(email: $email, props: $input) {\n"
          "        ok msg\n    }\n}\n")
DELETE = "mutation($email: String!) {\n    delete_user(email: $email) {\n        ok msg\n    }\n}\n"
PURGE = ("mutation($email: String!, $input: PurgeUserInput!) {\n    purge_user(email: $email, props: $input) {\n"
         "        ok msg\n    }\n}\n")


def create_input(**overrides) -> dict:
    """What ``admin user add`` sends (func/user.py ``User.create``)."""
    return {"password": NEW_PASSWORD, "role": "user", "status": "active", "need_password_change": False,
            "description": "", "domain_name": "default", "totp_activated": False, "sudo_session_enabled": False,
            "username": "", "full_name": "", "allowed_client_ip": None, **overrides}


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin):
    return World(users={"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
                        "superadmin": superadmin})


def owner_email(world):
    return world.users["owner"].email


def owner_row(world):
    return tuple(User.objects.filter(email="owner@example.com").values_list(
        "full_name", "role", "status", "username", "password", "domain_id").get())


QUERIES = [
    Case("user(email: owner's)", gql_case(USER_BY_EMAIL, lambda w: {"email": owner_email(w)}), ALL_OK,
         marker=owner_email, sees=("owner", "superadmin")),
    Case("user_from_uuid(owner's)", gql_case(USER_BY_UUID, lambda w: {"user_id": str(w.users["owner"].pk)}), ALL_OK,
         marker=owner_email, sees=("owner", "superadmin")),
    Case("users", gql_case(USERS, {"status": None, "group": None}), ALL_OK, marker=owner_email,
         sees=("owner", "superadmin")),
    Case("user_list", gql_case(USER_LIST, {"limit": 20, "offset": 0, "status": None, "group_id": None,
                                           "filter": None, "order": None}), ALL_OK,
         marker=owner_email, sees=("owner", "superadmin")),
]

MUTATIONS = [
    Case("modify_user(owner) full_name", gql_case(MODIFY, lambda w: {"email": owner_email(w),
                                                                      "input": {"full_name": "Renamed"}}),
         ADMIN_ONLY_OWNER, unchanged=owner_row),
    Case("modify_user(owner) role superadmin", gql_case(MODIFY, lambda w: {"email": owner_email(w),
                                                                          "input": {"role": "superadmin"}}),
         ADMIN_ONLY_OWNER, unchanged=owner_row),
    Case("delete_user(owner)", gql_case(DELETE, lambda w: {"email": owner_email(w)}), ADMIN_ONLY_OWNER,
         unchanged=owner_row),
    Case("create_user in default", gql_case(CREATE, {"email": "fresh@example.com", "input": create_input()}),
         {"owner": 403, "member": 403, "outsider": 403, "foreign_admin": 403, "superadmin": 200},
         unchanged=lambda w: User.objects.filter(email="fresh@example.com").count()),
]


@pytest.mark.parametrize("case, role", params(QUERIES))
def test_user_queries_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


@pytest.mark.parametrize("case, role", params(MUTATIONS))
def test_user_mutations_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


def test_user_without_an_email_is_the_caller_with_the_clients_fields(signed, owner):
    user = data(gql(signed(owner), USER_SELF))["user"]
    assert user["email"] == owner.email and user["uuid"] == str(owner.pk) and user["role"] == "user"
    assert user["status"] == "active" and user["domain_name"] == "default"
    assert user["groups"] == [{"id": str(owner.projects.get().pk), "name": "default"}]
    assert user["main_access_key"] == owner.main_keypair_id and user["allowed_client_ip"] == []


def test_a_domain_admin_sees_the_users_of_their_domain_only(signed, owner, member, outsider, domain_admin, superadmin):
    listed = data(gql(signed(domain_admin), USER_LIST, {"limit": 100, "offset": 0}))["user_list"]
    emails = {item["email"] for item in listed["items"]}
    assert emails == {owner.email, member.email, domain_admin.email, superadmin.email}
    assert listed["total_count"] == 4
    assert data(gql(signed(domain_admin), USER_BY_EMAIL, {"email": outsider.email}))["user"] is None


def test_the_user_list_pages_consistently_and_filters_and_orders(signed, make_user, superadmin):
    for n in range(5):
        make_user(f"paged{n}@example.com")
    api = signed(superadmin)
    seen, offset = [], 0
    while True:
        listed = data(gql(api, USER_LIST, {"limit": 2, "offset": offset, "filter": 'email ilike "%paged%"',
                                           "order": "email"}))["user_list"]
        assert listed["total_count"] == 5
        seen += [item["email"] for item in listed["items"]]
        offset += len(listed["items"])
        if offset >= listed["total_count"]:
            break
    assert seen == [f"paged{n}@example.com" for n in range(5)]
    group = superadmin.projects.get()
    in_group = data(gql(api, USERS, {"group": str(group.pk), "status": "active"}))["users"]
    assert superadmin.email in {u["email"] for u in in_group}


def test_a_superadmin_creates_a_user_in_another_domain_seen_by_the_admin_and_able_to_log_in(
        signed, client, superadmin, outsider):
    created = data(gql(signed(superadmin), CREATE, {"email": "new@other.example.com", "input": create_input(
        domain_name="other", full_name="New User", allowed_client_ip=["10.0.0.0/8"], sudo_session_enabled=True)}))
    assert created["create_user"]["ok"] is True
    user = User.objects.get(email="new@other.example.com")
    assert created["create_user"]["user"] == {"domain_name": "other", "email": user.email, "username": "new",
                                              "uuid": str(user.pk)}
    assert user.full_name == "New User" and user.sudo_session_enabled and user.allowed_client_ip == ["10.0.0.0/8"]
    assert user.main_keypair is not None and user.check_password(NEW_PASSWORD)
    assert user.main_keypair.secret_key not in str(created)
    client.force_login(superadmin)
    page = client.get(f"/admin/accounts/user/{user.pk}/change/")
    assert page.status_code == 200 and "new@other.example.com" in page.content.decode()
    login = client.post("/auth/authorize", {"type": "keypair", "domain": "other", "username": user.email,
                                            "password": NEW_PASSWORD}, content_type="application/json")
    assert login.status_code == 200 and login.json()["data"]["access_key"] == user.main_keypair_id


def test_a_domain_admin_creates_users_in_their_domain_only_and_never_a_superadmin(signed, domain_admin, owner,
                                                                                 outsider):
    api = signed(domain_admin)
    made = data(gql(api, CREATE, {"email": "mine@example.com", "input": create_input(
        group_ids=[str(owner.projects.get().pk)])}))
    assert made["create_user"]["ok"] and User.objects.get(email="mine@example.com").domain_id == "default"
    elsewhere = gql(api, CREATE, {"email": "theirs@example.com", "input": create_input(domain_name="other")})
    root = gql(api, CREATE, {"email": "root2@example.com", "input": create_input(role="superadmin")})
    assert elsewhere.status_code == 403 and root.status_code == 403
    assert slug(root) == "insufficient-privilege" and "superadmin" in root.json()["msg"]
    assert not User.objects.filter(email__in=["theirs@example.com", "root2@example.com"]).exists()


@pytest.mark.parametrize("email, overrides, expected", [
    ("owner@example.com", {}, "already exists"),
    ("not-an-email", {}, "email"),
    ("weak@example.com", {"password": "123"}, "password"),
    ("ip@example.com", {"allowed_client_ip": ["300.1.1.1"]}, "allowed_client_ip"),
    ("role@example.com", {"role": "emperor"}, "role"),
    ("long@example.com", {"full_name": "x" * 10_000}, "full_name"),
    ("x" * 300 + "@example.com", {}, "email"),
    ("totp@example.com", {"totp_activated": True}, "totp_activated"),
    ("cuid@example.com", {"container_uid": 1000}, "container_uid"),
])
def test_create_user_refuses_bad_input_cleanly_and_creates_nothing(signed, superadmin, owner, email, overrides,
                                                                   expected):
    before = User.objects.count()
    response = gql(signed(superadmin), CREATE, {"email": email, "input": create_input(**overrides)})
    assert response.status_code == 400, response.content
    assert slug(response) == "invalid-api-params" and expected in response.json()["msg"]
    assert User.objects.count() == before


@pytest.mark.parametrize("group_id", ["theirs", "not-a-uuid"])
def test_create_user_refuses_groups_of_another_domain_or_not_groups_at_all(signed, superadmin, outsider, defaults,
                                                                          group_id):
    theirs = Project.objects.create(domain_id="other", name="theirs", resource_policy=defaults.project_policy)
    response = gql(signed(superadmin), CREATE, {"email": "g@example.com", "input": create_input(
        group_ids=[str(theirs.pk) if group_id == "theirs" else group_id])})
    assert response.status_code == 400 and "group_ids" in response.json()["msg"]
    assert not User.objects.filter(email="g@example.com").exists()


def test_a_username_taken_by_another_user_falls_back_to_the_email(signed, superadmin, make_user, outsider):
    make_user("same@example.com")
    data(gql(signed(superadmin), CREATE, {"email": "same@other.example.com", "input": create_input(
        domain_name="other")}))
    assert User.objects.get(email="same@other.example.com").username == "same@other.example.com"


def test_modify_user_changes_what_the_client_sends_and_the_admin_shows_it(signed, client, superadmin, owner):
    second, _ = account_services.create_keypair(owner)
    project = owner.projects.get()
    response = data(gql(signed(superadmin), MODIFY, {"email": owner.email, "input": {
        "full_name": "Owner Renamed", "description": "", "role": "admin", "need_password_change": True,
        "allowed_client_ip": ["127.0.0.1", "::1"], "sudo_session_enabled": True, "main_access_key": second.pk,
        "password": NEW_PASSWORD, "group_ids": []}}))
    assert response["modify_user"] == {"ok": True, "msg": "success"}
    owner.refresh_from_db()
    assert (owner.full_name, owner.role, owner.need_password_change, owner.sudo_session_enabled) == (
        "Owner Renamed", "admin", True, True)
    assert owner.allowed_client_ip == ["127.0.0.1", "::1"] and owner.main_keypair_id == second.pk
    assert owner.check_password(NEW_PASSWORD)
    assert not ProjectMembership.objects.filter(user=owner, project=project).exists()
    assert set(Keypair.objects.filter(user=owner).values_list("is_admin", flat=True)) == {True}
    client.force_login(superadmin)
    assert "Owner Renamed" in client.get(f"/admin/accounts/user/{owner.pk}/change/").content.decode()


def test_a_domain_admin_modifies_a_user_of_their_domain_but_not_a_superadmin(signed, domain_admin, owner, superadmin):
    api = signed(domain_admin)
    assert data(gql(api, MODIFY, {"email": owner.email.upper(), "input": {"full_name": "By Admin"}}))
    assert User.objects.get(pk=owner.pk).full_name == "By Admin"
    refused = gql(api, MODIFY, {"email": superadmin.email, "input": {"full_name": "Nope"}})
    moved = gql(api, MODIFY, {"email": owner.email, "input": {"domain_name": "other"}})
    assert refused.status_code == 403 and slug(refused) == "insufficient-privilege"
    assert moved.status_code in (403, 404)
    assert User.objects.get(pk=superadmin.pk).full_name == "" and User.objects.get(pk=owner.pk).domain_id == "default"


def test_nobody_changes_their_own_role_or_status(signed, superadmin, domain_admin):
    for who in (superadmin, domain_admin):
        response = gql(signed(who), MODIFY, {"email": who.email, "input": {"role": "user"}})
        assert response.status_code == 403
        assert User.objects.get(pk=who.pk).role == who.role


def test_a_refused_modification_changes_none_of_the_fields_given_with_it(signed, superadmin, owner):
    response = gql(signed(superadmin), MODIFY, {"email": owner.email, "input": {
        "full_name": "Half", "allowed_client_ip": ["not-an-ip"]}})
    assert response.status_code == 400
    assert User.objects.get(pk=owner.pk).full_name == ""


def test_moving_a_user_to_another_domain_drops_the_old_domains_groups(signed, superadmin, owner, outsider):
    data(gql(signed(superadmin), MODIFY, {"email": owner.email, "input": {"domain_name": "other"}}))
    owner.refresh_from_db()
    assert owner.domain_id == "other" and not owner.projects.exists()


def test_delete_user_deactivates_the_user_and_their_keypairs_so_their_signature_no_longer_works(
        signed, superadmin, owner):
    assert signed(owner).get("/auth").status_code == 200
    assert data(gql(signed(superadmin), DELETE, {"email": owner.email}))["delete_user"]["ok"]
    owner.refresh_from_db()
    assert owner.status == UserStatus.DELETED and not owner.keypairs.filter(is_active=True).exists()
    assert signed(owner).get("/auth").status_code == 401
    assert gql(signed(superadmin), DELETE, {"email": superadmin.email}).status_code == 403


def test_purge_user_removes_a_user_with_their_folder_and_refuses_one_with_a_live_session(
        signed, superadmin, owner, member, defaults, settings, tmp_path):
    from sessions.models import Session
    from vfolders import services as folder_services

    settings.VFOLDER_ROOT = tmp_path / "vfroot"
    folder_services.ensure_default_storage_host()
    folder = folder_services.create_folder(member, name="goes-too")
    Session.objects.create(name="busy", domain=defaults.domain, project=defaults.project, user=owner,
                           image="bai-test/shell:1.0", status="RUNNING")
    api = signed(superadmin)
    refused = gql(api, PURGE, {"email": owner.email, "input": {"purge_shared_vfolders": False}})
    assert refused.status_code == 400 and "busy" in refused.json()["msg"]
    assert User.objects.filter(pk=owner.pk).exists()
    keys = list(member.keypairs.values_list("pk", flat=True))
    assert data(gql(api, PURGE, {"email": member.email, "input": {"purge_shared_vfolders": False}}))
    assert not User.objects.filter(pk=member.pk).exists() and not Keypair.objects.filter(pk__in=keys).exists()
    assert not folder.path.exists()
    assert gql(api, PURGE, {"email": superadmin.email, "input": {}}).status_code == 403


def test_no_user_answer_holds_a_password_hash(signed, world, superadmin):
    response = gql(signed(superadmin), USER_LIST, {"limit": 100, "offset": 0})
    assert response.status_code == 200
    assert_no_foreign_secret(response, superadmin, world, "user_list")
    assert '"password"' not in response.content.decode() and "md5$" not in response.content.decode()


@pytest.mark.parametrize("variables", [
    {"user_id": "not-a-uuid"}, {"user_id": "x" * 100_00},
])
def test_user_from_uuid_refuses_what_is_not_a_uuid(signed, owner, variables):
    response = gql(signed(owner), USER_BY_UUID, variables)
    assert response.status_code == 400


def test_an_unknown_status_filter_is_a_clean_error(signed, superadmin):
    response = gql(signed(superadmin), USERS, {"status": "sleeping"})
    assert response.status_code == 400 and "status" in response.json()["msg"]


def test_the_role_values_are_backend_ais(signed, superadmin, domain_admin):
    listed = data(gql(signed(superadmin), USERS, {}))["users"]
    assert {u["role"] for u in listed} <= {r.value for r in UserRole}
