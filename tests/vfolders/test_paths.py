"""Path safety: every way out of a folder is refused with a problem+json error
and leaves the disk exactly as it was, through every file endpoint and the
upload target."""
import os

import pytest

from helpers import slug, tree_snapshot

pytestmark = pytest.mark.django_db

ESCAPES = [
    "../x", "a/../../x", "..", "../", "sub/../../../etc", "/etc/passwd", "/", "a\x00b", "..\\..\\x",
    "a\\b", "line\nbreak", "tab\there",
]


@pytest.fixture
def world(owner, member, make_folder, tmp_path, vfroot):
    """The owner's folder with escape hatches planted by a session, an outside
    directory with a secret, and another user's folder."""
    folder = make_folder(owner, "box")
    other = make_folder(member, "victim")
    (other.path / "private.txt").write_bytes(b"member's")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (folder.path / "sub").mkdir()
    (folder.path / "sub" / "ok.txt").write_bytes(b"fine")
    os.symlink(outside, folder.path / "evil")
    os.symlink(outside / "secret.txt", folder.path / "secret-link")
    os.symlink(other.path, folder.path / "neighbour")
    os.symlink("..", folder.path / "up")
    os.symlink("sub", folder.path / "inside")  # a link that stays inside is fine
    return folder, outside, other


def calls(path):
    """(method, target, body) for every file endpoint with ``path`` in each path field."""
    return [
        ("get", "/folders/box/files", {"path": path}),
        ("post", "/folders/box/mkdir", {"path": path, "parents": True, "exist_ok": True}),
        ("post", "/folders/box/mkdir", {"path": [path], "parents": True, "exist_ok": True}),
        ("post", "/folders/box/request-upload", {"path": path, "size": 3}),
        ("post", "/folders/box/request-download", {"path": path}),
        ("post", "/folders/box/rename-file", {"target_path": path, "new_name": "renamed"}),
        ("post", "/folders/box/rename-file", {"target_path": "sub/ok.txt", "new_name": path}),
        ("post", "/folders/box/move-file", {"src": path, "dst": "sub"}),
        ("post", "/folders/box/move-file", {"src": "sub/ok.txt", "dst": path}),
        ("delete", "/folders/box/delete-files", {"files": [path], "recursive": True}),
    ]


@pytest.mark.parametrize("path", ESCAPES)
def test_escaping_paths_are_refused_by_every_endpoint_and_change_nothing(signed, owner, world, vfroot, path):
    folder, outside, other = world
    api = signed(owner)
    before = tree_snapshot(vfroot, outside)
    for method, target, body in calls(path):
        resp = getattr(api, method)(target, data=body)
        assert resp.status_code == 400, (method, target, body, resp.content)
        assert slug(resp) == "invalid-api-params", (target, body)
        assert resp.json()["msg"], resp.content
    assert tree_snapshot(vfroot, outside) == before


@pytest.mark.parametrize("path", ["evil", "evil/secret.txt", "evil/new", "secret-link", "neighbour",
                                  "neighbour/private.txt", "up", "up/box", "up/../x"])
def test_symlinks_pointing_outside_are_refused_and_change_nothing(signed, owner, world, vfroot, path):
    folder, outside, other = world
    api = signed(owner)
    before = tree_snapshot(vfroot, outside)
    for method, target, body in calls(path):
        if target.endswith("delete-files") or (target.endswith("rename-file") and body.get("target_path") == path):
            continue  # deleting or renaming the link itself is harmless; checked below
        if target.endswith("move-file") and body.get("src") == path:
            continue
        if body.get("new_name") == path:
            continue  # a new name is a name in the same directory (sub/evil), not a path
        resp = getattr(api, method)(target, data=body)
        assert resp.status_code == 400, (method, target, body, resp.content)
        # "points outside the folder", or the link is in the way ("Already exists", "Not a directory")
        assert slug(resp) in ("invalid-api-params", "vfolder-operation-failed"), resp.content
    assert tree_snapshot(vfroot, outside) == before


def test_deleting_a_link_removes_the_link_not_its_target(signed, owner, world):
    folder, outside, other = world
    resp = signed(owner).delete("/folders/box/delete-files", {"files": ["evil", "neighbour"], "recursive": True})
    assert resp.status_code == 200, resp.content
    assert not os.path.lexists(folder.path / "evil")
    assert (outside / "secret.txt").read_bytes() == b"secret"
    assert (other.path / "private.txt").read_bytes() == b"member's"


def test_links_that_stay_inside_the_folder_work(signed, owner, world, transfers):
    folder, outside, other = world
    api = signed(owner)
    listed = api.get("/folders/box/files", data={"path": "inside"}).json()
    assert [i["name"] for i in listed["items"]] == ["ok.txt"]
    t = transfers(owner)
    assert t.body(t.download("box", "inside/ok.txt")) == b"fine"


def test_the_listing_shows_links_as_links(signed, owner, world):
    items = signed(owner).get("/folders/box/files").json()["items"]
    kinds = {i["name"]: i["type"] for i in items}
    assert kinds["evil"] == "symlink" and kinds["sub"] == "directory"


def test_a_directory_swapped_for_a_link_after_the_token_is_refused_at_completion(owner, world, transfers, vfroot):
    folder, outside, other = world
    t = transfers(owner)
    target = t.request_upload("box", "later/f.txt", 3)
    os.symlink(outside, folder.path / "later")  # a session plants the link while the upload runs
    before = tree_snapshot(outside)
    resp = t.patch(target, 0, b"abc")
    assert resp.status_code == 400 and slug(resp) == "invalid-api-params"
    assert tree_snapshot(outside) == before
    assert not (outside / "f.txt").exists()
    assert [p for p in (vfroot / "volume1" / ".staging").rglob("*.part")] == []


def test_a_download_token_cannot_follow_a_link_planted_later(owner, world, transfers):
    folder, outside, other = world
    (folder.path / "swap").mkdir()
    (folder.path / "swap" / "secret.txt").write_bytes(b"harmless")
    t = transfers(owner)
    target = t.request_download("box", "swap/secret.txt")
    (folder.path / "swap" / "secret.txt").unlink()
    (folder.path / "swap").rmdir()
    os.symlink(outside, folder.path / "swap")
    resp = t.client.get(target)
    assert resp.status_code == 400 and b"secret" not in resp.content


@pytest.mark.parametrize("raw,expected", [
    (".", ()), ("", ()), ("a//b/./c/", ("a", "b", "c")), ("./a", ("a",)), ("with space", ("with space",)),
    ("ünïcødé/파일", ("ünïcødé", "파일")),
])
def test_the_lexical_rules_normalise_harmless_spellings(raw, expected):
    from storageproxy.paths import clean_relpath

    assert clean_relpath(raw) == expected


@pytest.mark.parametrize("raw", ESCAPES + [None, 5, "x" * 256, "a/" * 2100])
def test_the_lexical_rules_refuse_everything_else(raw):
    from storageproxy.paths import UnsafePath, clean_relpath

    with pytest.raises(UnsafePath):
        clean_relpath(raw)
