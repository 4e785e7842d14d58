"""The storage proxy's client API against the real daemon: tus uploads, downloads, tokens, CORS."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import uuid
import zipfile

import httpx
import jwt
import pytest

from storageproxy.paths import folder_relpath

from .conftest import SECRET, new_vfid
from .test_manager_api import PROBLEM, folder_dir, problem

TUS = {"Tus-Resumable": "1.0.0"}
PATCH_HEADERS = {**TUS, "Content-Type": "application/offset+octet-stream"}


def request_upload(manager, vfid, relpath, size, volume="v1") -> str:
    response = manager.post("/folder/file/upload", json={"volume": volume, "vfid": vfid, "relpath": relpath,
                                                         "size": size})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["url"].endswith("/upload")
    return data["token"]


def request_download(manager, vfid, relpath, **extra) -> str:
    response = manager.post("/folder/file/download", json={"volume": "v1", "vfid": vfid, "relpath": relpath,
                                                           **extra})
    assert response.status_code == 200, response.text
    return response.json()["token"]


def patch(client, token, offset, data, **headers):
    return client.patch("/upload", params={"token": token}, content=data,
                        headers={**PATCH_HEADERS, "Upload-Offset": str(offset), **headers})


def staged_files(volume_root):
    base = volume_root / ".staging"
    return [p for p in base.rglob("*") if p.is_file()] if base.exists() else []


# --- tus -------------------------------------------------------------------------------------------

def test_it_answers_tus_options(client):
    response = client.options("/upload")
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {"creation", "termination"}
    assert int(response.headers["Tus-Max-Size"]) == 2**30


def test_it_uploads_with_the_full_tus_flow(manager, client, volumes, folder):
    data = os.urandom(3 * 2**20 + 17)
    token = request_upload(manager, folder, "deep/dir/file.bin", len(data))
    created = client.post("/upload", params={"token": token}, headers={**TUS, "Upload-Length": str(len(data))})
    assert created.status_code == 201
    assert created.headers["Location"].startswith(str(client.base_url) + "/upload?token=")
    head = client.head("/upload", params={"token": token}, headers=TUS)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "0" and head.headers["Upload-Length"] == str(len(data))
    assert head.headers["Cache-Control"] == "no-store"
    first = patch(client, token, 0, data[:2**20])
    assert first.status_code == 204 and first.headers["Upload-Offset"] == str(2**20)
    assert not (folder_dir(volumes["v1"], folder) / "deep").exists()  # nothing in the folder before the end
    assert client.head("/upload", params={"token": token}, headers=TUS).headers["Upload-Offset"] == str(2**20)
    last = patch(client, token, 2**20, data[2**20:])
    assert last.status_code == 204 and last.headers["Upload-Offset"] == str(len(data))
    target = folder_dir(volumes["v1"], folder) / "deep" / "dir" / "file.bin"
    assert target.read_bytes() == data
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert client.head("/upload", params={"token": token}, headers=TUS).headers["Upload-Offset"] == str(len(data))
    assert not [p for p in staged_files(volumes["v1"]) if p.suffix == ".part"]


def test_it_takes_the_official_clients_patch_only_upload(manager, client, volumes, folder):
    data = os.urandom(5 * 2**20)
    token = request_upload(manager, folder, "official.bin", len(data))
    offset = 0
    while offset < len(data):
        response = client.patch("/upload", params={"token": token}, content=data[offset:offset + 2**21],
                                headers={"Tus-Resumable": "1.0.0", "upload-offset": str(offset),
                                         "Content-Type": "application/offset+octet-stream"})
        assert response.status_code == 204, response.text
        offset = int(response.headers["Upload-Offset"])
    assert (folder_dir(volumes["v1"], folder) / "official.bin").read_bytes() == data


def test_it_refuses_a_patch_at_the_wrong_offset_with_a_conflict(manager, client, folder):
    token = request_upload(manager, folder, "f", 100)
    assert patch(client, token, 0, b"a" * 40).status_code == 204
    body = problem(patch(client, token, 10, b"b" * 10), 409, "upload-offset-conflict")
    assert body["data"] == {"offset": 40}
    conflict = patch(client, token, 41, b"b")
    assert conflict.headers["Upload-Offset"] == "40"
    assert patch(client, token, 40, b"c" * 60).status_code == 204
    problem(patch(client, token, 100, b"more"), 409, "upload-offset-conflict")
    assert patch(client, token, 100, b"").status_code == 204  # a repeated final PATCH is answered


def test_it_refuses_bad_tus_requests(manager, client, folder, volumes):
    token = request_upload(manager, folder, "f", 10)
    problem(client.patch("/upload", params={"token": token}, content=b"x",
                         headers={**TUS, "Upload-Offset": "0", "Content-Type": "text/plain"}), 415,
            "unsupported-media-type")
    problem(patch(client, token, 0, b"x", **{"Upload-Offset": "-1"}), 400, "invalid-api-params")
    problem(patch(client, token, 0, b"x", **{"Upload-Offset": "1e3"}), 400, "invalid-api-params")
    response = patch(client, token, 0, b"x", **{"Tus-Resumable": "0.2.2"})
    problem(response, 412, "unsupported-tus-version")
    assert response.headers["Tus-Version"] == "1.0.0"
    problem(client.post("/upload", params={"token": token}, headers={**TUS, "Upload-Length": "11"}), 400,
            "invalid-api-params")
    problem(client.put("/upload", params={"token": token}), 405, "method-not-allowed")
    body = problem(patch(client, token, 0, b"y" * 11), 413, "payload-too-large")
    assert "removed" in body["msg"]
    assert not (folder_dir(volumes["v1"], folder) / "f").exists()
    assert not staged_files(volumes["v1"])


def test_it_refuses_a_chunk_over_the_maximum_chunk_size(manager, client, folder, volumes):
    token = request_upload(manager, folder, "f", 20 * 2**20)
    problem(patch(client, token, 0, b"z" * (8 * 2**20 + 1)), 413, "payload-too-large")
    assert not (folder_dir(volumes["v1"], folder) / "f").exists()


def test_it_terminates_an_upload(manager, client, volumes, folder):
    token = request_upload(manager, folder, "f", 100)
    patch(client, token, 0, b"a" * 10)
    assert staged_files(volumes["v1"])
    assert client.delete("/upload", params={"token": token}, headers=TUS).status_code == 204
    assert not staged_files(volumes["v1"])
    assert client.head("/upload", params={"token": token}, headers=TUS).headers["Upload-Offset"] == "0"


def test_it_resumes_an_upload_after_the_proxy_was_killed(proxy, manager, volumes, folder):
    data = os.urandom(12 * 2**20)
    token = request_upload(manager, folder, "resumed.bin", len(data))
    # a PATCH whose body stops half-way when the proxy dies
    url = f"{proxy.client_url}/upload?token={token}"

    def body():
        yield data[:3 * 2**20]
        time.sleep(0.5)
        proxy.kill()
        yield data[3 * 2**20:6 * 2**20]

    with pytest.raises(httpx.HTTPError):
        httpx.patch(url, content=body(), headers={**PATCH_HEADERS, "Upload-Offset": "0"}, timeout=30)
    assert proxy.process.returncode == -9
    proxy.start()  # the same ports, volumes and secret
    with httpx.Client(base_url=proxy.client_url, timeout=30) as client:
        offset = int(client.head("/upload", params={"token": token}, headers=TUS).headers["Upload-Offset"])
        assert 0 < offset <= 6 * 2**20
        while offset < len(data):
            response = patch(client, token, offset, data[offset:offset + 4 * 2**20])
            assert response.status_code == 204, response.text
            offset = int(response.headers["Upload-Offset"])
    stored = (folder_dir(volumes["v1"], folder) / "resumed.bin").read_bytes()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()


def test_it_keeps_the_proxy_small_while_a_large_upload_streams(proxy, manager, volumes, folder):
    size = 200 * 2**20
    token = request_upload(manager, folder, "big.bin", size)
    piece = os.urandom(2**20)
    rss_seen = []

    def rss() -> int:
        with open(f"/proc/{proxy.process.pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) * 1024

    digest = hashlib.sha256()
    with httpx.Client(base_url=proxy.client_url, timeout=120) as client:
        offset = 0
        while offset < size:
            def body():
                for _ in range(8):
                    digest.update(piece)
                    yield piece
            response = client.patch("/upload", params={"token": token}, content=body(),
                                    headers={**PATCH_HEADERS, "Upload-Offset": str(offset),
                                             "Content-Length": str(8 * 2**20)})
            assert response.status_code == 204, response.text
            offset = int(response.headers["Upload-Offset"])
            rss_seen.append(rss())
    target = folder_dir(volumes["v1"], folder) / "big.bin"
    assert target.stat().st_size == size
    with open(target, "rb") as fh:
        stored = hashlib.sha256()
        while chunk := fh.read(2**20):
            stored.update(chunk)
    assert stored.hexdigest() == digest.hexdigest()
    assert max(rss_seen) < 120 * 2**20, rss_seen


# --- quota on vfs ------------------------------------------------------------------------------------

def test_it_refuses_an_upload_past_the_vfs_scope_limit_and_keeps_nothing(manager, client, volumes):
    scope = uuid.uuid4()
    manager.post("/quota-scope", json={"volume": "v1", "qsid": f"user:{scope}", "options": {"limit_bytes": 1000}})
    vfid = new_vfid(scope=scope)
    manager.post("/folder/create", json={"volume": "v1", "vfid": vfid})
    first = request_upload(manager, vfid, "a", 600)
    second = request_upload(manager, vfid, "b", 600)  # both fit when asked for
    assert patch(client, first, 0, b"a" * 600).status_code == 204
    body = problem(patch(client, second, 0, b"b" * 600), 413, "quota-exceeded")
    assert "removed" in body["msg"]
    assert not (folder_dir(volumes["v1"], vfid) / "b").exists()
    assert not [p for p in staged_files(volumes["v1"]) if p.suffix == ".part"]
    usage = manager.get("/quota-scope", params={"volume": "v1", "qsid": f"user:{scope}"}).json()
    assert usage["used_bytes"] == 600 and usage["file_count"] == 1


def test_staged_bytes_count_in_the_scope_usage(manager, client):
    scope = uuid.uuid4()
    manager.post("/quota-scope", json={"volume": "v1", "qsid": f"user:{scope}", "options": {"limit_bytes": 1000}})
    vfid = new_vfid(scope=scope)
    manager.post("/folder/create", json={"volume": "v1", "vfid": vfid})
    token = request_upload(manager, vfid, "a", 900)
    patch(client, token, 0, b"a" * 500)
    assert manager.get("/quota-scope", params={"volume": "v1", "qsid": f"user:{scope}"}).json()["used_bytes"] == 500
    problem(manager.post("/folder/file/upload", json={"volume": "v1", "vfid": vfid, "relpath": "b", "size": 501}),
            412, "quota-exceeded")


# --- tokens ------------------------------------------------------------------------------------------

def _forge(claims: dict, secret: str = SECRET) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, secret, algorithm="HS256")


def test_it_refuses_forged_expired_and_wrong_operation_tokens(manager, client, volumes, folder):
    good = {"op": "upload", "volume": "v1", "vfid": folder, "relpath": "f", "size": 4, "session": uuid.uuid4().hex}
    bad_tokens = [
        None, "", "garbage", "a.b.c" * 1000,
        _forge(good, "another-secret-0123456789-0123456789-0123456789"),
        _forge({**good, "exp": int(time.time()) - 5}),
        _forge({**good, "op": "download"}),
        _forge({**good, "relpath": "../escape"}),
        _forge({**good, "size": "4"}),
        _forge({**good, "size": -1}),
        _forge({**good, "session": "../../x"}),
        _forge({**good, "volume": "nope"}),
        _forge({**good, "vfid": new_vfid()}),
        jwt.encode({**good, "exp": int(time.time()) + 60}, SECRET * 2, algorithm="HS512"),
        jwt.encode({k: v for k, v in good.items()}, SECRET, algorithm="HS256"),  # no exp
    ]
    for token in bad_tokens:
        params = {} if token is None else {"token": token}
        problem(client.patch("/upload", params=params, content=b"data",
                             headers={**PATCH_HEADERS, "Upload-Offset": "0"}), 403, "generic-forbidden")
        head = client.head("/upload", params=params, headers=TUS)
        assert head.status_code == 403 and head.headers["content-type"].startswith(PROBLEM)
    download = request_download(manager, folder, ".")
    problem(patch(client, download, 0, b"data"), 403, "generic-forbidden")
    upload = request_upload(manager, folder, "x", 4)
    problem(client.get("/download", params={"token": upload}), 403, "generic-forbidden")
    problem(client.get("/download", params={"token": _forge({"op": "download", "volume": "v1", "vfid": folder,
                                                              "relpath": ".", "exp": int(time.time()) - 1})}),
            403, "generic-forbidden")
    assert not list(folder_dir(volumes["v1"], folder).iterdir())
    assert not staged_files(volumes["v1"])
    assert patch(client, _forge(good), 0, b"data").status_code == 204  # the same claims, rightly signed


# --- downloads ---------------------------------------------------------------------------------------

def test_it_downloads_a_file_with_ranges(manager, client, volumes, folder):
    data = os.urandom(3 * 2**20 + 5)
    (folder_dir(volumes["v1"], folder) / "file.bin").write_bytes(data)
    token = request_download(manager, folder, "file.bin")
    whole = client.get("/download", params={"token": token})
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["Content-Length"] == str(len(data))
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert "file.bin" in whole.headers["Content-Disposition"]
    last_modified = whole.headers["Last-Modified"]
    part = client.get("/download", params={"token": token}, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert part.headers["Content-Length"] == "100"
    resume = client.get("/download", params={"token": token},
                        headers={"Range": f"bytes={len(data) - 10}-", "If-Range": last_modified})
    assert resume.status_code == 206 and resume.content == data[-10:]
    stale = client.get("/download", params={"token": token},
                       headers={"Range": "bytes=0-9", "If-Range": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert stale.status_code == 200 and stale.content == data
    unsatisfiable = client.get("/download", params={"token": token}, headers={"Range": f"bytes={len(data)}-"})
    problem(unsatisfiable, 416, "range-not-satisfiable")
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{len(data)}"
    head = client.head("/download", params={"token": token})
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data)) and head.content == b""


def _tree(volumes, folder):
    root = folder_dir(volumes["v1"], folder)
    (root / "top" / "sub").mkdir(parents=True)
    (root / "top" / "a.txt").write_bytes(b"alpha")
    (root / "top" / "sub" / "b.bin").write_bytes(os.urandom(70000))
    os.symlink("/etc/passwd", root / "top" / "passwd")
    return root


def test_it_streams_a_directory_as_zip(manager, client, volumes, folder):
    root = _tree(volumes, folder)
    token = request_download(manager, folder, "top")
    response = client.get("/download", params={"token": token})
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    assert "top.zip" in response.headers["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.read("top/a.txt") == b"alpha"
    assert archive.read("top/sub/b.bin") == (root / "top" / "sub" / "b.bin").read_bytes()
    assert not any("passwd" in n for n in archive.namelist())


def test_it_streams_a_directory_as_tar_with_a_length(manager, client, volumes, folder):
    root = _tree(volumes, folder)
    token = request_download(manager, folder, "top", format="tar")
    response = client.get("/download", params={"token": token})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-tar"
    assert int(response.headers["Content-Length"]) == len(response.content)
    with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
        assert archive.extractfile("top/a.txt").read() == b"alpha"
        assert archive.extractfile("top/sub/b.bin").read() == (root / "top" / "sub" / "b.bin").read_bytes()
        assert not any("passwd" in n for n in archive.getnames())
    zipped = client.get("/download", params={"token": token, "format": "zip"})
    assert zipped.headers["content-type"] == "application/zip"
    problem(client.get("/download", params={"token": token, "format": "rar"}), 400, "invalid-api-params")


def test_it_names_an_archive_of_the_folder_root_after_the_name_given(manager, client, volumes, folder):
    _tree(volumes, folder)
    token = request_download(manager, folder, ".", format="tar", name="my-data")
    response = client.get("/download", params={"token": token})
    assert "my-data.tar" in response.headers["Content-Disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
        assert "my-data/top/a.txt" in archive.getnames()
    unnamed = client.get("/download", params={"token": request_download(manager, folder, ".")})
    assert f"{folder.split('/')[1]}.zip" in unnamed.headers["Content-Disposition"]
    for name in ("", 5, "x" * 300):
        problem(manager.post("/folder/file/download", json={"volume": "v1", "vfid": folder, "relpath": ".",
                                                            "name": name}), 400, "invalid-api-params")


def test_it_reports_a_vanished_download_target(manager, client, volumes, folder):
    path = folder_dir(volumes["v1"], folder) / "gone"
    path.write_text("x")
    token = request_download(manager, folder, "gone")
    path.unlink()
    problem(client.get("/download", params={"token": token}), 404, "object-not-found")
    problem(client.post("/download", params={"token": token}), 405, "method-not-allowed")


# --- CORS ----------------------------------------------------------------------------------------------

def test_it_answers_cors_preflights_and_exposes_the_tus_headers(manager, client, folder):
    preflight = client.options("/upload", headers={"Origin": "https://ui.example", "Access-Control-Request-Method":
                                                   "PATCH", "Access-Control-Request-Headers":
                                                   "tus-resumable,upload-offset,content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    for method in ("PATCH", "HEAD", "POST", "DELETE"):
        assert method in preflight.headers["Access-Control-Allow-Methods"]
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "tus-resumable" in allowed and "upload-offset" in allowed and "upload-length" in allowed
    token = request_upload(manager, folder, "f", 3)
    response = patch(client, token, 0, b"abc", Origin="https://ui.example")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    exposed = response.headers["Access-Control-Expose-Headers"].lower()
    for header in ("upload-offset", "upload-length", "tus-resumable", "location", "content-range",
                   "content-length", "content-disposition", "accept-ranges"):
        assert header in exposed
    refused = client.get("/download", params={"token": "bad"}, headers={"Origin": "https://ui.example"})
    assert refused.status_code == 403 and refused.headers["Access-Control-Allow-Origin"] == "*"
    assert refused.headers["content-type"].startswith(PROBLEM)


def test_it_sweeps_stale_staged_uploads(volumes, tmp_path):
    from storageproxy_support import start_storage_proxy

    scope_dir = volumes["v1"] / ".staging" / folder_relpath(new_vfid())[0]
    scope_dir.mkdir(parents=True)
    stale, fresh = scope_dir / ("a" * 32 + ".part"), scope_dir / ("b" * 32 + ".part")
    stale.write_bytes(b"old")
    fresh.write_bytes(b"new")
    os.utime(stale, (time.time() - 100, time.time() - 100))
    handle = start_storage_proxy(volumes, SECRET, extra_args=("--token-lifetime", "10", "--sweep-interval", "0.2"),
                                 log_path=tmp_path / "sweep.log")
    try:
        deadline = time.monotonic() + 10
        while stale.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not stale.exists()
        assert fresh.exists()
    finally:
        handle.stop()
