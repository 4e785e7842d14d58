"""Property-based fuzzing of the ``/folders`` API: whatever a signed user sends
to create, rename, mkdir, rename-file, delete-files, ls, request-upload,
invite and update-options (plausible values, hostile names, wrong types), the
answer is never a 5xx, and a refused request leaves the folder table, the
invitations and the files on disk exactly as they were."""
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from helpers import tree_snapshot
from vfolders.models import VFolder, VFolderGrant, VFolderInvitation

pytestmark = pytest.mark.django_db

NASTY_NAMES = [
    "", " ", ".", "..", "...", "\x00", "\ud800", "data\n", " data", "data ", "a/b", "a\\b", "..\\..\\x", "../x",
    "/etc/passwd", "C:evil", "a:stream", "CON", "nul.txt", "trail.", "x\u202egpj.exe", "tab\there", "\x85",
    "x" * 65, "x" * 256, "a/" * 2100, "_", "invitations", ".bashrc", "sub", "sub/ok.txt", "ok.txt", "new-dir",
    "new.txt", "box", "fresh", "데이터", "%2e%2e", "sub/../ok.txt",
]
text = st.one_of(st.text(max_size=40), st.sampled_from(NASTY_NAMES))
numbers = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.floats(),
                    st.sampled_from([0, 1, -1, 3, 2**31, 2**63, 1e308, 1.5]))
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(text, inner, max_size=3)), max_leaves=6)
GOOD_PATHS = ["new-dir", "sub", "ok.txt", "sub/ok.txt", "new.txt", "d/e", ".", "sub/new name.txt", "파일.txt"]
paths = st.one_of(st.sampled_from(GOOD_PATHS), st.lists(st.sampled_from(GOOD_PATHS), max_size=3), text,
                  st.lists(text, max_size=3), json_values)


def mixed(*valid):
    """Half the time a plausible value of a field, else hostile text or anything at all."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), text, json_values)


def body(required=None, optional=None):
    """Mostly the right shape (with hostile values inside), sometimes any JSON at all."""
    shaped = st.fixed_dictionaries(required or {}, optional=optional or {})
    return st.one_of(shaped, shaped, shaped, json_values)


# (method, path after /folders/<ref>, body strategy); "" is the collection itself
OPERATIONS = {
    "create": ("post", None, body({"name": mixed("fresh", "new.one", ".hidden", "데이터")}, {
        "host": mixed("local:volume1", None, "", "nope"), "group": mixed(None, "default", "nope"),
        "usage_mode": mixed("general", "model", "data", "x"), "permission": mixed("rw", "ro", "wd", "xx"),
        "quota": mixed("0", None, "10g", -1, "lots"), "cloneable": mixed(True, False, "true"),
        "unmanaged_path": mixed(None, "/mnt")})),
    "rename": ("post", "/rename", body({"new_name": mixed("box", "renamed", "box2")})),
    "mkdir": ("post", "/mkdir", body({"path": paths}, {"parents": mixed(True, False), "exist_ok": mixed(True, False)})),
    "rename-file": ("post", "/rename-file", body({"target_path": paths, "new_name": paths},
                                                 {"is_dir": mixed(True, False)})),
    "delete-files": ("delete", "/delete-files", body({"files": paths}, {"recursive": mixed(True, False)})),
    "ls": ("get", "/files", body({}, {"path": paths})),
    "request-upload": ("post", "/request-upload", body({"path": paths, "size": mixed(0, 3, 10**12, -1, "3")})),
    "invite": ("post", "/invite", body({}, {"perm": mixed("ro", "rw", "wd", "x"),
                                            "emails": st.one_of(mixed(["member@example.com"], [], "member@example.com"),
                                                                st.lists(text, max_size=3)),
                                            "user_ids": mixed(["member@example.com"])})),
    "update-options": ("post", "/update-options", body({}, {"permission": mixed("ro", "rw", "wd", None, "z"),
                                                            "cloneable": mixed(True, False, None)})),
}
calls = st.tuples(st.sampled_from(sorted(OPERATIONS)), st.data())


def snapshot_rows():
    return (sorted(map(str, VFolder.objects.values_list("id", "name", "status", "permission", "cloneable",
                                                          "usage_mode", "host_id"))),
            sorted(map(str, VFolderInvitation.objects.values_list("id", "state", "permission"))),
            sorted(map(str, VFolderGrant.objects.values_list("id", "permission"))))


@pytest.fixture
def world(signed, owner, member, make_folder):
    folder = make_folder(owner, "box")
    (folder.path / "sub").mkdir()
    (folder.path / "sub" / "ok.txt").write_bytes(b"fine")
    (folder.path / "ok.txt").write_bytes(b"top")
    return signed(owner), folder


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(call=calls, ref_choice=st.one_of(st.just("id"), st.just("id"), st.just("id"), text))
def test_generated_folder_requests_never_fail_with_a_server_error(world, vfroot, call, ref_choice):
    api, folder = world
    operation, data = call
    method, suffix, strategy = OPERATIONS[operation]
    payload = data.draw(strategy, label=operation)
    ref = folder.id.hex if ref_choice == "id" else quote(ref_choice.encode("utf-8", "surrogatepass"), safe="") or "x"
    target = "/folders" if suffix is None else f"/folders/{ref}{suffix}"
    before = (snapshot_rows(), tree_snapshot(vfroot))
    response = getattr(api, method)(target, data=payload)
    event(f"{operation}: {response.status_code}")  # --hypothesis-show-statistics shows the mix
    assert response.status_code < 500, (operation, target, payload, response.content[:500])
    if response.status_code >= 400:
        assert response["Content-Type"].startswith("application/problem+json"), response.content[:200]
        assert (snapshot_rows(), tree_snapshot(vfroot)) == before, (operation, target, payload)
