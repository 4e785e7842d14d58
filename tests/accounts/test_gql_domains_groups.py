"""Domains and groups (projects) over GraphQL with the official client's documents
(23.9.10): ``domain``, ``domains``, ``group``, ``groups``, ``groups_by_name`` and the
create/modify/delete/purge mutations of both, members added and removed with
``modify_group``; who sees and changes what, refusals that change nothing, changes
visible in the Django admin and REST."""
from __future__ import annotations

import json

import pytest

from accounts.models import Domain, Project, ProjectMembership, User
from helpers import slug
from permission_matrix import ALL_OK, SUPERADMIN_ONLY, Case, World, check, gql_case, params
from permission_matrix import gql_data as data
from permission_matrix import gql_post as gql

pytestmark = pytest.mark.django_db


DOMAIN_FIELDS = ("name description is_active created_at total_resource_slots allowed_vfolder_hosts "
                 "allowed_docker_registries integration_id")
DOMAIN = "query($name: String) {\n    domain(name: $name) {" + DOMAIN_FIELDS + "}\n}\n"
DOMAINS = "query {\n    domains {" + DOMAIN_FIELDS + "}\n}\n"
CREATE_DOMAIN = ("mutation($name: String!, $input: DomainInput!) {\n    create_domain(name: $name, props: $input) {\n"
                 "        ok msg domain {name}\n    }\n}\n")
MODIFY_DOMAIN = ("mutation($name: String!, $input: ModifyDomainInput!) {\n    modify_domain(name: $name, props: $input)"
                 " {\n        ok msg\n    }\n}\n")
DELETE_DOMAIN = "mutation($name: String!) {\n    delete_domain(name: $name) {\n        ok msg\n    }\n}\n"
PURGE_DOMAIN = "mutation($name: String!) {\n    purge_domain(name: $name) {\n        ok msg\n    }\n}\n"

GROUP_FIELDS = ("id name description is_active created_at domain_name total_resource_slots allowed_vfolder_hosts "
                "integration_id")
GROUP = "query($gid: UUID!) {\n    group(id: $gid) {" + GROUP_FIELDS + "}\n}\n"
GROUPS = "query($domain_name: String) {\n    groups(domain_name: $domain_name) {id name is_active created_at " \
         "integration_id}\n}\n"
BY_NAME = ("query($name: String!, $domain_name: String) {\n    groups_by_name(name: $name, domain_name: $domain_name)"
           " {" + GROUP_FIELDS + "}\n}\n")
CREATE_GROUP = ("mutation($name: String!, $input: GroupInput!) {\n    create_group(name: $name, props: $input) {\n"
                "        ok msg group {id domain_name name}\n    }\n}\n")
MODIFY_GROUP = ("mutation($gid: UUID!, $input: ModifyGroupInput!) {\n    modify_group(gid: $gid, props: $input) {\n"
                "        ok msg\n    }\n}\n")
DELETE_GROUP = "mutation($gid: UUID!) {\n    delete_group(gid: $gid) {\n        ok msg\n    }\n}\n"
PURGE_GROUP = "mutation($gid: UUID!) {\n    purge_group(gid: $gid) {\n        ok msg\n    }\n}\n"


def group_input(domain="default", **overrides) -> dict:
    """What ``admin group add`` sends."""
    return {"description": "", "is_active": True, "domain_name": domain, "total_resource_slots": "{}",
            "allowed_vfolder_hosts": "{}", "integration_id": None, **overrides}


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, defaults):
    team = Project.objects.create(domain_id="default", name="team", description="owner's team",
                                  resource_policy=defaults.project_policy)
    ProjectMembership.objects.create(project=team, user=owner)
    Domain.objects.filter(pk="default").update(description="the default domain d0")
    return World(users={"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
                        "superadmin": superadmin}, objects={"team": str(team.pk)})


def team(world):
    return world.objects["team"]


def team_row(world):
    return tuple(Project.objects.filter(pk=team(world)).values_list("name", "description", "is_active").get()) + (
        sorted(ProjectMembership.objects.filter(project_id=team(world)).values_list("user__email", flat=True)),)


def domain_row(world):
    return tuple(Domain.objects.filter(pk="default").values_list("description", "is_active").get()) + (
        Domain.objects.count(),)


QUERIES = [
    Case("domain(default)", gql_case(DOMAIN, {"name": "default"}), ALL_OK, marker=lambda w: "domain d0",
         sees=("owner", "member", "superadmin")),
    Case("domains", gql_case(DOMAINS), ALL_OK, marker=lambda w: "domain d0", sees=("owner", "member", "superadmin")),
    Case("group(team)", gql_case(GROUP, lambda w: {"gid": team(w)}), ALL_OK, marker=lambda w: "owner's team",
         sees=("owner", "superadmin")),
    Case("groups(default)", gql_case(GROUPS, {"domain_name": "default"}), ALL_OK, marker=team,
         sees=("owner", "superadmin")),
    Case("groups_by_name(team)", gql_case(BY_NAME, {"name": "team", "domain_name": None}), ALL_OK, marker=team,
         sees=("owner", "superadmin")),
]

MUTATIONS = [
    Case("modify_group(team)", gql_case(MODIFY_GROUP, lambda w: {"gid": team(w), "input": {"description": "x"}}),
         {"owner": 403, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}, unchanged=team_row),
    Case("modify_group(team) add member", gql_case(MODIFY_GROUP, lambda w: {"gid": team(w), "input": {
        "user_update_mode": "add", "user_uuids": [str(w.users["member"].pk)]}}),
         {"owner": 403, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}, unchanged=team_row),
    Case("delete_group(team)", gql_case(DELETE_GROUP, lambda w: {"gid": team(w)}),
         {"owner": 403, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}, unchanged=team_row),
    Case("create_group in default", gql_case(CREATE_GROUP, {"name": "newteam", "input": group_input()}),
         SUPERADMIN_ONLY, unchanged=lambda w: Project.objects.filter(name="newteam").count()),
    Case("create_domain", gql_case(CREATE_DOMAIN, {"name": "lab", "input": {"description": "", "is_active": True}}),
         SUPERADMIN_ONLY, unchanged=domain_row),
    Case("modify_domain(default)", gql_case(MODIFY_DOMAIN, {"name": "default", "input": {"description": "x"}}),
         SUPERADMIN_ONLY, unchanged=domain_row),
    Case("delete_domain(default)", gql_case(DELETE_DOMAIN, {"name": "default"}), SUPERADMIN_ONLY, unchanged=domain_row),
]


@pytest.mark.parametrize("case, role", params(QUERIES))
def test_domain_and_group_queries_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


@pytest.mark.parametrize("case, role", params(MUTATIONS))
def test_domain_and_group_mutations_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


# --- domains ------------------------------------------------------------------------------------

def test_domain_without_a_name_is_the_callers_and_json_fields_are_strings(signed, owner):
    Domain.objects.filter(pk="default").update(total_resource_slots={"cpu": "8"}, allowed_docker_registries=["cr.io"])
    domain = data(gql(signed(owner), "query { domain { name total_resource_slots allowed_docker_registries "
                                     "allowed_vfolder_hosts } }"))["domain"]
    assert domain["name"] == "default" and json.loads(domain["total_resource_slots"]) == {"cpu": "8"}
    assert domain["allowed_docker_registries"] == ["cr.io"] and isinstance(domain["allowed_vfolder_hosts"], str)


def test_a_superadmin_creates_a_domain_the_admin_shows(signed, client, superadmin):
    made = data(gql(signed(superadmin), CREATE_DOMAIN, {"name": "lab", "input": {
        "description": "the lab", "is_active": True, "total_resource_slots": '{"cpu": "16", "mem": "64g"}',
        "allowed_vfolder_hosts": '{"local:volume1": ["create-vfolder", "mount-in-session"]}',
        "allowed_docker_registries": ["cr.backend.ai"]}}))
    assert made["create_domain"] == {"ok": True, "msg": "success", "domain": {"name": "lab"}}
    lab = Domain.objects.get(pk="lab")
    assert lab.total_resource_slots == {"cpu": "16", "mem": str(64 * 2**30)}
    assert lab.allowed_vfolder_hosts == {"local:volume1": ["create-vfolder", "mount-in-session"]}
    client.force_login(superadmin)
    assert "the lab" in client.get("/admin/accounts/domain/lab/change/").content.decode()


@pytest.mark.parametrize("name, props, expected", [
    ("default", {}, "already exists"),
    ("bad name!", {}, "name"),
    ("x" * 65, {}, "name"),
    ("slots", {"total_resource_slots": '{"cpu": "lots"}'}, "total_resource_slots"),
    ("slots2", {"total_resource_slots": "[1, 2]"}, "total_resource_slots"),
    ("json", {"allowed_vfolder_hosts": "{not json"}, "allowed_vfolder_hosts"),
    ("hosts", {"allowed_vfolder_hosts": '{"h": "rw"}'}, "allowed_vfolder_hosts"),
    ("desc", {"description": "d" * 5000}, "description"),
])
def test_create_domain_refuses_bad_input_and_creates_nothing(signed, superadmin, name, props, expected):
    before = Domain.objects.count()
    response = gql(signed(superadmin), CREATE_DOMAIN, {"name": name, "input": {"description": "", **props}})
    assert response.status_code == 400 and slug(response) == "invalid-api-params", response.content
    assert expected in response.json()["msg"]
    assert Domain.objects.count() == before


def test_renaming_a_domain_moves_its_users_and_groups(signed, superadmin, outsider, foreign_admin, defaults):
    lab_team = Project.objects.create(domain_id="other", name="lab-team", resource_policy=defaults.project_policy)
    data(gql(signed(superadmin), MODIFY_DOMAIN, {"name": "other", "input": {"name": "renamed", "description": "r"}}))
    assert not Domain.objects.filter(pk="other").exists()
    assert Domain.objects.get(pk="renamed").description == "r"
    assert User.objects.get(pk=outsider.pk).domain_id == "renamed"
    assert Project.objects.get(pk=lab_team.pk).domain_id == "renamed"
    assert signed(foreign_admin).get("/auth").status_code == 200
    refused = gql(signed(superadmin), MODIFY_DOMAIN, {"name": "default", "input": {"name": "main"}})
    assert refused.status_code == 400 and Domain.objects.filter(pk="default").exists()


def test_delete_domain_deactivates_and_purge_domain_removes_only_an_empty_domain(signed, superadmin, outsider):
    api = signed(superadmin)
    data(gql(api, CREATE_DOMAIN, {"name": "empty", "input": {}}))
    data(gql(api, DELETE_DOMAIN, {"name": "other"}))
    assert Domain.objects.get(pk="other").is_active is False
    busy = gql(api, PURGE_DOMAIN, {"name": "other"})
    assert busy.status_code == 400 and "user" in busy.json()["msg"] and Domain.objects.filter(pk="other").exists()
    assert gql(api, PURGE_DOMAIN, {"name": "default"}).status_code == 400
    assert data(gql(api, PURGE_DOMAIN, {"name": "empty"}))["purge_domain"]["ok"]
    assert not Domain.objects.filter(pk="empty").exists()
    assert gql(api, PURGE_DOMAIN, {"name": "empty"}).status_code == 404


# --- groups -------------------------------------------------------------------------------------

def test_a_domain_admin_creates_groups_in_their_domain_only(signed, domain_admin, foreign_admin):
    made = data(gql(signed(domain_admin), CREATE_GROUP, {"name": "science", "input": group_input(
        total_resource_slots='{"cpu": "4"}', allowed_vfolder_hosts='{"local:volume1": ["mount-in-session"]}')}))
    project = Project.objects.get(domain_id="default", name="science")
    assert made["create_group"]["group"] == {"id": str(project.pk), "domain_name": "default", "name": "science"}
    assert project.total_resource_slots == {"cpu": "4"} and project.resource_policy_id == "default"
    elsewhere = gql(signed(foreign_admin), CREATE_GROUP, {"name": "intruder", "input": group_input()})
    assert elsewhere.status_code == 403 and not Project.objects.filter(name="intruder").exists()
    again = gql(signed(domain_admin), CREATE_GROUP, {"name": "science", "input": group_input()})
    assert again.status_code == 400 and "already exists" in again.json()["msg"]


def test_members_are_added_and_removed_and_rest_sees_the_membership(signed, world, domain_admin, member, outsider):
    api = signed(domain_admin)
    assert signed(member).get("/auth/role?group=team").status_code == 404
    data(gql(api, MODIFY_GROUP, {"gid": team(world), "input": {"user_update_mode": "add",
                                                                "user_uuids": [str(member.pk)]}}))
    assert signed(member).get("/auth/role?group=team").status_code == 200
    foreign = gql(api, MODIFY_GROUP, {"gid": team(world), "input": {"user_update_mode": "add",
                                                                      "user_uuids": [str(outsider.pk)]}})
    assert foreign.status_code == 400 and not ProjectMembership.objects.filter(user=outsider).exists()
    data(gql(api, MODIFY_GROUP, {"gid": team(world), "input": {"user_update_mode": "remove",
                                                                "user_uuids": [str(member.pk)]}}))
    assert signed(member).get("/auth/role?group=team").status_code == 404


@pytest.mark.parametrize("props", [
    {"user_update_mode": "replace", "user_uuids": []},
    {"user_uuids": ["00000000-0000-0000-0000-000000000000"]},
    {"user_update_mode": "add", "user_uuids": ["not-a-uuid"]},
    {"name": "default"},
    {"name": ""},
    {"total_resource_slots": '{"cpu": -1}'},
    {"domain_name": "other"},
    {"resource_policy": "nope"},
])
def test_modify_group_refuses_bad_input_and_changes_nothing(signed, world, superadmin, props):
    before = team_row(world)
    response = gql(signed(superadmin), MODIFY_GROUP, {"gid": team(world), "input": {"description": "changed", **props}})
    assert response.status_code in (400, 404), response.content
    assert team_row(world) == before


def test_the_admin_shows_a_modified_group(signed, client, world, superadmin):
    data(gql(signed(superadmin), MODIFY_GROUP, {"gid": team(world), "input": {"name": "team2",
                                                                               "description": "renamed team"}}))
    client.force_login(superadmin)
    page = client.get(f"/admin/accounts/project/{team(world)}/change/").content.decode()
    assert "renamed team" in page and 'value="team2"' in page


def test_delete_group_deactivates_and_purge_group_refuses_a_group_with_a_live_session(signed, world, superadmin,
                                                                                     owner, defaults, settings,
                                                                                     tmp_path):
    from sessions.models import Session
    from vfolders import services as folder_services

    api = signed(superadmin)
    data(gql(api, DELETE_GROUP, {"gid": team(world)}))
    assert Project.objects.get(pk=team(world)).is_active is False
    settings.VFOLDER_ROOT = tmp_path / "vfroot"
    folder_services.ensure_default_storage_host()
    default = owner.projects.get(name="default")
    Session.objects.create(name="still-on", domain=defaults.domain, project=default, user=owner,
                           image="bai-test/shell:1.0", status="PENDING")
    busy = gql(api, PURGE_GROUP, {"gid": str(default.pk)})
    assert busy.status_code == 400 and "still-on" in busy.json()["msg"]
    ProjectMembership.objects.get_or_create(project_id=team(world), user=superadmin)
    folder = folder_services.create_folder(superadmin, name="team-files", group=team(world))
    assert data(gql(api, PURGE_GROUP, {"gid": team(world)}))["purge_group"]["ok"]
    assert not Project.objects.filter(pk=team(world)).exists() and Project.objects.filter(pk=default.pk).exists()
    assert not folder.path.exists()


def test_a_group_id_that_is_not_a_uuid_is_a_clean_error(signed, superadmin):
    assert gql(signed(superadmin), GROUP, {"gid": "nope"}).status_code == 400
    assert gql(signed(superadmin), DELETE_GROUP, {"gid": "x" * 5000}).status_code == 400
