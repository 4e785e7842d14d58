"""The folder, storage-volume and quota-scope fields of ``/admin/gql`` with the
documents the official clients send, run as the owner, a member of the owner's
project, an outsider (another domain), that domain's admin and a superadmin
(``tests/permission_matrix.py``): who gets what, who sees the owner's data, that a
refused mutation changes nothing; then the values each field answers."""
from __future__ import annotations

import json

import pytest

from helpers import slug
from permission_matrix import ALL_OK, SUPERADMIN_ONLY, Case, World, check, params
from permission_matrix import gql_case as gql

pytestmark = pytest.mark.django_db


def paginated(root: str, variables: dict[str, str], fields: str) -> str:
    """A paginated document exactly as the client's ``execute_paginated_query`` builds it."""
    decls = ", ".join(f"${k}: {t}" for k, t in variables.items())
    args = ", ".join(f"{k}:${k}" for k in variables)
    return (f"query($limit:Int!, $offset:Int!, {decls}) {{\n  {root}(\n      limit:$limit, offset:$offset, {args}) "
            f"{{\n    items {{ {fields} }}\n    total_count\n  }}\n}}")


LIST_FIELDS = "host name created_at creator group permission ownership_type status"
FILTER_ORDER = {"filter": "String", "order": "String"}
VFOLDER_LIST_DOC = paginated("vfolder_list", {"group_id": "UUID", **FILTER_ORDER}, LIST_FIELDS)
OWN_DOC = paginated("vfolder_own_list", FILTER_ORDER, LIST_FIELDS)
INVITED_DOC = paginated("vfolder_invited_list", FILTER_ORDER, LIST_FIELDS)
PROJECT_DOC = paginated("vfolder_project_list", FILTER_ORDER, LIST_FIELDS)
STORAGE_LIST_DOC = paginated("storage_volume_list", FILTER_ORDER, "id backend capabilities")
STORAGE_INFO_DOC = ("query($vfolder_host: String!) {\n    storage_volume(id: $vfolder_host) {id backend capabilities "
                    "path fsprefix hardware_metadata performance_metric}\n}\n")
VFOLDER_DOC = ("query($id: String) { vfolder(id: $id) { id host quota_scope_id name user user_email group group_name "
               "creator unmanaged_path usage_mode permission ownership_type max_files max_size created_at last_used "
               "num_files cur_size cloneable status } }")
QUOTA_DOC = ("query($storage_host_name: String!, $quota_scope_id: String!) {\n    quota_scope(storage_host_name: "
             "$storage_host_name, quota_scope_id: $quota_scope_id) {\n        details {usage_bytes usage_count "
             "hard_limit_bytes}\n    }\n}\n")
SET_QUOTA_DOC = ("mutation($storage_host_name: String!, $quota_scope_id: String!, $input: QuotaScopeInput!) {\n"
                 "    set_quota_scope(storage_host_name: $storage_host_name, quota_scope_id: $quota_scope_id, "
                 "props: $input) {\n        quota_scope {quota_scope_id storage_host_name}\n    }\n}\n")
UNSET_QUOTA_DOC = ("mutation($storage_host_name: String!, $quota_scope_id: String!) {\n    unset_quota_scope("
                   "storage_host_name: $storage_host_name, quota_scope_id: $quota_scope_id) {\n        quota_scope "
                   "{quota_scope_id storage_host_name}\n    }\n}\n")


def page(**extra):
    return lambda world: {"limit": 20, "offset": 0, "filter": None, "order": None,
                          **{k: (v(world) if callable(v) else v) for k, v in extra.items()}}


@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, defaults, host):
    from vfolders import services

    owned = services.create_folder(owner, name="ownerdata", cloneable=True)
    (owned.path / "notes.txt").write_bytes(b"owner's notes")
    services.create_folder(owner, name="invitedata")
    services.invite(owner, "invitedata", "ro", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    services.create_folder(superadmin, name="projdata", group=str(defaults.project.pk))
    users = {"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
             "superadmin": superadmin}
    services.set_quota_scope(superadmin, host.name, f"user:{member.pk}", 5 * 2**30)
    return World(users=users, objects={"folder": str(owned.id), "host": host.name, "root": str(host.root),
                                       "owner_scope": f"user:{owner.pk}", "member_scope": f"user:{member.pk}",
                                       "project_scope": f"project:{defaults.project.pk}"})


def scope_limits(world):
    from vfolders.models import QuotaScope

    return sorted(QuotaScope.objects.values_list("host_id", "quota_scope_id", "limit_bytes"))


def folder_rows(world):
    from vfolders.models import VFolder

    return sorted(VFolder.objects.values_list("id", "name", "status"))


def quota_vars(scope_key, **extra):
    return lambda w: {"storage_host_name": w.objects["host"], "quota_scope_id": w.objects[scope_key], **extra}


GRAPHQL = [
    Case("vfolder(id: owner's)", gql(VFOLDER_DOC, lambda w: {"id": w.objects["folder"]}), ALL_OK,
         marker=lambda w: "ownerdata", sees=("owner", "superadmin")),
    Case("vfolder_list", gql(VFOLDER_LIST_DOC, page(group_id=None)), ALL_OK, marker=lambda w: "ownerdata",
         sees=("owner", "superadmin")),
    Case("vfolder_list(domain_name: default)",
         gql(VFOLDER_LIST_DOC.replace("order:$order)", 'order:$order, domain_name: "default")'), page(group_id=None)),
         {"owner": 200, "member": 200, "outsider": 403, "foreign_admin": 403, "superadmin": 200},
         marker=lambda w: "ownerdata", sees=("owner", "superadmin")),
    Case("vfolder_list(access_key: owner's)",
         gql(VFOLDER_LIST_DOC.replace("order:$order)", "order:$order, access_key: $ak)").replace(
             "$order: String)", "$order: String, $ak: String)"),
             page(group_id=None, ak=lambda w: w.users["owner"].main_keypair_id)),
         {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200},
         marker=lambda w: "ownerdata"),
    Case("vfolder_own_list", gql(OWN_DOC, page()), ALL_OK, marker=lambda w: "ownerdata", sees=("owner",)),
    Case("vfolder_invited_list", gql(INVITED_DOC, page()), ALL_OK, marker=lambda w: "invitedata",
         sees=("member",)),
    Case("vfolder_project_list", gql(PROJECT_DOC, page()), ALL_OK, marker=lambda w: "projdata",
         sees=("owner", "member", "superadmin")),
    Case("storage_volume_list", gql(STORAGE_LIST_DOC, page()), SUPERADMIN_ONLY, marker=lambda w: "local:volume1"),
    Case("storage_volume(id)", gql(STORAGE_INFO_DOC, lambda w: {"vfolder_host": w.objects["host"]}),
         SUPERADMIN_ONLY, marker=lambda w: w.objects["root"]),
    Case("quota_scope(owner's user scope)", gql(QUOTA_DOC, quota_vars("owner_scope")),
         {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200},
         marker=lambda w: "usage_bytes"),
    Case("quota_scope(the owner's project scope)", gql(QUOTA_DOC, quota_vars("project_scope")),
         {"owner": 200, "member": 200, "outsider": 404, "foreign_admin": 404, "superadmin": 200},
         marker=lambda w: "usage_bytes"),
    Case("set_quota_scope(owner's user scope)",
         gql(SET_QUOTA_DOC, quota_vars("owner_scope", input={"hard_limit_bytes": 3 * 2**33})),
         {"owner": 403, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200},
         unchanged=scope_limits),
    Case("unset_quota_scope(member's user scope)", gql(UNSET_QUOTA_DOC, quota_vars("member_scope")),
         {"owner": 404, "member": 403, "outsider": 404, "foreign_admin": 404, "superadmin": 200},
         unchanged=scope_limits),
]

REST = [
    Case("POST /folders/{owner's}/clone",
         lambda api, w, r: api.post(f"/folders/{w.objects['folder']}/clone",
                                    {"target_name": f"copy-{r}", "target_host": "local:volume1",
                                     "usage_mode": "general", "permission": "rw"}),
         {"owner": 201, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 201},
         unchanged=folder_rows),
]


@pytest.mark.parametrize("case, role", params(GRAPHQL))
def test_folder_and_storage_fields_answer_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


@pytest.mark.parametrize("case, role", params(REST))
def test_clone_answers_each_role_as_the_matrix_says(case, role, world, signed):
    check(case, role, world, signed)


# --- values -----------------------------------------------------------------------------------

def run(api, query, variables=None):
    response = api.post("/admin/gql", {"query": query, "variables": variables or {}})
    assert response.status_code == 200, response.content
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_a_folder_by_id_carries_every_field_and_an_unknown_or_hidden_one_is_null(signed, owner, outsider,
                                                                                  make_folder):
    folder = make_folder(owner, "mine", usage_mode="model", cloneable=True)
    data = run(signed(owner), VFOLDER_DOC, {"id": folder.id.hex})["vfolder"]
    assert data["id"] == str(folder.id) and data["name"] == "mine" and data["host"] == "local:volume1"
    assert data["quota_scope_id"] == f"user:{owner.pk}" and data["user"] == str(owner.pk)
    assert data["user_email"] == owner.email and data["group"] is None and data["group_name"] is None
    assert data["usage_mode"] == "model" and data["permission"] == "rw" and data["ownership_type"] == "user"
    assert data["cloneable"] is True and data["status"] == "ready" and data["unmanaged_path"] is None
    assert data["max_size"] == 0 and data["cur_size"] == 0 and data["created_at"] == folder.created_at.isoformat()
    assert run(signed(outsider), VFOLDER_DOC, {"id": folder.id.hex})["vfolder"] is None
    assert run(signed(owner), VFOLDER_DOC, {"id": "00000000-0000-0000-0000-000000000000"})["vfolder"] is None
    bad = signed(owner).post("/admin/gql", {"query": VFOLDER_DOC, "variables": {"id": "not-an-id"}})
    assert bad.status_code == 400 and slug(bad) == "invalid-api-params"


def test_storage_volumes_show_the_hosts_as_the_client_prints_them(signed, superadmin, host):
    api = signed(superadmin)
    listed = run(api, STORAGE_LIST_DOC, page()(None))["storage_volume_list"]
    assert listed["total_count"] == 1
    assert listed["items"] == [{"id": "local:volume1", "backend": "vfs", "capabilities": ["vfolder", "quota"]}]
    info = run(api, STORAGE_INFO_DOC, {"vfolder_host": "local:volume1"})["storage_volume"]
    assert info["path"] == str(host.root) and info["fsprefix"] == "."
    assert json.loads(info["hardware_metadata"])["status"] == "healthy"
    assert set(json.loads(info["performance_metric"])) >= {"iops_read", "iops_write"}
    usage = json.loads(run(api, "query { storage_volume(id: \"local:volume1\") { usage proxy name } }")
                       ["storage_volume"]["usage"])
    assert usage["capacity_bytes"] >= usage["used_bytes"] > 0
    missing = api.post("/admin/gql", {"query": STORAGE_INFO_DOC, "variables": {"vfolder_host": "nope:none"}})
    assert missing.status_code == 404


def test_storage_volume_list_pages_consistently_and_filters(signed, superadmin, host):
    from vfolders.models import StorageHost

    for name in ("beta:vol", "alpha:vol"):
        StorageHost.objects.create(name=name, capabilities=["vfolder"])
    StorageHost.objects.create(name="gone:vol", is_active=False)
    api = signed(superadmin)
    seen, offset, total = [], 0, None
    while total is None or offset < total:
        data = run(api, STORAGE_LIST_DOC, {**page()(None), "limit": 2, "offset": offset})["storage_volume_list"]
        total = data["total_count"]
        seen += [item["id"] for item in data["items"]]
        offset += len(data["items"])
    assert seen == ["alpha:vol", "beta:vol", "local:volume1"] and total == 3
    filtered = run(api, STORAGE_LIST_DOC, {**page()(None), "filter": 'id != "local:volume1"', "order": "-id"})
    assert [i["id"] for i in filtered["storage_volume_list"]["items"]] == ["beta:vol", "alpha:vol"]
    bad = api.post("/admin/gql", {"query": STORAGE_LIST_DOC, "variables": {**page()(None), "filter": "path == 1"}})
    assert bad.status_code == 400


def test_a_quota_scope_reports_usage_and_the_limit_that_applies(signed, owner, superadmin, make_folder, host):
    folder = make_folder(owner, "data")
    (folder.path / "a.bin").write_bytes(b"x" * 1000)
    (folder.path / "b.bin").write_bytes(b"y" * 24)
    qsid = f"user:{owner.pk}"
    variables = {"storage_host_name": host.name, "quota_scope_id": qsid}
    details = run(signed(owner), QUOTA_DOC, variables)["quota_scope"]["details"]
    assert details == {"usage_bytes": 1024, "usage_count": 2, "hard_limit_bytes": None}
    owner.resource_policy.max_quota_scope_size = 10 * 2**40  # past 2**31: a BigInt
    owner.resource_policy.save()
    details = run(signed(owner), QUOTA_DOC, variables)["quota_scope"]["details"]
    assert details["hard_limit_bytes"] == 10 * 2**40
    full = run(signed(owner), "query($h: String!, $q: String!) { quota_scope(storage_host_name: $h, "
                              "quota_scope_id: $q) { id quota_scope_id storage_host_name } }",
               {"h": host.name, "q": qsid})["quota_scope"]
    assert full == {"id": f"QuotaScope:{host.name}/{qsid}", "quota_scope_id": qsid, "storage_host_name": host.name}


def test_set_quota_scope_overrides_the_policy_and_unset_restores_it(signed, owner, superadmin, make_folder, host,
                                                                     transfers):
    from vfolders.models import QuotaScope

    make_folder(owner, "data")
    qsid = f"user:{owner.pk}"
    api = signed(superadmin)
    answer = run(api, SET_QUOTA_DOC, {"storage_host_name": host.name, "quota_scope_id": qsid,
                                      "input": {"hard_limit_bytes": 100}})
    assert answer["set_quota_scope"]["quota_scope"] == {"quota_scope_id": qsid, "storage_host_name": host.name}
    assert QuotaScope.objects.get(host=host, quota_scope_id=qsid).limit_bytes == 100
    details = run(signed(owner), QUOTA_DOC, {"storage_host_name": host.name, "quota_scope_id": qsid})
    assert details["quota_scope"]["details"]["hard_limit_bytes"] == 100
    refused = signed(owner).post("/folders/data/request-upload", {"path": "big.bin", "size": 101})
    assert refused.status_code == 412 and slug(refused) == "quota-exceeded"
    run(api, SET_QUOTA_DOC, {"storage_host_name": host.name, "quota_scope_id": qsid, "input": {}})  # no change
    assert QuotaScope.objects.get(host=host, quota_scope_id=qsid).limit_bytes == 100
    run(api, UNSET_QUOTA_DOC, {"storage_host_name": host.name, "quota_scope_id": qsid})
    assert QuotaScope.objects.get(host=host, quota_scope_id=qsid).limit_bytes is None
    transfers(owner).upload("data", "big.bin", b"z" * 101)


def test_the_domain_admin_of_the_scope_sets_it_and_bad_input_changes_nothing(signed, owner, domain_admin, host):
    from vfolders.models import QuotaScope

    qsid = f"user:{owner.pk}"
    api = signed(domain_admin)
    run(api, SET_QUOTA_DOC, {"storage_host_name": host.name, "quota_scope_id": qsid,
                             "input": {"hard_limit_bytes": "123456789012"}})
    assert QuotaScope.objects.get(host=host, quota_scope_id=qsid).limit_bytes == 123456789012
    for variables, status in (
            ({"storage_host_name": host.name, "quota_scope_id": qsid, "input": {"hard_limit_bytes": -1}}, 400),
            ({"storage_host_name": host.name, "quota_scope_id": "user:nope", "input": {"hard_limit_bytes": 1}}, 400),
            ({"storage_host_name": host.name, "quota_scope_id": "group:" + str(owner.pk),
              "input": {"hard_limit_bytes": 1}}, 400),
            ({"storage_host_name": "nope:none", "quota_scope_id": qsid, "input": {"hard_limit_bytes": 1}}, 404),
            ({"storage_host_name": host.name, "quota_scope_id": f"user:{'0' * 32}",
              "input": {"hard_limit_bytes": 1}}, 404)):
        response = api.post("/admin/gql", {"query": SET_QUOTA_DOC, "variables": variables})
        assert response.status_code == status, (variables, response.content)
    assert list(QuotaScope.objects.values_list("quota_scope_id", "limit_bytes")) == [(qsid, 123456789012)]


def test_the_django_admin_shows_the_limit_set_for_a_scope(client, owner, superadmin, host):
    from vfolders import services

    services.set_quota_scope(superadmin, host.name, f"user:{owner.pk}", 2048)
    client.force_login(superadmin)
    page_html = client.get("/admin/vfolders/quotascope/").content.decode()
    assert "2 KiB (set for this scope)" in page_html
