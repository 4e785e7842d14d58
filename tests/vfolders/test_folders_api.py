"""The /folders API: hosts, create, list, info, rename, options, files, mkdir,
and the shapes the 23.09, 24.09 and 26.x clients read."""
import json

import pytest

from helpers import slug

pytestmark = pytest.mark.django_db

CLIENT_CREATE = {"name": "mydata", "host": "local:volume1", "unmanaged_path": None, "group": None,
                 "usage_mode": "general", "permission": "rw", "quota": "0", "cloneable": False}


def test_the_hosts_list_names_the_default_local_volume(signed, owner, host):
    resp = signed(owner).get("/folders/_/hosts")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["default"] == "local:volume1"
    assert body["allowed"] == ["local:volume1"]
    assert body["volume_info"]["local:volume1"]["backend"] == "vfs"


def test_ensure_default_storage_host_is_idempotent_and_grants_every_permission(host, defaults, vfroot):
    from accounts.models import Domain, KeypairResourcePolicy
    from vfolders import services
    from vfolders.models import ALL_HOST_PERMISSIONS, StorageHost

    services.ensure_default_storage_host()
    services.ensure_default_storage_host()
    assert StorageHost.objects.count() == 1
    assert (vfroot / "volume1").is_dir()
    assert Domain.objects.get(name="default").allowed_vfolder_hosts == {"local:volume1": ALL_HOST_PERMISSIONS}
    assert KeypairResourcePolicy.objects.get(name="default").allowed_vfolder_hosts == {
        "local:volume1": ALL_HOST_PERMISSIONS}


def test_a_user_without_host_permissions_sees_no_host_and_cannot_create(signed, make_user, host):
    from accounts.models import Domain, KeypairResourcePolicy
    from accounts.services import assign_keypair_policy

    lonely_domain = Domain.objects.create(name="lonely")
    policy = KeypairResourcePolicy.objects.create(name="nohosts")
    user = make_user("lonely@example.com", domain=lonely_domain)
    assign_keypair_policy([user.main_keypair], policy)
    api = signed(user)
    assert api.get("/folders/_/hosts").json() == {"default": None, "allowed": [], "volume_info": {}}
    resp = api.post("/folders", dict(CLIENT_CREATE))
    assert resp.status_code == 400
    assert slug(resp) == "vfolder-permission-error"
    assert "create-vfolder" in resp.json()["msg"]


def test_the_client_create_body_makes_a_folder_on_disk(signed, owner, host, vfroot):
    from vfolders.models import VFolder

    resp = signed(owner).post("/folders", dict(CLIENT_CREATE))
    assert resp.status_code == 201, resp.content
    body = resp.json()
    folder = VFolder.objects.get()
    assert body["id"] == folder.id.hex and body["name"] == "mydata"
    assert body["quota_scope_id"] == f"user:{owner.pk}"
    assert body["host"] == "local:volume1" and body["status"] == "ready"
    assert body["ownership_type"] == "user" and body["user"] == str(owner.pk) and body["group"] is None
    assert body["creator"] == owner.email and body["max_size"] == 0 and body["cloneable"] is False
    assert folder.path.is_dir()
    assert str(folder.path).startswith(str(vfroot / "volume1" / f"user-{owner.pk.hex}"))


def test_names_are_unique_per_owner_but_free_across_owners(signed, owner, member, host):
    assert signed(owner).post("/folders", dict(CLIENT_CREATE)).status_code == 201
    again = signed(owner).post("/folders", dict(CLIENT_CREATE))
    assert again.status_code == 400 and slug(again) == "vfolder-already-exists"
    assert signed(member).post("/folders", dict(CLIENT_CREATE)).status_code == 201


@pytest.mark.parametrize("name", [".ssh", ".jupyter", ".bashrc", ".zsh_profile", "/etc", "..", ".", "a/b", "",
                                  "x" * 65, "bad name", "_", "invitations", "purge", "nul\x00"])
def test_reserved_and_malformed_names_are_refused(signed, owner, host, name, vfroot):
    resp = signed(owner).post("/folders", {**CLIENT_CREATE, "name": name})
    assert resp.status_code == 400, resp.content
    assert slug(resp) == "invalid-api-params"
    assert not any((vfroot / "volume1").iterdir())


def test_dot_folders_are_allowed(signed, owner, host):
    resp = signed(owner).post("/folders", {**CLIENT_CREATE, "name": ".local"})
    assert resp.status_code == 201, resp.content


def test_the_folder_count_limit_of_the_user_policy_applies(signed, owner, host):
    from accounts.models import UserResourcePolicy

    UserResourcePolicy.objects.filter(name="default").update(max_vfolder_count=2)
    api = signed(owner)
    for name in ("one", "two"):
        assert api.post("/folders", {**CLIENT_CREATE, "name": name}).status_code == 201
    resp = api.post("/folders", {**CLIENT_CREATE, "name": "three"})
    assert resp.status_code == 412 and slug(resp) == "quota-exceeded"


def test_an_unknown_host_is_refused(signed, owner, host):
    resp = signed(owner).post("/folders", {**CLIENT_CREATE, "host": "nowhere:vol"})
    assert resp.status_code == 400 and slug(resp) == "invalid-api-params"


def test_get_folders_accepts_the_clients_json_body_and_lists_what_the_user_may_use(signed, owner, member,
                                                                                     make_folder):
    make_folder(owner, "mine")
    make_folder(member, "theirs")
    resp = signed(owner).get("/folders", data={"all": False})
    assert resp.status_code == 200, resp.content
    listed = resp.json()
    assert [f["name"] for f in listed] == ["mine"]
    assert listed[0]["is_owner"] is True and listed[0]["permission"] == "rw" and listed[0]["type"] == "user"


def test_the_folder_list_costs_a_constant_number_of_queries(signed, owner, make_folder, make_user,
                                                            django_assert_max_num_queries):
    from vfolders import services

    friends = [make_user(f"friend{i}@example.com") for i in range(3)]
    for i in range(6):
        folder = make_folder(owner, f"f{i}")
        inv = services.invite(owner, folder.id.hex, "ro", [friends[i % 3].email])
        assert inv
    for friend in friends:
        make_folder(friend, f"own-{friend.username}")
        for invitation in services.invitations_received(friend):
            services.accept_invitation(friend, invitation.id)
    api = signed(friends[0])
    with django_assert_max_num_queries(6):  # 2 for the signature, the folders, memberships and grants
        resp = api.get("/folders")
    assert resp.status_code == 200
    assert sorted(f["name"] for f in resp.json()) == ["f0", "f3", "own-friend0"]
    api = signed(owner)
    with django_assert_max_num_queries(6):
        resp = api.get("/folders")
    assert len(resp.json()) == 6


def test_info_resolves_names_dashed_ids_and_hex_ids(signed, owner, make_folder):
    folder = make_folder(owner, "infodir")
    (folder.path / "a.txt").write_bytes(b"12345")
    api = signed(owner)
    for ref in ("infodir", str(folder.id), folder.id.hex):
        resp = api.get(f"/folders/{ref}")
        assert resp.status_code == 200, resp.content
        body = resp.json()
        assert body["id"] == folder.id.hex and body["numFiles"] == 1 and body["used_bytes"] == 5
        assert body["is_owner"] is True and body["type"] == "user" and body["status"] == "ready"
    assert slug(api.get("/folders/nothing-here")) == "object-not-found"


def test_the_id_lookup_takes_a_body_or_a_query(signed, owner, make_folder):
    folder = make_folder(owner, "lookup")
    api = signed(owner)
    assert api.get("/folders/_/id", data={"name": "lookup"}).json() == {"id": folder.id.hex}
    assert api.get("/folders/_/id?name=lookup").json() == {"id": folder.id.hex}
    assert api.get("/folders/_/id?name=missing").status_code == 404


def test_rename_and_update_options(signed, owner, make_folder):
    folder = make_folder(owner, "before")
    make_folder(owner, "taken")
    api = signed(owner)
    clash = api.post("/folders/before/rename", {"new_name": "taken"})
    assert clash.status_code == 400 and slug(clash) == "vfolder-already-exists"
    assert api.post("/folders/before/rename", {"new_name": "after"}).status_code == 201
    resp = api.post("/folders/after/update-options", {"permission": "ro", "cloneable": True})
    assert resp.status_code == 201
    folder.refresh_from_db()
    assert (folder.name, folder.permission, folder.cloneable) == ("after", "ro", True)


def test_files_answers_both_the_json_string_and_the_items_shapes(signed, owner, make_folder):
    folder = make_folder(owner, "listing")
    (folder.path / "sub").mkdir()
    (folder.path / "sub" / "x.bin").write_bytes(b"abc")
    (folder.path / "top.txt").write_bytes(b"hello")
    api = signed(owner)
    resp = api.get("/folders/listing/files", data={"path": "."})  # 23.09: a JSON body
    assert resp.status_code == 200, resp.content
    body = resp.json()
    files = json.loads(body["files"])
    assert [f["filename"] for f in files] == ["sub", "top.txt"]
    assert files[1]["size"] == 5 and files[1]["mode"].startswith("-rw") and isinstance(files[1]["mtime"], float)
    assert files[0]["mode"].startswith("d")
    assert [(i["name"], i["type"]) for i in body["items"]] == [("sub", "directory"), ("top.txt", "file")]
    assert body["items"][1]["modified"].endswith("+00:00")
    nested = api.get("/folders/listing/files?path=sub").json()  # 24.09: a query parameter
    assert [i["name"] for i in nested["items"]] == ["x.bin"]
    missing = api.get("/folders/listing/files?path=nope")
    assert missing.status_code == 404 and slug(missing) == "object-not-found"


def test_mkdir_answers_201_with_results_for_one_path_or_many(signed, owner, make_folder):
    folder = make_folder(owner, "dirs")
    api = signed(owner)
    one = api.post("/folders/dirs/mkdir", {"path": "a", "parents": False, "exist_ok": False})
    assert one.status_code == 201
    assert one.json() == {"results": {"success": [{"item": "a", "msg": None}], "failed": []}}
    again = api.post("/folders/dirs/mkdir", {"path": "a", "parents": False, "exist_ok": False})
    assert again.status_code == 400 and slug(again) == "vfolder-operation-failed"
    assert api.post("/folders/dirs/mkdir", {"path": "a", "exist_ok": True}).status_code == 201
    orphan = api.post("/folders/dirs/mkdir", {"path": "x/y/z"})
    assert orphan.status_code == 404
    many = api.post("/folders/dirs/mkdir", {"path": ["b", "a", "c/d"], "parents": True, "exist_ok": False})
    assert many.status_code == 201
    results = many.json()["results"]
    assert [r["item"] for r in results["success"]] == ["b", "c/d"]
    assert [r["item"] for r in results["failed"]] == ["a"] and "exists" in results["failed"][0]["msg"]
    assert (folder.path / "c" / "d").is_dir()


def test_rename_move_and_delete_files(signed, owner, make_folder):
    folder = make_folder(owner, "ops")
    (folder.path / "a.txt").write_bytes(b"a")
    (folder.path / "d").mkdir()
    (folder.path / "d" / "inner.txt").write_bytes(b"i")
    api = signed(owner)
    assert api.post("/folders/ops/rename-file", {"target_path": "a.txt", "new_name": "b.txt"}).status_code == 200
    assert (folder.path / "b.txt").exists() and not (folder.path / "a.txt").exists()
    clash = api.post("/folders/ops/rename-file", {"target_path": "b.txt", "new_name": "d"})
    assert clash.status_code == 400 and slug(clash) == "vfolder-operation-failed"
    moved = api.post("/folders/ops/move-file", {"src": "b.txt", "dst": "d"})
    assert moved.status_code == 200 and moved.json() == {"path": "d/b.txt"}
    not_recursive = api.delete("/folders/ops/delete-files", {"files": ["d"], "recursive": False})
    assert not_recursive.status_code == 400 and (folder.path / "d").is_dir()
    assert api.post("/folders/ops/delete-files", {"files": ["d/b.txt"]}).status_code == 200
    assert api.delete("/folders/ops/delete-files", {"files": ["d"], "recursive": True}).status_code == 200
    assert list(folder.path.iterdir()) == []


def test_deleting_a_missing_file_changes_nothing(signed, owner, make_folder):
    folder = make_folder(owner, "careful")
    (folder.path / "keep.txt").write_bytes(b"k")
    resp = signed(owner).delete("/folders/careful/delete-files", {"files": ["keep.txt", "missing.txt"]})
    assert resp.status_code == 404
    assert (folder.path / "keep.txt").exists()


def test_mkdir_in_a_folder_in_the_trash_is_refused(signed, owner, make_folder):
    make_folder(owner, "gone")
    api = signed(owner)
    assert api.delete("/folders/gone").status_code == 204
    assert api.post("/folders/gone/mkdir", {"path": "x"}).status_code == 404


def test_the_allowed_types_and_all_hosts_views(signed, owner, superadmin, host):
    assert signed(owner).get("/folders/_/allowed-types").json() == ["user", "group"]
    assert signed(owner).get("/folders/_/all-hosts").status_code == 403
    assert signed(superadmin).get("/folders/_/all_hosts").json() == {"default": "local:volume1",
                                                                       "allowed": ["local:volume1"]}
