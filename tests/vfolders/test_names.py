"""Names of folders, files and paths (``vfolders.names``): one set of rules for
create and rename, the API and the web form; and typed fields of the folder
API.  Every refusal is 400 ``invalid-api-params`` naming the field and leaves
the folder table and the disk as they were."""

import pytest

from helpers import slug, tree_snapshot

pytestmark = pytest.mark.django_db

BAD_FOLDER_NAMES = [
    "data\n", "data\r\n", "\ndata", " data", "data ", "da ta", "data\t", "da\x00ta", "da\x7fta", "da\x85ta",
    "da\u2028ta", "da\u202eta", "a/b", "a\\b", "..", ".", "...", "C:data", "data:stream", "CON", "nul", "Com1",
    "nul.txt", "data.", "x" * 65, "", ".bashrc", "invitations", "\ud800",
]
BAD_NEW_FILE_NAMES = [
    "x\n", " x", "x ", "x\t", "x\x00", "x\x1b[31m", "x\x7f", "x\x9b", "x\u202egpj.exe", "C:evil", "a:stream",
    "CON", "aux.txt", "lpt9", "trail.", "a\\b", "..", "x" * 256, "\u00e9" * 128, "\ud800",
]


def folder_rows():
    from vfolders.models import VFolder

    return sorted(VFolder.objects.values_list("id", "name", "status", "permission", "cloneable", "usage_mode"))


# --- the rules themselves ---------------------------------------------------------------------

@pytest.mark.parametrize("name", BAD_FOLDER_NAMES)
def test_the_folder_name_rules_refuse_hostile_names(name):
    from storageproxy import names

    with pytest.raises(names.InvalidName, match="^new_name: "):
        names.check_folder_name(name, "new_name")


@pytest.mark.parametrize("name", ["data", ".local", "my-data_2", "데이터", "a.b", "x" * 64, "console", "nulls"])
def test_the_folder_name_rules_accept_ordinary_names(name):
    from storageproxy import names

    assert names.check_folder_name(name) == name


@pytest.mark.parametrize("name", BAD_NEW_FILE_NAMES + ["a/b", "."])
def test_new_file_names_must_be_one_safe_component(name):
    from storageproxy import names

    with pytest.raises(names.InvalidName):
        names.check_component(name, new=True)


@pytest.mark.parametrize("name", ["C:evil", "a:stream", "CON", "aux.txt", "trail."])
def test_existing_names_that_are_only_unsafe_on_windows_can_still_be_referred_to(name):
    from storageproxy import names

    assert names.split_path(f"sub/{name}") == ("sub", name)
    with pytest.raises(names.InvalidName):
        names.split_path(f"sub/{name}", new=True)


@pytest.mark.parametrize("raw", ["a/b\n", "a /b", "a/ b", "a\u2029b", "a/\x85", "x" * 4097, ("a" * 200 + "/") * 21])
def test_paths_follow_the_name_rules_in_every_component_and_in_length(raw):
    from storageproxy import names

    with pytest.raises(names.InvalidName):
        names.split_path(raw)


# --- folder names through the API and the web form -------------------------------------------

@pytest.mark.parametrize("name", BAD_FOLDER_NAMES)
def test_creating_a_folder_with_a_hostile_name_is_refused_and_creates_nothing(signed, owner, host, vfroot, name):
    before_rows, before_disk = folder_rows(), tree_snapshot(vfroot)
    resp = signed(owner).post("/folders", {"name": name})
    assert resp.status_code == 400, resp.content
    assert slug(resp) == "invalid-api-params"
    assert resp.json()["msg"].startswith("name"), resp.json()
    assert folder_rows() == before_rows
    assert tree_snapshot(vfroot) == before_disk


@pytest.mark.parametrize("name", BAD_FOLDER_NAMES)
def test_renaming_a_folder_follows_the_same_rules_as_creating_it(signed, owner, make_folder, vfroot, name):
    make_folder(owner, "data")
    before_rows, before_disk = folder_rows(), tree_snapshot(vfroot)
    resp = signed(owner).post("/folders/data/rename", {"new_name": name})
    assert resp.status_code == 400, resp.content
    assert slug(resp) == "invalid-api-params"
    assert resp.json()["msg"].startswith("new_name"), resp.json()
    assert folder_rows() == before_rows
    assert tree_snapshot(vfroot) == before_disk


def test_a_folder_reference_is_matched_exactly_never_trimmed(signed, owner, make_folder):
    make_folder(owner, "data")
    api = signed(owner)
    for ref in ("data%0A", "%20data", "data%00", "da%C2%85ta"):
        resp = api.get(f"/folders/{ref}")
        assert resp.status_code == 404, (ref, resp.content)
        assert slug(resp) == "object-not-found"
        resp = api.delete(f"/folders/{ref}")
        assert resp.status_code == 404, (ref, resp.content)
    assert [r[2] for r in folder_rows()] == ["ready"]


@pytest.mark.parametrize("name", ["data\n", " data", "nul", "data."])
def test_the_web_form_shows_the_name_rule_beside_the_field(client, owner, host, vfroot, name):
    client.force_login(owner)
    before_rows, before_disk = folder_rows(), tree_snapshot(vfroot)
    resp = client.post("/ui/folders/", {"name": name, "host": "local:volume1", "usage_mode": "general",
                                        "permission": "rw"})
    assert resp.status_code == 400
    errors = resp.context["form"].errors
    assert list(errors) == ["name"], errors
    assert folder_rows() == before_rows
    assert tree_snapshot(vfroot) == before_disk


def test_a_good_name_from_the_web_form_still_creates_the_folder(client, owner, host):
    client.force_login(owner)
    resp = client.post("/ui/folders/", {"name": "notes", "host": "local:volume1", "usage_mode": "general",
                                        "permission": "rw"})
    assert resp.status_code == 302
    assert [r[1] for r in folder_rows()] == ["notes"]


# --- file and directory names ------------------------------------------------------------------

@pytest.fixture
def box(owner, make_folder):
    folder = make_folder(owner, "box")
    (folder.path / "sub").mkdir()
    (folder.path / "sub" / "ok.txt").write_bytes(b"fine")
    return folder


def creating_calls(name):
    """Every request that would create a file or directory called ``name``."""
    return [
        ("post", "/folders/box/request-upload", {"path": name, "size": 3}, "path"),
        ("post", "/folders/box/request-upload", {"path": f"sub/{name}", "size": 0}, "path"),
        ("post", "/folders/box/request-upload", {"path": f"{name}/x.txt", "size": 0}, "path"),
        ("post", "/folders/box/mkdir", {"path": name}, "path"),
        ("post", "/folders/box/mkdir", {"path": [f"sub/{name}"], "parents": True}, "path"),
        ("post", "/folders/box/rename-file", {"target_path": "sub/ok.txt", "new_name": name}, "new_name"),
        ("post", "/folders/box/move-file", {"src": "sub/ok.txt", "dst": name}, "dst"),
    ]


@pytest.mark.parametrize("name", BAD_NEW_FILE_NAMES)
def test_hostile_file_names_are_refused_at_upload_mkdir_rename_and_move(signed, owner, box, vfroot, name):
    api = signed(owner)
    before = tree_snapshot(vfroot)
    for method, target, body, field in creating_calls(name):
        resp = getattr(api, method)(target, data=body)
        assert resp.status_code == 400, (target, body, resp.content)
        assert slug(resp) == "invalid-api-params"
        assert resp.json()["msg"].startswith(field), (target, resp.json())
    assert tree_snapshot(vfroot) == before


@pytest.mark.parametrize("path", ["sub/ok.txt\n", " sub/ok.txt", "sub /ok.txt", "sub/ok.txt\x00", "sub/\x85ok.txt"])
def test_references_with_control_characters_or_padding_do_not_reach_the_file(signed, owner, box, vfroot, path):
    api = signed(owner)
    before = tree_snapshot(vfroot)
    for method, target, body in [
        ("get", "/folders/box/files", {"path": path}),
        ("post", "/folders/box/request-download", {"path": path}),
        ("delete", "/folders/box/delete-files", {"files": [path]}),
        ("post", "/folders/box/rename-file", {"target_path": path, "new_name": "renamed"}),
        ("post", "/folders/box/move-file", {"src": path, "dst": "."}),
    ]:
        resp = getattr(api, method)(target, data=body)
        assert resp.status_code == 400, (target, body, resp.content)
        assert slug(resp) == "invalid-api-params"
    assert tree_snapshot(vfroot) == before


def test_a_file_a_session_named_unsafely_for_windows_can_still_be_read_and_deleted(signed, owner, box, transfers):
    (box.path / "C:evil").write_bytes(b"drive")
    t = transfers(owner)
    resp = t.download("box", "C:evil")
    assert resp.status_code == 200 and t.body(resp) == b"drive"
    resp = signed(owner).delete("/folders/box/delete-files", data={"files": ["C:evil"]})
    assert resp.status_code == 200, resp.content
    assert not (box.path / "C:evil").exists()


def test_the_web_mkdir_form_takes_one_name_and_the_upload_form_a_safe_one(client, owner, box):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(owner)
    base = f"/ui/folders/{box.id}/"
    before = tree_snapshot(box.path)
    resp = client.post(base + "mkdir/", {"path": ".", "name": "a/b"}, follow=True)
    assert any("single name" in str(m) for m in resp.context["messages"])
    resp = client.post(base + "upload/", {"path": ".", "files": [SimpleUploadedFile("CON.txt", b"x")]}, follow=True)
    assert any("reserved device name" in str(m) for m in resp.context["messages"])
    assert tree_snapshot(box.path) == before


# --- typed fields ------------------------------------------------------------------------------

TYPED_CASES = [
    ("post", "/folders", {"name": "new", "quota": "lots"}, "quota"),
    ("post", "/folders", {"name": "new", "quota": -1}, "quota"),
    ("post", "/folders", {"name": "new", "quota": [1]}, "quota"),
    ("post", "/folders", {"name": "new", "quota": True}, "quota"),
    ("post", "/folders", {"name": "new", "quota": "1e999"}, "quota"),
    ("post", "/folders", {"name": "new", "permission": 5}, "permission"),
    ("post", "/folders", {"name": "new", "permission": ["rw"]}, "permission"),
    ("post", "/folders", {"name": "new", "usage_mode": {"a": 1}}, "usage_mode"),
    ("post", "/folders", {"name": "new", "cloneable": "perhaps"}, "cloneable"),
    ("post", "/folders", {"name": "new", "cloneable": []}, "cloneable"),
    ("post", "/folders", {"name": 5}, "name"),
    ("post", "/folders", {"name": ["new"]}, "name"),
    ("post", "/folders", {"name": None}, "name"),
    ("post", "/folders", {"name": "new", "host": 7}, "host"),
    ("post", "/folders", {"name": "new", "host": "local:\ud800"}, "host"),
    ("post", "/folders", {"name": "new", "group": {"id": 1}}, "group"),
    ("post", "/folders", {"name": "new", "group": "p\x00"}, "group"),
    ("get", "/folders", {"all": "sometimes"}, "all"),
    ("get", "/folders", {"group_id": ["x"]}, "group_id"),
    ("get", "/folders", {"owner_user_email": "\ud800@x"}, "owner_user_email"),
    ("post", "/folders/data/rename", {"new_name": 12}, "new_name"),
    ("post", "/folders/data/update-options", {"permission": "all"}, "permission"),
    ("post", "/folders/data/update-options", {"cloneable": {"x": 1}}, "cloneable"),
    ("post", "/folders/data/request-upload", {"path": "f", "size": -1}, "size"),
    ("post", "/folders/data/request-upload", {"path": "f", "size": 1.5}, "size"),
    ("post", "/folders/data/request-upload", {"path": "f", "size": "many"}, "size"),
    ("post", "/folders/data/request-upload", {"path": "f", "size": True}, "size"),
    ("post", "/folders/data/request-upload", {"path": 3, "size": 1}, "path"),
    ("post", "/folders/data/request-download", {"path": "f", "archive": "zip?"}, "archive"),
    ("post", "/folders/data/request-download", {"path": ".", "format": "rar"}, "format"),
    ("post", "/folders/data/mkdir", {"path": "d", "parents": 2}, "parents"),
    ("post", "/folders/data/mkdir", {"path": {"d": 1}}, "path"),
    ("delete", "/folders/data/delete-files", {"files": [1, 2]}, "files"),
    ("delete", "/folders/data/delete-files", {"files": ["x"], "recursive": "deep"}, "recursive"),
    ("post", "/folders/data/invite", {"perm": "admin", "emails": ["member@example.com"]}, "perm"),
    ("post", "/folders/data/invite", {"emails": [1]}, "emails"),
    ("post", "/folders/data/invite", {"emails": ["member@example.com\x00"]}, "emails"),
    ("post", "/folders/data/invite", {"emails": [f"u{i}@example.com" for i in range(101)]}, "emails"),
    ("post", "/folders/invitations/accept", {"inv_id": 5}, "inv_id"),
    ("post", "/folders/invitations/accept", {"inv_id": "not-an-id"}, "inv_id"),
    ("delete", "/folders", {"vfolder_id": ["x"]}, "vfolder_id"),
    ("post", "/folders/purge", {"vfolder_id": "zzz"}, "vfolder_id"),
]


@pytest.mark.parametrize("method,target,body,field", TYPED_CASES,
                         ids=[f"{c[1]}-{c[3]}-{i}" for i, c in enumerate(TYPED_CASES)])
def test_wrong_types_and_values_get_400_naming_the_field_and_change_nothing(
        signed, owner, member, make_folder, vfroot, method, target, body, field):
    from vfolders.models import VFolderInvitation

    folder = make_folder(owner, "data")
    (folder.path / "f").write_bytes(b"f")
    before_rows, before_disk = folder_rows(), tree_snapshot(vfroot)
    resp = getattr(signed(owner), method)(target, data=body)
    assert resp.status_code == 400, resp.content
    assert slug(resp) == "invalid-api-params"
    assert field in resp.json()["msg"], resp.json()
    assert folder_rows() == before_rows
    assert tree_snapshot(vfroot) == before_disk
    assert not VFolderInvitation.objects.exists()


def test_the_clients_own_quota_spelling_is_still_accepted(signed, owner, host):
    for name, quota in (("q1", "0"), ("q2", None), ("q3", "10g"), ("q4", 1024)):
        resp = signed(owner).post("/folders", {"name": name, "host": "local:volume1", "quota": quota,
                                               "usage_mode": "general", "permission": "rw", "cloneable": False,
                                               "group": None, "unmanaged_path": None})
        assert resp.status_code == 201, resp.content
