"""The storage proxy's manager API against the real daemon: auth, every endpoint, bad input."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storageproxy_support import AUTH_HEADER, ROOT

from storageproxy.paths import folder_relpath

from .conftest import SECRET, new_vfid

PROBLEM = "application/problem+json"


def problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["type"] == f"https://api.backend.ai/probs/{slug}", body
    assert body["title"]
    return body


def folder_dir(volume_root: Path, vfid: str) -> Path:
    return volume_root.joinpath(*folder_relpath(vfid))


# --- auth ----------------------------------------------------------------------------------------

def test_it_answers_health_without_a_secret(proxy):
    response = httpx.get(proxy.manager_url + "/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("headers", [{}, {AUTH_HEADER: ""}, {AUTH_HEADER: "wrong-secret-0123456789"},
                                     {AUTH_HEADER: SECRET + "x"}])
def test_it_refuses_requests_without_the_right_secret(proxy, headers, volumes):
    for method, path in (("GET", "/status"), ("GET", "/volumes"), ("POST", "/folder/create"),
                         ("POST", "/folder/file/upload"), ("GET", "/quota-scope"), ("GET", "/no/such/path")):
        response = httpx.request(method, proxy.manager_url + path, headers=headers,
                                 json={"volume": "v1", "vfid": new_vfid()})
        problem(response, 401, "auth-failed")
    assert list(volumes["v1"].iterdir()) == [volumes["v1"] / ".scopes"]


def test_it_serves_requests_with_the_right_secret(manager):
    response = manager.get("/status")
    assert response.status_code == 200
    assert response.json()["volumes"] == ["v1", "v2"]


# --- volumes ---------------------------------------------------------------------------------------

def test_it_lists_its_volumes_with_backend_and_capacity(manager, volumes):
    listed = {v["name"]: v for v in manager.get("/volumes").json()["volumes"]}
    assert set(listed) == {"v1", "v2"}
    assert listed["v1"]["backend"] == "vfs"
    assert listed["v1"]["path"] == str(volumes["v1"])
    assert "quota" in listed["v1"]["capabilities"]
    assert listed["v1"]["fs"]["capacity_bytes"] > 0


def test_it_measures_a_volume(manager):
    metric = manager.request("GET", "/volume/performance-metric", json={"volume": "v1"}).json()["metric"]
    assert metric["capacity_bytes"] > 0 and "inodes_total" in metric
    assert manager.get("/volume/performance-metric", params={"volume": "v1"}).status_code == 200


def test_it_reports_an_unknown_volume_as_not_found(manager):
    problem(manager.request("GET", "/volume/performance-metric", json={"volume": "nope"}), 404, "object-not-found")
    problem(manager.post("/folder/create", json={"volume": "nope", "vfid": new_vfid()}), 404, "object-not-found")


# --- quota scopes ----------------------------------------------------------------------------------

def test_it_creates_reads_changes_and_unsets_a_quota_scope(manager, volumes):
    qsid = f"project:{uuid.uuid4()}"
    body = {"volume": "v1", "qsid": qsid, "options": {"limit_bytes": 1000}}
    assert manager.post("/quota-scope", json=body).status_code == 200
    assert manager.post("/quota-scope", json=body).status_code == 200  # idempotent
    scope = manager.request("GET", "/quota-scope", json={"volume": "v1", "qsid": qsid}).json()
    assert scope == {"used_bytes": 0, "file_count": 0, "limit_bytes": 1000}
    assert manager.patch("/quota-scope", json={**body, "options": {"limit_bytes": 5000}}).status_code == 200
    assert manager.get("/quota-scope", params={"volume": "v1", "qsid": qsid}).json()["limit_bytes"] == 5000
    assert manager.request("DELETE", "/quota-scope/quota", json={"volume": "v1", "qsid": qsid}).status_code == 200
    assert manager.get("/quota-scope", params={"volume": "v1", "qsid": qsid}).json()["limit_bytes"] is None
    assert (volumes["v1"] / f"project-{uuid.UUID(qsid.split(':')[1]).hex}").is_dir()


def test_it_treats_a_negative_or_null_limit_as_unlimited(manager):
    qsid = f"user:{uuid.uuid4()}"
    manager.post("/quota-scope", json={"volume": "v1", "qsid": qsid, "options": {"limit_bytes": 10}})
    manager.patch("/quota-scope", json={"volume": "v1", "qsid": qsid, "options": {"limit_bytes": -1}})
    assert manager.get("/quota-scope", params={"volume": "v1", "qsid": qsid}).json()["limit_bytes"] is None
    manager.patch("/quota-scope", json={"volume": "v1", "qsid": qsid, "options": {"limit_bytes": 10}})
    manager.patch("/quota-scope", json={"volume": "v1", "qsid": qsid, "options": {"limit_bytes": None}})
    assert manager.get("/quota-scope", params={"volume": "v1", "qsid": qsid}).json()["limit_bytes"] is None


@pytest.mark.parametrize("body", [
    {"volume": "v1", "qsid": "user:not-a-uuid"},
    {"volume": "v1", "qsid": "group:" + str(uuid.uuid4())},
    {"volume": "v1", "qsid": 5},
    {"volume": "v1"},
    {"volume": "v1", "qsid": f"user:{uuid.uuid4()}", "options": {"limit_bytes": "10"}},
    {"volume": "v1", "qsid": f"user:{uuid.uuid4()}", "options": {"limit_bytes": True}},
    {"volume": "v1", "qsid": f"user:{uuid.uuid4()}", "options": {"limit_bytes": 2**70}},
    {"volume": "v1", "qsid": f"user:{uuid.uuid4()}", "options": []},
    {"volume": ["v1"], "qsid": f"user:{uuid.uuid4()}"},
])
def test_it_refuses_bad_quota_scope_bodies(manager, body, volumes):
    problem(manager.post("/quota-scope", json=body), 400, "invalid-api-params")
    assert sorted(p.name for p in volumes["v1"].iterdir()) == [".scopes"]


def test_it_reports_a_missing_quota_scope_as_not_found(manager):
    qsid = f"user:{uuid.uuid4()}"
    problem(manager.get("/quota-scope", params={"volume": "v1", "qsid": qsid}), 404, "object-not-found")
    problem(manager.patch("/quota-scope", json={"volume": "v1", "qsid": qsid, "options": {"limit_bytes": 1}}),
            404, "object-not-found")


def test_it_deletes_an_empty_quota_scope_only(manager, volumes, folder):
    qsid = folder.split("/")[0]
    problem(manager.request("DELETE", "/quota-scope", json={"volume": "v1", "qsid": qsid}), 400,
            "vfolder-operation-failed")
    manager.post("/folder/delete", json={"volume": "v1", "vfid": folder})
    assert manager.request("DELETE", "/quota-scope", json={"volume": "v1", "qsid": qsid}).status_code == 204
    assert not (volumes["v1"] / folder_relpath(folder)[0]).exists()


def test_it_rejects_bad_json(manager):
    for raw in (b"{", b"[1, 2]", b'"text"', b"\xff\xfe"):
        problem(manager.post("/folder/create", content=raw, headers={"content-type": "application/json"}), 400,
                "invalid-api-params")


def test_it_answers_unknown_paths_and_methods_with_problems(manager):
    problem(manager.get("/no/such/endpoint"), 404, "url-not-found")
    problem(manager.put("/folder/create", json={}), 405, "method-not-allowed")


def test_it_refuses_a_body_over_the_limit(manager):
    problem(manager.post("/folder/create", content=b"{" + b" " * (2 * 2**20) + b"}",
                         headers={"content-type": "application/json"}), 413, "payload-too-large")


# --- folders ---------------------------------------------------------------------------------------

def test_it_creates_a_folder_idempotently_where_the_layout_says(manager, volumes):
    vfid = new_vfid("project")
    assert manager.post("/folder/create", json={"volume": "v1", "vfid": vfid}).status_code == 204
    path = folder_dir(volumes["v1"], vfid)
    assert path.is_dir() and oct(path.stat().st_mode & 0o777) == "0o755"
    scope, hex_id = vfid.split("/")
    assert path.relative_to(volumes["v1"]).parts == (
        f"project-{uuid.UUID(scope.split(':')[1]).hex}", hex_id[:2], hex_id[2:4], hex_id[4:])
    assert manager.post("/folder/create", json={"volume": "v1", "vfid": vfid}).status_code == 204
    (path / "x").write_text("data")
    problem(manager.post("/folder/create", json={"volume": "v1", "vfid": vfid}), 400, "vfolder-operation-failed")


# fixed ids (the same test ids in every collection: pytest -n N compares them across workers)
UNKNOWN_A = uuid.UUID("9d3f6a2e-4b1c-4e8d-a7f0-2c5b8e1d6a34")
UNKNOWN_B = uuid.UUID("c0ffee00-1d2e-4f3a-8b4c-5d6e7f8091a2")


@pytest.mark.parametrize("vfid", ["user:1/abc", "user:" + str(UNKNOWN_A), "../../etc/" + UNKNOWN_B.hex,
                                  f"user:{UNKNOWN_A}/../{UNKNOWN_B.hex}", 17, None, "x" * 5000,
                                  f"user:{UNKNOWN_A}/{UNKNOWN_B.hex}/extra"])
def test_it_refuses_malformed_folder_ids(manager, vfid, volumes):
    problem(manager.post("/folder/create", json={"volume": "v1", "vfid": vfid}), 400, "invalid-api-params")
    assert sorted(p.name for p in volumes["v1"].iterdir()) == [".scopes"]


def test_it_deletes_a_folder_and_a_missing_one_is_fine(manager, volumes, folder):
    path = folder_dir(volumes["v1"], folder)
    (path / "sub").mkdir()
    (path / "sub" / "f").write_bytes(b"1" * 10)
    assert manager.post("/folder/delete", json={"volume": "v1", "vfid": folder}).status_code == 204
    assert not path.exists() and not path.parent.exists()
    assert manager.post("/folder/delete", json={"volume": "v1", "vfid": folder}).status_code == 204


def test_it_clones_a_folder_across_volumes_without_following_links(manager, volumes, folder):
    src = folder_dir(volumes["v1"], folder)
    (src / "d").mkdir()
    (src / "d" / "f.txt").write_bytes(b"hello")
    os.symlink("/etc/passwd", src / "link")
    dst_vfid = new_vfid()
    response = manager.post("/folder/clone", json={"src_volume": "v1", "src_vfid": folder, "dst_volume": "v2",
                                                   "dst_vfid": dst_vfid})
    assert response.status_code == 200, response.text
    assert response.json() == {"used_bytes": 5, "file_count": 1}
    dst = folder_dir(volumes["v2"], dst_vfid)
    assert (dst / "d" / "f.txt").read_bytes() == b"hello"
    assert os.readlink(dst / "link") == "/etc/passwd"


def test_it_refuses_a_clone_over_the_destination_quota_leaving_nothing(manager, volumes, folder):
    (folder_dir(volumes["v1"], folder) / "big").write_bytes(b"x" * 5000)
    scope = uuid.uuid4()
    manager.post("/quota-scope", json={"volume": "v2", "qsid": f"user:{scope}", "options": {"limit_bytes": 4000}})
    dst_vfid = new_vfid(scope=scope)
    body = problem(manager.post("/folder/clone", json={"src_volume": "v1", "src_vfid": folder,
                                                      "dst_volume": "v2", "dst_vfid": dst_vfid}),
                   412, "quota-exceeded")
    assert "nothing" in body["msg"]
    dst = folder_dir(volumes["v2"], dst_vfid)
    assert not dst.exists() or not any(dst.iterdir())
    assert not any(p.name.endswith(".cloning") for p in dst.parent.iterdir()) if dst.parent.exists() else True


def test_it_refuses_to_clone_a_folder_whose_directory_is_missing(manager):
    body = problem(manager.post("/folder/clone", json={"src_volume": "v1", "src_vfid": new_vfid(),
                                                       "dst_volume": "v2", "dst_vfid": new_vfid()}),
                   400, "vfolder-operation-failed")
    assert "missing" in body["msg"]


def test_it_refuses_file_operations_in_a_folder_whose_directory_is_missing(manager):
    vfid = new_vfid()
    for endpoint, extra in (("/folder/file/list", {"relpath": "."}), ("/folder/file/mkdir", {"relpath": "a"}),
                            ("/folder/file/upload", {"relpath": "a", "size": 1}),
                            ("/folder/file/download", {"relpath": "a"})):
        problem(manager.post(endpoint, json={"volume": "v1", "vfid": vfid, **extra}), 400,
                "vfolder-operation-failed")


def test_it_moves_a_folder_to_another_scope(manager, volumes, folder):
    src = folder_dir(volumes["v1"], folder)
    (src / "f").write_text("moved")
    dst_vfid = new_vfid("user")
    response = manager.post("/folder/move", json={"volume": "v1", "src_vfid": folder, "dst_vfid": dst_vfid})
    assert response.status_code == 200 and response.json() == {}
    assert (folder_dir(volumes["v1"], dst_vfid) / "f").read_text() == "moved"
    assert not src.exists() and not src.parent.exists()
    problem(manager.post("/folder/move", json={"volume": "v1", "src_vfid": folder, "dst_vfid": new_vfid()}), 400,
            "vfolder-operation-failed")
    other = new_vfid()
    manager.post("/folder/create", json={"volume": "v1", "vfid": other})
    problem(manager.post("/folder/move", json={"volume": "v1", "src_vfid": dst_vfid, "dst_vfid": other}), 400,
            "vfolder-operation-failed")
    assert (folder_dir(volumes["v1"], dst_vfid) / "f").exists()
    problem(manager.post("/folder/move", json={"volume": "v1", "src_vfid": dst_vfid, "dst_vfid": "x/y"}), 400,
            "invalid-api-params")


def test_it_gives_the_mount_path_of_a_folder_and_a_subdirectory(manager, volumes, folder):
    path = folder_dir(volumes["v1"], folder)
    (path / "sub").mkdir()
    assert manager.get("/folder/mount", params={"volume": "v1", "vfid": folder}).json()["path"] == str(path)
    response = manager.request("GET", "/folder/mount", json={"volume": "v1", "vfid": folder, "subpath": "sub"})
    assert response.json()["path"] == str(path / "sub")
    problem(manager.get("/folder/mount", params={"volume": "v1", "vfid": folder, "subpath": "nope"}), 404,
            "object-not-found")
    problem(manager.get("/folder/mount", params={"volume": "v1", "vfid": folder, "subpath": "../.."}), 400,
            "invalid-api-params")
    (path / "file").write_text("x")
    problem(manager.get("/folder/mount", params={"volume": "v1", "vfid": folder, "subpath": "file"}), 400,
            "vfolder-operation-failed")
    problem(manager.get("/folder/mount", params={"volume": "v1", "vfid": new_vfid()}), 400,
            "vfolder-operation-failed")


def test_it_measures_folder_usage(manager, volumes, folder):
    path = folder_dir(volumes["v1"], folder)
    (path / "a").write_bytes(b"1" * 100)
    (path / "d").mkdir()
    (path / "d" / "b").write_bytes(b"2" * 50)
    assert manager.get("/folder/usage", params={"volume": "v1", "vfid": folder}).json() == {
        "file_count": 2, "used_bytes": 150}
    assert manager.get("/folder/used-bytes", params={"volume": "v1", "vfid": folder}).json() == {"used_bytes": 150}
    assert manager.get("/folder/usage", params={"volume": "v1", "vfid": new_vfid()}).json() == {
        "file_count": 0, "used_bytes": 0}  # a missing directory holds nothing


# --- files -----------------------------------------------------------------------------------------

def test_it_lists_and_stats_files(manager, volumes, folder):
    path = folder_dir(volumes["v1"], folder)
    (path / "d").mkdir()
    (path / "f.txt").write_bytes(b"abc")
    items = manager.post("/folder/file/list", json={"volume": "v1", "vfid": folder, "relpath": "."}).json()["items"]
    assert (items[0]["name"], items[0]["type"]) == ("d", "directory")
    assert {i["name"] for i in items} == {"d", "f.txt"}
    assert set(items[0]) == {"name", "type", "size", "mtime", "mode"}
    stat = manager.post("/folder/file/stat", json={"volume": "v1", "vfid": folder, "relpath": "f.txt"}).json()
    assert stat["type"] == "file" and stat["size"] == 3 and stat["modified"]
    problem(manager.post("/folder/file/stat", json={"volume": "v1", "vfid": folder, "relpath": "nope"}), 404,
            "object-not-found")


def test_it_makes_directories(manager, volumes, folder):
    path = folder_dir(volumes["v1"], folder)
    body = {"volume": "v1", "vfid": folder}
    made = manager.post("/folder/file/mkdir", json={**body, "relpath": "a"})
    assert made.status_code == 200 and made.json() == {}
    problem(manager.post("/folder/file/mkdir", json={**body, "relpath": "b/c"}), 404, "object-not-found")
    result = manager.post("/folder/file/mkdir", json={**body, "relpaths": ["b/c", "a"], "parents": True,
                                                      "exist_ok": True}).json()["results"]
    assert result == {"success": [{"item": "b/c", "msg": None}, {"item": "a", "msg": None}], "failed": []}
    result = manager.post("/folder/file/mkdir", json={**body, "relpaths": ["a", "n"]}).json()["results"]
    assert result["success"] == [{"item": "n", "msg": None}] and result["failed"][0]["item"] == "a"
    problem(manager.post("/folder/file/mkdir", json={**body, "relpaths": ["ok", "../bad"]}), 400,
            "invalid-api-params")
    assert not (path / "ok").exists()
    assert (path / "b" / "c").is_dir()
    problem(manager.post("/folder/file/mkdir", json={**body, "relpath": "a"}), 400, "vfolder-operation-failed")
    problem(manager.post("/folder/file/mkdir", json={**body, "relpath": "con.txt"}), 400, "invalid-api-params")
    problem(manager.post("/folder/file/mkdir", json={**body, "relpaths": []}), 400, "invalid-api-params")
    problem(manager.post("/folder/file/mkdir", json={**body, "relpath": "x", "parents": "yes"}), 400,
            "invalid-api-params")


def test_it_renames_moves_and_deletes_files(manager, volumes, folder):
    path = folder_dir(volumes["v1"], folder)
    body = {"volume": "v1", "vfid": folder}
    (path / "a.txt").write_text("a")
    (path / "dir").mkdir()
    assert manager.post("/folder/file/rename", json={**body, "relpath": "a.txt", "new_name": "b.txt"}
                        ).status_code == 204
    assert (path / "b.txt").exists()
    problem(manager.post("/folder/file/rename", json={**body, "relpath": "b.txt", "new_name": "x/y"}), 400,
            "invalid-api-params")
    moved = manager.post("/folder/file/move", json={**body, "src_relpath": "b.txt", "dst_relpath": "dir"})
    assert moved.json() == {"relpath": "dir/b.txt"}
    problem(manager.post("/folder/file/move", json={**body, "src_relpath": "dir", "dst_relpath": "dir/in"}), 400,
            "vfolder-operation-failed")
    problem(manager.post("/folder/file/delete", json={**body, "relpaths": ["dir"]}), 400,
            "vfolder-operation-failed")
    assert manager.post("/folder/file/delete", json={**body, "relpaths": ["dir"], "recursive": True}
                        ).status_code == 204
    assert not (path / "dir").exists()
    problem(manager.post("/folder/file/delete", json={**body, "relpaths": "nope"}), 404, "object-not-found")


@pytest.mark.parametrize("relpath", ["../x", "/etc/passwd", "a/../../b", "a\\b", "a\x00b", "link/inside",
                                     "link", "x" * 300])
def test_it_refuses_paths_that_leave_the_folder(manager, volumes, folder, relpath, tmp_path):
    path = folder_dir(volumes["v1"], folder)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    os.symlink(outside, path / "link")
    body = {"volume": "v1", "vfid": folder}
    for endpoint, extra in (("/folder/file/list", {"relpath": relpath}),
                            ("/folder/file/mkdir", {"relpath": relpath + "/new", "parents": True}),
                            ("/folder/file/delete", {"relpaths": [relpath + "/secret"], "recursive": True}),
                            ("/folder/file/download", {"relpath": relpath + "/secret"}),
                            ("/folder/file/upload", {"relpath": relpath + "/up", "size": 1})):
        response = manager.post(endpoint, json={**body, **extra})
        assert response.status_code in (400, 404), (endpoint, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
    assert (outside / "secret").read_text() == "s"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_it_refuses_an_upload_request_over_the_quota_or_onto_a_directory(manager, volumes):
    scope = uuid.uuid4()
    manager.post("/quota-scope", json={"volume": "v1", "qsid": f"user:{scope}", "options": {"limit_bytes": 100}})
    vfid = new_vfid(scope=scope)
    manager.post("/folder/create", json={"volume": "v1", "vfid": vfid})
    body = {"volume": "v1", "vfid": vfid}
    assert manager.post("/folder/file/upload", json={**body, "relpath": "a", "size": 100}).status_code == 200
    problem(manager.post("/folder/file/upload", json={**body, "relpath": "a", "size": 101}), 412, "quota-exceeded")
    manager.post("/folder/file/mkdir", json={**body, "relpath": "d"})
    problem(manager.post("/folder/file/upload", json={**body, "relpath": "d", "size": 1}), 400,
            "vfolder-operation-failed")
    for size in (-1, "1", 1.5, None, True):
        problem(manager.post("/folder/file/upload", json={**body, "relpath": "b", "size": size}), 400,
                "invalid-api-params")
    problem(manager.post("/folder/file/upload", json={**body, "relpath": "b", "size": 2**31}), 413,
            "payload-too-large")


def test_it_creates_an_empty_file_at_once_for_a_zero_byte_upload(manager, volumes, folder):
    response = manager.post("/folder/file/upload", json={"volume": "v1", "vfid": folder, "relpath": "e/empty",
                                                         "size": 0})
    assert response.status_code == 200
    assert response.json()["url"].endswith("/upload")
    assert (folder_dir(volumes["v1"], folder) / "e" / "empty").read_bytes() == b""


# --- fuzz ------------------------------------------------------------------------------------------

ENDPOINTS = [("POST", "/folder/move"), ("POST", "/quota-scope"), ("PATCH", "/quota-scope"), ("GET", "/quota-scope"),
             ("DELETE", "/quota-scope/quota"), ("DELETE", "/quota-scope"), ("POST", "/folder/create"),
             ("POST", "/folder/delete"), ("POST", "/folder/clone"), ("GET", "/folder/mount"),
             ("GET", "/folder/usage"), ("GET", "/folder/used-bytes"), ("POST", "/folder/file/list"),
             ("POST", "/folder/file/stat"), ("POST", "/folder/file/mkdir"), ("POST", "/folder/file/rename"),
             ("POST", "/folder/file/move"), ("POST", "/folder/file/delete"), ("POST", "/folder/file/upload"),
             ("POST", "/folder/file/download"), ("GET", "/volume/performance-metric")]
KEYS = ["volume", "vfid", "qsid", "options", "relpath", "relpaths", "size", "new_name", "src_relpath",
        "dst_relpath", "src_volume", "src_vfid", "dst_volume", "dst_vfid", "subpath", "parents", "exist_ok",
        "recursive", "archive", "format", "limit_bytes"]
scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats(allow_nan=False)
           | st.text(max_size=40) | st.sampled_from(["v1", "v2", "..", "/", ".", "a/../b", "zip", "tar"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(["limit_bytes", "x"]), inner, max_size=2), max_leaves=8)


def test_fuzzed_manager_bodies_never_cause_a_server_error(proxy, folder):
    vfids = st.sampled_from([folder, new_vfid(), "user:x/y"])

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(endpoint=st.sampled_from(ENDPOINTS),
           body=st.dictionaries(st.sampled_from(KEYS), values | vfids, max_size=6),
           use_vfid=st.booleans(), vfid=vfids)
    def run(endpoint, body, use_vfid, vfid):
        if use_vfid:
            body = {"volume": "v1", **body, "vfid": vfid}
        method, path = endpoint
        with httpx.Client(base_url=proxy.manager_url, headers=proxy.auth_headers, timeout=30) as http:
            response = http.request(method, path, json=body)
        assert response.status_code < 500, (endpoint, body, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith(PROBLEM)
            assert response.json()["type"].startswith("https://api.backend.ai/probs/")

    run()


# --- options -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (["--volume", "v1={tmp}", "--manager-port", "http"], "--manager-port"),
    (["--volume", "v1={tmp}:xfs"], "--volume"),
    (["--volume", "v1={tmp}/missing"], "--volume"),
    ([], "--volume"),
    (["--volume", "v1={tmp}", "--max-upload-size", "lots"], "--max-upload-size"),
    (["--volume", "v1={tmp}", "--file-mode", "rw"], "--file-mode"),
    (["--volume", "v1={tmp}", "--secret", "short"], "--secret"),
])
def test_a_bad_option_stops_start_up_with_a_message_naming_it(tmp_path, args, named):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAI_STORAGE_")}
    env["BAI_STORAGE_SECRET"] = SECRET
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "storageproxy", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert named in done.stderr, done.stderr


def test_it_reads_options_from_the_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAI_STORAGE_")}
    env.update({"BAI_STORAGE_VOLUME": f"v1={tmp_path}", "BAI_STORAGE_MANAGER_PORT": "70000",
                "PYTHONPATH": str(ROOT), "BAI_STORAGE_SECRET": SECRET})
    done = subprocess.run([sys.executable, "-m", "storageproxy"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "BAI_STORAGE_MANAGER_PORT" in done.stderr
    env.pop("BAI_STORAGE_SECRET")
    env.pop("BAI_STORAGE_MANAGER_PORT")
    done = subprocess.run([sys.executable, "-m", "storageproxy"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2 and "--secret" in done.stderr
