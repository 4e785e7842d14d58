"""The session page's file browser (``sessions/files_ui.py``): list, download, upload with the login
cookie and the CSRF token, against the in-process agent of ``test_session_files``."""
from __future__ import annotations

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from .test_session_files import backend, kernel_io, session  # noqa: F401 - fixtures
from .test_terminal_consumers import node  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def browser(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_of(client) -> str:
    client.get(reverse("ui-sessions:list"))  # a page with a form sets the cookie
    return client.cookies["csrftoken"].value


def url(name, session):
    return reverse(f"ui-sessions:{name}", kwargs={"session_id": session.pk})


def test_the_session_page_has_the_file_card(owner, session):
    html = browser(owner).get(url("detail", session)).content.decode()
    assert 'id="files"' in html and url("files", session) in html and url("file-upload", session) in html


def test_the_listing_is_a_fragment_for_htmx_and_a_page_without_javascript(owner, session):
    (session.work / "sub").mkdir()
    (session.work / "sub" / "notes.txt").write_text("hello")
    client = browser(owner)
    fragment = client.get(url("files", session), {"path": "sub"}, HTTP_HX_REQUEST="true")
    html = fragment.content.decode()
    assert fragment.status_code == 200 and "notes.txt" in html and "<html" not in html
    assert 'id="files-upload-path"' in html and 'value="sub"' in html  # the upload form follows the listing
    page = client.get(url("files", session), {"path": "sub"}).content.decode()
    assert "<html" in page and "notes.txt" in page and url("file-download", session) in page


def test_a_file_downloads_with_its_bytes(owner, session):
    payload = os.urandom(100_000)
    (session.work / "blob.bin").write_bytes(payload)
    response = browser(owner).get(url("file-download", session), {"path": "blob.bin"})
    assert response.status_code == 200 and b"".join(response.streaming_content) == payload
    assert 'filename="blob.bin"' in response["Content-Disposition"]


def test_an_upload_needs_the_csrf_token_and_lands_in_the_directory_shown(owner, session):
    (session.work / "dest").mkdir()
    client = browser(owner)
    refused = client.post(url("file-upload", session), {"path": "dest", "file": SimpleUploadedFile("a.txt", b"x")})
    assert refused.status_code == 403 and not (session.work / "dest" / "a.txt").exists()
    token = csrf_of(client)
    response = client.post(url("file-upload", session), {"path": "dest", "csrfmiddlewaretoken": token,
                                                         "file": SimpleUploadedFile("a.txt", b"uploaded")})
    assert response.status_code == 302 and response["Location"].endswith("#files")
    assert (session.work / "dest" / "a.txt").read_bytes() == b"uploaded"


def test_paths_out_of_the_work_directory_are_refused_in_the_browser_too(owner, session):
    client = browser(owner)
    token = csrf_of(client)
    response = client.post(url("file-upload", session), {"path": "../..", "csrfmiddlewaretoken": token,
                                                         "file": SimpleUploadedFile("evil.txt", b"x")}, follow=True)
    assert "Could not upload" in response.content.decode()
    assert not list(session.work.parent.parent.rglob("evil.txt"))
    listing = client.get(url("files", session), {"path": "../"}, HTTP_HX_REQUEST="true").content.decode()
    assert "leaves the work directory" in listing
    download = client.get(url("file-download", session), {"path": "/etc/passwd"}, follow=True)
    assert "Could not download" in download.content.decode() and "root:" not in download.content.decode()


def test_an_upload_over_the_limit_is_refused(owner, session, settings):
    settings.SESSION_UPLOAD_MAX_SIZE = 10
    client = browser(owner)
    token = csrf_of(client)
    response = client.post(url("file-upload", session), {"path": ".", "csrfmiddlewaretoken": token,
                                                         "file": SimpleUploadedFile("big.bin", b"x" * 100)},
                           follow=True)
    assert "larger than the limit" in response.content.decode()
    assert not (session.work / "big.bin").exists()


def test_someone_elses_session_is_not_found(outsider, member, session):
    for user in (outsider, member):
        client = browser(user)
        token = csrf_of(client)
        assert client.get(url("files", session)).status_code == 404
        assert client.get(url("file-download", session), {"path": "x"}).status_code == 404
        response = client.post(url("file-upload", session), {"path": ".", "csrfmiddlewaretoken": token,
                                                             "file": SimpleUploadedFile("p.txt", b"x")})
        assert response.status_code == 404
    assert not (session.work / "p.txt").exists()


def test_the_superadmin_may_browse_any_session(superadmin, session):
    (session.work / "seen.txt").write_text("s")
    assert "seen.txt" in browser(superadmin).get(url("files", session), HTTP_HX_REQUEST="true").content.decode()
