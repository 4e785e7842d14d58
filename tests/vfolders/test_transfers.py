"""Uploads (tus 1.0 as the official client and browsers speak it) and downloads
(Content-Length, Range, If-Range, archives), with tokens, sizes and quotas: the manager answers
``request-upload``/``request-download`` with a token and the storage proxy's client-API URL, and
the bytes go to the proxy, never through the manager."""
import io
import os
import socket
import tarfile
import time
import zipfile
from urllib.parse import urlsplit

import pytest

from helpers import slug

pytestmark = pytest.mark.django_db


def staged_files(vfroot):
    staging = vfroot / "volume1" / ".staging"
    return sorted(p.name for p in staging.rglob("*") if p.is_file()) if staging.exists() else []


def set_quota(size):
    from accounts.models import UserResourcePolicy

    UserResourcePolicy.objects.filter(name="default").update(max_quota_scope_size=size)


# --- uploads ----------------------------------------------------------------------------------

def test_chunks_are_answered_204_with_the_new_offset_and_the_file_appears_only_at_the_end(
        owner, make_folder, transfers, vfroot):
    folder = make_folder(owner, "up")
    t = transfers(owner)
    data = os.urandom(300_000)
    target = t.request_upload("up", "deep/dir/file.bin", len(data))
    first = t.patch(target, 0, data[:100_000])
    assert first.status_code == 204 and first["Upload-Offset"] == "100000"
    assert first["Tus-Resumable"] == "1.0.0"
    assert not (folder.path / "deep").exists()  # nothing user-visible while incomplete
    assert staged_files(vfroot)  # ... the bytes wait outside the folder
    head = t.head(target)
    assert head.status_code == 200 and head["Upload-Offset"] == "100000" and head["Upload-Length"] == "300000"
    last = t.patch(target, 100_000, data[100_000:])
    assert last.status_code == 204 and last["Upload-Offset"] == "300000"
    assert (folder.path / "deep" / "dir" / "file.bin").read_bytes() == data
    assert oct((folder.path / "deep" / "dir" / "file.bin").stat().st_mode & 0o777) == "0o644"
    assert t.head(target)["Upload-Offset"] == "300000"  # a client that lost the last answer sees it done
    assert [name for name in staged_files(vfroot) if name.endswith(".part")] == []


def test_an_upload_replaces_an_existing_file_atomically(owner, make_folder, transfers):
    folder = make_folder(owner, "up")
    (folder.path / "f.txt").write_bytes(b"old contents")
    t = transfers(owner)
    target = t.request_upload("up", "f.txt", 3)
    assert t.patch(target, 0, b"ne").status_code == 204
    assert (folder.path / "f.txt").read_bytes() == b"old contents"  # untouched until complete
    assert t.patch(target, 2, b"w").status_code == 204
    assert (folder.path / "f.txt").read_bytes() == b"new"


def test_an_empty_file_is_created_at_once_because_the_client_sends_no_patch(owner, make_folder, transfers):
    folder = make_folder(owner, "up")
    target = transfers(owner).request_upload("up", "empty.txt", 0)
    assert (folder.path / "empty.txt").read_bytes() == b""
    assert transfers(owner).head(target)["Upload-Offset"] == "0"


def test_a_wrong_offset_is_a_409_that_tells_the_stored_offset(owner, make_folder, transfers):
    make_folder(owner, "up")
    t = transfers(owner)
    target = t.request_upload("up", "f.bin", 10)
    assert t.patch(target, 0, b"12345").status_code == 204
    resp = t.patch(target, 0, b"12345")
    assert resp.status_code == 409 and resp["Upload-Offset"] == "5"
    assert slug(resp) == "upload-offset-conflict"
    assert t.patch(target, 5, b"67890").status_code == 204


def test_going_past_the_declared_size_removes_the_partial_upload(owner, make_folder, transfers, vfroot):
    folder = make_folder(owner, "up")
    t = transfers(owner)
    target = t.request_upload("up", "f.bin", 10)
    assert t.patch(target, 0, b"12345").status_code == 204
    resp = t.patch(target, 5, b"1234567")
    assert resp.status_code == 413 and slug(resp) == "payload-too-large"
    assert not (folder.path / "f.bin").exists()
    assert staged_files(vfroot) == []


def test_the_declared_size_must_fit_the_quota_before_the_upload_starts(owner, make_folder, transfers):
    make_folder(owner, "up")
    set_quota(1000)
    resp = transfers(owner).api.post("/folders/up/request-upload", {"path": "big.bin", "size": 1001})
    assert resp.status_code == 412 and slug(resp) == "quota-exceeded"


def test_quota_exceeded_mid_upload_leaves_no_file(owner, make_folder, transfers, vfroot):
    folder = make_folder(owner, "up")
    set_quota(1000)
    t = transfers(owner)
    first = t.request_upload("up", "a.bin", 600)
    assert t.patch(first, 0, b"a" * 300).status_code == 204
    # meanwhile another upload fills the scope: 300 staged + 500 fit the 1000 bytes
    t.upload("up", "b.bin", b"b" * 500)
    resp = t.patch(first, 300, b"a" * 300)
    assert resp.status_code == 413 and slug(resp) == "quota-exceeded"
    assert "partial upload was removed" in resp.json()["msg"]
    assert not (folder.path / "a.bin").exists()
    assert (folder.path / "b.bin").stat().st_size == 500
    assert [n for n in staged_files(vfroot) if n.endswith(".part")] == []


def test_a_quota_lowered_during_an_upload_stops_it(owner, superadmin, make_folder, transfers, vfroot):
    from vfolders import services

    folder = make_folder(owner, "up")
    t = transfers(owner)
    target = t.request_upload("up", "a.bin", 2000)
    assert t.patch(target, 0, b"x" * 1000).status_code == 204
    # an admin lowers the scope's limit: the manager pushes it to the proxy at once
    services.set_quota_scope(superadmin, "local:volume1", f"user:{owner.pk}", 1500)
    resp = t.patch(target, 1000, b"x" * 1000)
    assert resp.status_code == 413 and slug(resp) == "quota-exceeded"
    assert not (folder.path / "a.bin").exists() and staged_files(vfroot) == []


def test_a_resource_policy_lowered_during_an_upload_stops_it(owner, superadmin, make_folder, transfers, vfroot,
                                                            django_capture_on_commit_callbacks):
    from accounts.services import policies

    folder = make_folder(owner, "up")
    t = transfers(owner)
    target = t.request_upload("up", "a.bin", 2000)
    assert t.patch(target, 0, b"x" * 1000).status_code == 204
    with django_capture_on_commit_callbacks(execute=True):  # the new limit is pushed once it is committed
        policies.admin_modify_policy(superadmin, policies.USER, "default", {"max_quota_scope_size": 1500})
    resp = t.patch(target, 1000, b"x" * 1000)
    assert resp.status_code == 413 and slug(resp) == "quota-exceeded"
    assert not (folder.path / "a.bin").exists() and staged_files(vfroot) == []


def test_a_chunk_larger_than_the_limit_is_refused(owner, make_folder, transfers, repoint_proxy):
    make_folder(owner, "up")
    repoint_proxy("--max-chunk-size", "8")
    t = transfers(owner)
    target = t.request_upload("up", "a.bin", 20)
    assert t.patch(target, 0, b"x" * 9).status_code == 413
    assert t.patch(target, 0, b"x" * 8).status_code == 204


def test_tus_creation_head_termination_and_options(owner, make_folder, transfers, storage_proxy):
    folder = make_folder(owner, "up")
    t = transfers(owner)
    client = t.client
    target = t.request_upload("up", "f.bin", 4)
    assert target.startswith(storage_proxy.client_url + "/upload?token=")
    created = client.post(target, HTTP_TUS_RESUMABLE="1.0.0", HTTP_UPLOAD_LENGTH="4")
    assert created.status_code == 201 and created["Upload-Offset"] == "0"
    assert urlsplit(created["Location"]).path == "/upload"
    wrong = client.post(target, HTTP_TUS_RESUMABLE="1.0.0", HTTP_UPLOAD_LENGTH="5")
    assert wrong.status_code == 400
    assert t.patch(target, 0, b"ab").status_code == 204
    assert client.generic("DELETE", target, HTTP_TUS_RESUMABLE="1.0.0").status_code == 204
    assert t.head(target)["Upload-Offset"] == "0"
    assert not (folder.path / "f.bin").exists()
    options = client.options(storage_proxy.client_url + "/upload")
    assert options.status_code == 204 and options["Tus-Version"] == "1.0.0"
    assert "creation" in options["Tus-Extension"]


def test_bad_tus_requests_get_clear_errors(owner, make_folder, transfers):
    make_folder(owner, "up")
    t = transfers(owner)
    client = t.client
    target = t.request_upload("up", "f.bin", 4)
    old = t.patch(target, 0, b"ab", HTTP_TUS_RESUMABLE="0.2.2")
    assert old.status_code == 412 and old["Tus-Version"] == "1.0.0"
    wrong_type = client.generic("PATCH", target, b"ab", content_type="application/octet-stream",
                                HTTP_TUS_RESUMABLE="1.0.0", HTTP_UPLOAD_OFFSET="0")
    assert wrong_type.status_code == 415
    no_offset = client.generic("PATCH", target, b"ab", content_type="application/offset+octet-stream",
                               HTTP_TUS_RESUMABLE="1.0.0")
    assert no_offset.status_code == 400 and slug(no_offset) == "invalid-api-params"
    assert client.get(target).status_code == 405


@pytest.mark.parametrize("mangle", [
    lambda t: t.replace("token=", "token=x"),
    lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"),
    lambda t: t.split("?")[0],
])
def test_a_missing_or_tampered_token_is_refused(owner, make_folder, transfers, mangle):
    make_folder(owner, "up")
    t = transfers(owner)
    target = t.request_upload("up", "f.bin", 4)
    resp = t.patch(mangle(target), 0, b"abcd")
    assert resp.status_code == 403 and slug(resp) == "generic-forbidden"


def test_tokens_expire_and_are_bound_to_their_operation(owner, make_folder, transfers, repoint_proxy):
    folder = make_folder(owner, "up")
    (folder.path / "f.bin").write_bytes(b"data")
    t = transfers(owner)
    download = t.request_download("up", "f.bin")
    as_upload = download.replace("/download?", "/upload?")
    assert t.patch(as_upload, 0, b"abcd").status_code == 403
    target = t.request_upload("up", "g.bin", 4)
    assert t.client.get(target.replace("/upload?", "/download?")).status_code == 403
    repoint_proxy("--token-lifetime", "1")
    target = t.request_upload("up", "g.bin", 4)
    time.sleep(2.1)
    resp = t.patch(target, 0, b"abcd")
    assert resp.status_code == 403 and "expired" in resp.json()["msg"]


def test_losing_access_refuses_new_tokens_and_old_ones_end_with_their_lifetime(
        owner, member, make_folder, transfers, repoint_proxy):
    """The storage proxy trusts the token alone (as Backend.AI's does): access is checked when the
    manager hands one out, and a token lives only ``--token-lifetime`` seconds."""
    from vfolders import services

    make_folder(owner, "shared")
    services.invite(owner, "shared", "rw", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    repoint_proxy("--token-lifetime", "2")
    t = transfers(member)
    target = t.request_upload("shared", "f.bin", 4)
    assert t.patch(target, 0, b"ab").status_code == 204
    services.leave(owner, "shared", str(member.pk))
    refused = t.api.post("/folders/shared/request-upload", {"path": "g.bin", "size": 1})
    assert refused.status_code == 404 and slug(refused) == "object-not-found"
    time.sleep(3.1)
    assert t.patch(target, 2, b"cd").status_code == 403


def test_uploading_onto_a_directory_is_refused(owner, make_folder, transfers):
    folder = make_folder(owner, "up")
    (folder.path / "d").mkdir()
    resp = transfers(owner).api.post("/folders/up/request-upload", {"path": "d", "size": 3})
    assert resp.status_code == 400 and slug(resp) == "vfolder-operation-failed"


def test_read_only_users_cannot_request_uploads(owner, member, make_folder, transfers):
    from vfolders import services

    make_folder(owner, "shared")
    services.invite(owner, "shared", "ro", [member.email])
    services.accept_invitation(member, services.invitations_received(member)[0].id)
    resp = transfers(member).api.post("/folders/shared/request-upload", {"path": "f", "size": 1})
    assert resp.status_code == 400 and slug(resp) == "vfolder-permission-error"


def test_a_resumed_upload_after_a_cut_connection_ends_byte_identical(owner, make_folder, signed):
    import requests

    folder = make_folder(owner, "resume")
    data = os.urandom(3 * 2**20 + 12345)
    api = signed(owner)
    body = api.post("/folders/resume/request-upload", {"path": "big.bin", "size": len(data)}).json()
    url = body["url"] + "?token=" + body["token"]
    parts = urlsplit(url)

    # The first chunk announces 2 MiB but the connection is cut after 1 MiB and a bit.
    chunk, sent = 2 * 2**20, 2**20 + 777
    head = (f"PATCH {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {chunk}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + data[:sent])
        sock.shutdown(socket.SHUT_WR)  # the client side is gone mid-body
        while sock.recv(65536):
            pass
    assert not (folder.path / "big.bin").exists()

    tus = {"Tus-Resumable": "1.0.0"}
    offset = int(requests.head(url, headers=tus, timeout=10).headers["Upload-Offset"])
    assert 0 < offset <= sent  # what arrived was kept
    while offset < len(data):
        resp = requests.patch(url, data=data[offset:offset + chunk], timeout=30, headers={
            **tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        assert resp.status_code == 204, resp.text
        offset = int(resp.headers["Upload-Offset"])
    assert (folder.path / "big.bin").read_bytes() == data


# --- downloads --------------------------------------------------------------------------------

@pytest.fixture
def sample(owner, make_folder):
    folder = make_folder(owner, "down")
    data = bytes(range(256)) * 40
    (folder.path / "f.bin").write_bytes(data)
    return folder, data


def test_a_download_carries_content_length_last_modified_and_accept_ranges(owner, sample, transfers):
    folder, data = sample
    t = transfers(owner)
    resp = t.download("down", "f.bin")
    assert resp.status_code == 200
    assert resp["Content-Length"] == str(len(data))
    assert resp["Accept-Ranges"] == "bytes" and resp["Last-Modified"] and resp["ETag"]
    assert 'filename="f.bin"' in resp["Content-Disposition"]
    assert t.body(resp) == data


@pytest.mark.parametrize("header,start,end", [
    ("bytes=2-4", 2, 4), ("bytes=100-", 100, 10239), ("bytes=-10", 10230, 10239), ("bytes=10000-99999", 10000, 10239),
])
def test_a_single_range_is_answered_206(owner, sample, transfers, header, start, end):
    folder, data = sample
    t = transfers(owner)
    resp = t.download("down", "f.bin", HTTP_RANGE=header)
    assert resp.status_code == 206
    assert resp["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert resp["Content-Length"] == str(end - start + 1)
    assert t.body(resp) == data[start:end + 1]


def test_an_unsatisfiable_range_is_416_and_several_ranges_get_the_whole_file(owner, sample, transfers):
    folder, data = sample
    t = transfers(owner)
    resp = t.download("down", "f.bin", HTTP_RANGE=f"bytes={len(data)}-")
    assert resp.status_code == 416 and resp["Content-Range"] == f"bytes */{len(data)}"
    assert slug(resp) == "range-not-satisfiable"
    many = t.download("down", "f.bin", HTTP_RANGE="bytes=0-1,5-6")
    assert many.status_code == 200 and t.body(many) == data


def test_if_range_resumes_only_an_unchanged_file(owner, sample, transfers):
    folder, data = sample
    t = transfers(owner)
    last_modified = t.download("down", "f.bin")["Last-Modified"]
    resumed = t.download("down", "f.bin", HTTP_RANGE="bytes=10-", HTTP_IF_RANGE=last_modified)
    assert resumed.status_code == 206 and t.body(resumed) == data[10:]
    stale = t.download("down", "f.bin", HTTP_RANGE="bytes=10-", HTTP_IF_RANGE="Mon, 01 Jan 2001 00:00:00 GMT")
    assert stale.status_code == 200 and t.body(stale) == data


def test_head_tells_the_size_without_a_body(owner, sample, transfers):
    folder, data = sample
    t = transfers(owner)
    target = t.request_download("down", "f.bin")
    resp = t.client.head(target)
    assert resp.status_code == 200 and resp["Content-Length"] == str(len(data)) and resp.content == b""


@pytest.fixture
def tree(owner, make_folder):
    folder = make_folder(owner, "tree")
    (folder.path / "a").mkdir()
    (folder.path / "a" / "one.txt").write_bytes(b"one")
    (folder.path / "a" / "empty").mkdir()
    (folder.path / "a" / "sub").mkdir()
    (folder.path / "a" / "sub" / "two.bin").write_bytes(os.urandom(5000))
    return folder


def test_a_directory_downloads_as_a_streamed_zip(owner, tree, transfers):
    t = transfers(owner)
    resp = t.download("tree", "a")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(t.body(resp)))
    assert sorted(archive.namelist()) == ["a/", "a/empty/", "a/one.txt", "a/sub/", "a/sub/two.bin"]
    assert archive.read("a/one.txt") == b"one"
    assert archive.read("a/sub/two.bin") == (tree.path / "a" / "sub" / "two.bin").read_bytes()


def test_a_directory_downloads_as_a_tar_of_the_announced_length(owner, tree, transfers):
    t = transfers(owner)
    resp = t.client.get(t.request_download("tree", ".", format="tar"))
    assert resp.status_code == 200 and resp["Content-Type"] == "application/x-tar"
    body = t.body(resp)
    assert int(resp["Content-Length"]) == len(body)
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        names = sorted(archive.getnames())
        assert names == ["tree", "tree/a", "tree/a/empty", "tree/a/one.txt", "tree/a/sub", "tree/a/sub/two.bin"]
        assert archive.extractfile("tree/a/one.txt").read() == b"one"


def test_downloading_a_missing_file_is_a_404_before_any_token(owner, make_folder, transfers):
    make_folder(owner, "down")
    resp = transfers(owner).api.post("/folders/down/request-download", {"path": "nope.bin"})
    assert resp.status_code == 404 and slug(resp) == "object-not-found"


def test_the_manager_serves_no_file_bytes(owner, make_folder, transfers, client, storage_proxy):
    """The tokens point at the proxy's client API; the manager has no transfer route of its own."""
    from django.urls import NoReverseMatch, reverse

    make_folder(owner, "bytes")
    t = transfers(owner)
    upload = t.request_upload("bytes", "f.bin", 3)
    assert urlsplit(upload)._replace(query="").geturl() == storage_proxy.client_url + "/upload"
    assert t.patch(upload, 0, b"abc").status_code == 204
    download = t.request_download("bytes", "f.bin")
    assert urlsplit(download)._replace(query="").geturl() == storage_proxy.client_url + "/download"
    assert t.client.get(download).content == b"abc"
    token = urlsplit(upload).query
    for path in ("/storage/upload", "/storage/download"):
        assert client.generic("PATCH", f"{path}?{token}", b"abc").status_code == 404
        assert client.get(f"{path}?{token}").status_code == 404
    for name in ("vfolder-storage-upload", "vfolder-storage-download"):
        with pytest.raises(NoReverseMatch):
            reverse(name)
