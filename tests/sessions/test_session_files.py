"""Files in a running session through the API: ``upload``, ``download``, ``download_single``, ``files``.

The agent's side runs in process: ``sessions.files`` talks to ``InProcessKernelIO``
(``kernel_io_support``), which calls the real openers of ``agents.daemon.files`` on a
real local-backend kernel (its work directory under ``tmp_path``) whose id is the
session's main kernel id.  The link itself is covered by ``test_kernel_io`` and
end to end by ``tests/e2e/test_session_files_e2e.py``.
"""
from __future__ import annotations

import email.parser
import email.policy
import io
import json
import os
import tarfile
import uuid
from urllib.parse import quote

import pytest

from agents.daemon import files as agent_files
from agents.protocol import CHUNK
from helpers import slug
from permission_matrix import Case, World, check, params
from sessions.kernel_io import KernelIOError
from sessions.models import Session

from .kernel_io_support import InProcessKernelIO, backend, kernel_io, start_local_kernel  # noqa: F401 - fixtures
from .test_terminal_consumers import node, running_session  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db

OWNER_ONLY = {"owner": 200, "member": 404, "outsider": 404, "foreign_admin": 404, "superadmin": 200}


@pytest.fixture
def session(owner, node, backend, kernel_io):  # noqa: F811
    session = running_session(owner, name="files")
    session.work = start_local_kernel(backend, session)
    return session


def multipart(files, boundary="bai-test-boundary"):
    """A body like the official client's: one ``src`` part per file, its filename the relative path."""
    out = io.BytesIO()
    for filename, data in files:
        filename = quote(filename, safe="")  # aiohttp percent-encodes the file name
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="src"; filename="{filename}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload(api, ref, files, target_suffix=""):
    body, content_type = multipart(files)
    return api.post(f"/session/{ref}/upload{target_suffix}", data=body, content_type=content_type)


def body_bytes(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def tar_of_download(response) -> tarfile.TarFile:
    """The one ``application/x-tar`` part of a ``multipart/mixed`` download."""
    assert response.status_code == 200, body_bytes(response)[:500]
    raw = f"Content-Type: {response['Content-Type']}\r\n\r\n".encode() + body_bytes(response)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["application/x-tar"]
    return tarfile.open(fileobj=io.BytesIO(parts[0].get_payload(decode=True)))


def snapshot(work) -> list:
    return sorted((str(p.relative_to(work)), p.stat().st_size if p.is_file() else -1) for p in work.rglob("*"))


# --- the permission matrix ------------------------------------------------------------------------

@pytest.fixture
def world(owner, member, outsider, foreign_admin, superadmin, session):
    (session.work / "marker-file.txt").write_bytes(b"marker-content-0123")
    return World(users={"owner": owner, "member": member, "outsider": outsider, "foreign_admin": foreign_admin,
                        "superadmin": superadmin}, objects={"session": session})


def _ref(world):
    return str(world.objects["session"].pk)


CASES = [
    Case("files", lambda api, w, r: api.get(f"/session/{_ref(w)}/files", data={"path": "."}), OWNER_ONLY,
         marker=lambda w: "marker-file.txt"),
    Case("download", lambda api, w, r: api.get(f"/session/{_ref(w)}/download", data={"files": ["marker-file.txt"]}),
         OWNER_ONLY, marker=lambda w: "marker-content-0123"),
    Case("download_single", lambda api, w, r: api.post(f"/session/{_ref(w)}/download_single",
                                                       data={"file": "marker-file.txt"}),
         OWNER_ONLY, marker=lambda w: "marker-content-0123"),
    Case("upload", lambda api, w, r: upload(api, _ref(w), [(f"up-{r}.txt", b"hello")]), OWNER_ONLY,
         unchanged=lambda w: snapshot(w.objects["session"].work)),
]


@pytest.mark.parametrize(("case", "role"), params(CASES))
def test_the_file_endpoints_serve_only_the_owner_and_the_superadmin(case, role, world, signed):
    check(case, role, world, signed)


# --- round trips ----------------------------------------------------------------------------------

def test_it_uploads_files_at_their_relative_paths_and_lists_them(owner, session, signed):
    api = signed(owner)
    payload = os.urandom(3 * CHUNK + 7)
    response = upload(api, session.name, [("sub/dir/data.bin", payload), ("top.txt", b"top")])
    assert response.status_code == 200, response.content
    assert [f["path"] for f in response.json()["files"]] == ["/home/work/sub/dir/data.bin", "/home/work/top.txt"]
    assert (session.work / "sub" / "dir" / "data.bin").read_bytes() == payload
    assert not [p for p in session.work.rglob("*") if agent_files.TEMP_MARK in p.name]

    listing = api.get(f"/session/{session.name}/files", data={"path": "/home/work/sub/dir"})
    assert listing.status_code == 200, listing.content
    body = listing.json()
    assert body["abspath"] == "/home/work/sub/dir" and body["errors"] == ""
    entries = json.loads(body["files"])  # the client reads a JSON text, as Backend.AI sends it
    assert [(e["filename"], e["size"], e["mode"]) for e in entries] == [("data.bin", len(payload), "-rw-r--r--")]
    assert isinstance(entries[0]["mtime"], float)


def test_the_listing_takes_the_path_from_the_query_string_too(owner, session, signed):
    (session.work / "q").mkdir()
    (session.work / "q" / "x.txt").write_text("x")
    response = signed(owner).get(f"/session/{session.name}/files?path=q")
    assert [e["filename"] for e in json.loads(response.json()["files"])] == ["x.txt"]


def test_a_download_is_one_tar_part_of_every_named_path(owner, session, signed):
    payload = os.urandom(5 * CHUNK + 3)
    (session.work / "d" / "e").mkdir(parents=True)
    (session.work / "d" / "e" / "deep.bin").write_bytes(payload)
    (session.work / "one.txt").write_text("one")
    response = signed(owner).get(f"/session/{session.name}/download", data={"files": ["d", "/home/work/one.txt"]})
    tar = tar_of_download(response)
    assert sorted(tar.getnames()) == ["d", "d/e", "d/e/deep.bin", "one.txt"]
    assert tar.extractfile("d/e/deep.bin").read() == payload
    assert response["Cache-Control"] == "no-store"


def test_download_single_answers_the_file_bytes_alone(owner, session, signed):
    payload = os.urandom(2 * CHUNK + 1)
    (session.work / "raw.bin").write_bytes(payload)
    response = signed(owner).get(f"/session/{session.name}/download_single?file=raw.bin")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert 'filename="raw.bin"' in response["Content-Disposition"]
    assert body_bytes(response) == payload


def test_an_upload_replaces_an_existing_file_whole(owner, session, signed):
    (session.work / "same.txt").write_text("old content that is longer")
    assert upload(signed(owner), session.name, [("same.txt", b"new")]).status_code == 200
    assert (session.work / "same.txt").read_bytes() == b"new"


# --- hostile input --------------------------------------------------------------------------------

@pytest.mark.parametrize("filename", ["../escape.txt", "a/../../escape.txt", "/etc/escape.txt",
                                      "/home/work/../escape.txt", "..", "/home/work", ".", "a\x01b"])
def test_an_upload_outside_the_work_directory_is_refused_and_writes_nothing(owner, session, signed, filename):
    before = snapshot(session.work)
    response = upload(signed(owner), session.name, [("fine.txt", b"ok"), (filename, b"evil")])
    assert response.status_code == 400, response.content
    assert slug(response) == "invalid-api-params"
    assert snapshot(session.work) == before  # not even the valid file before it
    assert not (session.work.parent / "escape.txt").exists()


@pytest.mark.parametrize("path", ["../", "../../etc/passwd", "/etc/passwd", "a/../..", "x" * 5000])
def test_listing_and_downloading_outside_the_work_directory_is_refused(owner, session, signed, path):
    api = signed(owner)
    assert api.get(f"/session/{session.name}/files", data={"path": path}).status_code == 400
    assert api.get(f"/session/{session.name}/download", data={"files": [path]}).status_code == 400
    assert api.get(f"/session/{session.name}/download_single", data={"file": path}).status_code == 400


def test_a_symlink_out_of_the_work_directory_is_not_followed(owner, session, signed, tmp_path):
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("do-not-leak")
    os.symlink(secret, session.work / "link")
    api = signed(owner)
    for response in (api.get(f"/session/{session.name}/download", data={"files": ["link/secret.txt"]}),
                     api.get(f"/session/{session.name}/files", data={"path": "link"}),
                     upload(api, session.name, [("link/planted.txt", b"x")])):
        assert response.status_code == 400, body_bytes(response)
        assert b"do-not-leak" not in body_bytes(response)
    assert sorted(p.name for p in secret.iterdir()) == ["secret.txt"]


def test_an_upload_over_the_limit_is_refused_before_anything_is_written(owner, session, signed, settings):
    settings.SESSION_UPLOAD_MAX_SIZE = 1000
    before = snapshot(session.work)
    response = upload(signed(owner), session.name, [("a.bin", b"a" * 600), ("b.bin", b"b" * 600)])
    assert response.status_code == 413 and slug(response) == "payload-too-large"
    assert snapshot(session.work) == before


def test_an_upload_whose_content_length_is_huge_is_refused_at_once(owner, session, signed):
    body, content_type = multipart([("a.bin", b"a")])
    response = signed(owner).post(f"/session/{session.name}/upload", data=body, content_type=content_type,
                                  extra={"CONTENT_LENGTH": str(2**62)})
    assert response.status_code == 413


def test_an_upload_without_files_or_not_multipart_is_refused(owner, session, signed):
    api = signed(owner)
    assert api.post(f"/session/{session.name}/upload", data=multipart([])[0],
                    content_type=multipart([])[1]).status_code == 400
    response = api.post(f"/session/{session.name}/upload", data={"src": "x"})
    assert response.status_code == 415


def test_the_same_path_twice_in_one_upload_is_refused(owner, session, signed):
    response = upload(signed(owner), session.name, [("a.txt", b"1"), ("./a.txt", b"2")])
    assert response.status_code == 400 and not (session.work / "a.txt").exists()


@pytest.mark.parametrize("body", ["{", "[1, 2]", '{"files": "x", "files": 3}', '{"files": 5}', '{"files": []}',
                                  '{"files": [1]}', '{"files": [null]}', '{"files": ' + json.dumps(["a"] * 101) + "}"])
def test_a_download_with_a_bad_body_is_refused(owner, session, signed, body):
    response = signed(owner).get(f"/session/{session.name}/download", data=body)
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize("body", ["{", '{"path": 3}', '{"path": ["a"]}', '{"path": null}'])
def test_a_listing_with_a_bad_body_is_refused(owner, session, signed, body):
    response = signed(owner).get(f"/session/{session.name}/files", data=body)
    assert response.status_code == 400, response.content


def test_missing_paths_are_404_and_a_directory_is_not_a_single_file(owner, session, signed):
    api = signed(owner)
    (session.work / "dir").mkdir()
    assert slug(api.get(f"/session/{session.name}/download", data={"files": ["nope"]})) == "object-not-found"
    assert api.get(f"/session/{session.name}/files", data={"path": "nope"}).status_code == 404
    assert api.get(f"/session/{session.name}/download_single", data={"file": "nope"}).status_code == 404
    assert api.get(f"/session/{session.name}/download_single", data={"file": "dir"}).status_code == 400
    (session.work / "f.txt").write_text("f")
    assert api.get(f"/session/{session.name}/files", data={"path": "f.txt"}).status_code == 400
    assert upload(api, session.name, [("dir", b"x")]).status_code == 400


def test_a_session_that_is_not_running_or_unknown_is_refused(owner, session, signed, kernel_io):  # noqa: F811
    api = signed(owner)
    Session.objects.filter(pk=session.pk).update(status="TERMINATED")
    session.kernels.update(status="TERMINATED")
    assert api.get(f"/session/{session.pk}/files").status_code == 403
    assert upload(api, str(session.pk), [("a.txt", b"x")]).status_code == 403
    assert api.get(f"/session/{uuid.uuid4()}/download", data={"files": ["a"]}).status_code == 404
    assert kernel_io == []  # nothing reached an agent


def test_a_lost_agent_is_a_503(owner, session, signed, monkeypatch):
    async def lost(self, timeout=None):
        raise KernelIOError("connection to the node lost", lost=True)

    monkeypatch.setattr(InProcessKernelIO, "open", lost)
    assert signed(owner).get(f"/session/{session.name}/files").status_code == 503
