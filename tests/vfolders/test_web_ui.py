"""The folder pages with Django's test client (no JavaScript): every action is a
form that works on its own."""
import re

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

pytestmark = pytest.mark.django_db


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def web(client, owner, host):
    client.force_login(owner)
    return client


def test_pages_need_a_login(client, host):
    resp = client.get("/ui/folders/")
    assert resp.status_code == 302 and "/ui/login/" in resp["Location"]


def test_creating_a_folder_from_the_form_opens_it(web, owner):
    from vfolders.models import VFolder

    page = web.get("/ui/folders/")
    assert page.status_code == 200
    assert b'id="create-folder"' in page.content and b"local:volume1" in page.content
    resp = web.post("/ui/folders/", {"name": "photos", "host": "local:volume1", "usage_mode": "general",
                                     "permission": "rw"})
    folder = VFolder.objects.get(name="photos")
    assert resp.status_code == 302 and resp["Location"] == f"/ui/folders/{folder.id}/"
    listing = web.get("/ui/folders/")
    assert re.search(rb'id="my-folders".*photos', listing.content, re.S)


def test_a_duplicate_or_reserved_name_is_shown_beside_the_field(web, owner, make_folder):
    make_folder(owner, "photos")
    resp = web.post("/ui/folders/", {"name": "photos", "host": "local:volume1", "usage_mode": "general",
                                     "permission": "rw"})
    assert resp.status_code == 400
    assert b'class="field-error"' in resp.content and b"already exists" in resp.content
    resp = web.post("/ui/folders/", {"name": ".ssh", "host": "local:volume1", "usage_mode": "general",
                                     "permission": "rw"})
    assert resp.status_code == 400 and b"reserved" in resp.content


def test_browsing_uploading_downloading_and_organising_files(web, owner, make_folder, storage_proxy):
    folder = make_folder(owner, "docs")
    base = f"/ui/folders/{folder.id}/"
    resp = web.post(base + "upload/", {"path": ".", "files": [SimpleUploadedFile("a.txt", b"alpha"),
                                                             SimpleUploadedFile("b.txt", b"")]})
    assert resp.status_code == 302
    assert (folder.path / "a.txt").read_bytes() == b"alpha" and (folder.path / "b.txt").read_bytes() == b""
    assert web.post(base + "mkdir/", {"path": ".", "name": "sub"}).status_code == 302
    assert (folder.path / "sub").is_dir()
    web.post(base + "upload/", {"path": "sub", "files": [SimpleUploadedFile("c.txt", b"gamma")]})
    assert (folder.path / "sub" / "c.txt").read_bytes() == b"gamma"

    page = web.get(base + "?path=sub")
    assert page.status_code == 200
    crumbs = re.search(rb'id="breadcrumbs">(.*?)</nav>', page.content, re.S).group(1)
    assert b"docs" in crumbs and b"sub" in crumbs
    assert b'data-name="c.txt"' in page.content

    link = web.get(base + "download/?path=sub/c.txt")  # the browser fetches the file from the storage proxy
    assert link.status_code == 302 and link["Location"].startswith(storage_proxy.client_url + "/download?token=")
    file = httpx.get(link["Location"], timeout=10)
    assert file.status_code == 200 and file.content == b"gamma"

    assert web.post(base + "rename-file/", {"path": "sub", "target": "sub/c.txt", "new_name": "d.txt"}
                    ).status_code == 302
    assert (folder.path / "sub" / "d.txt").exists()
    resp = web.post(base + "delete-files/", {"path": ".", "files": ["a.txt", "sub"]}, follow=True)
    assert "Deleted 2 item(s)." in messages_of(resp)
    assert sorted(p.name for p in folder.path.iterdir()) == ["b.txt"]


def test_escaping_paths_in_forms_are_reported_and_change_nothing(web, owner, make_folder):
    folder = make_folder(owner, "docs")
    base = f"/ui/folders/{folder.id}/"
    resp = web.post(base + "mkdir/", {"path": ".", "name": "../../evil"}, follow=True)
    assert any("single name without '/'" in m for m in messages_of(resp))  # a name, not a path
    resp = web.post(base + "mkdir/", {"path": "..", "name": "evil"}, follow=True)
    assert any("'..'" in m for m in messages_of(resp))
    resp = web.post(base + "upload/", {"path": "../..", "files": [SimpleUploadedFile("x.txt", b"x")]},
                    follow=True)
    assert any("'..'" in m for m in messages_of(resp))
    assert list(folder.path.iterdir()) == []


def test_the_upload_script_gets_a_token_from_the_page(web, owner, make_folder, storage_proxy):
    folder = make_folder(owner, "docs")
    resp = web.post(f"/ui/folders/{folder.id}/request-upload/", {"path": "x.bin", "size": 3},
                    content_type="application/json")
    assert resp.status_code == 200
    body = resp.json()
    assert body["url"] == storage_proxy.client_url + "/upload" and body["token"] and body["expires_in"] > 0
    bad = web.post(f"/ui/folders/{folder.id}/request-upload/", {"path": "../x", "size": 3},
                   content_type="application/json")
    assert bad.status_code == 400 and "'..'" in bad.json()["msg"]
    page = web.get(f"/ui/folders/{folder.id}/")
    assert b"vfolders/upload.js" in page.content and b'id="upload-form"' in page.content
    # the script sends the bytes to the proxy's client API: the page's policy lets it connect there
    policy = page["Content-Security-Policy"]
    connect = next(d for d in policy.split(";") if d.strip().startswith("connect-src"))
    assert storage_proxy.client_url in connect.split() and "'self'" in connect


def test_the_trash_restores_and_purges(web, owner, make_folder):
    folder = make_folder(owner, "old")
    resp = web.post(f"/ui/folders/{folder.id}/trash/", follow=True)
    assert b'id="trash"' in resp.content
    web.post(f"/ui/folders/{folder.id}/restore/")
    folder.refresh_from_db()
    assert folder.status == "ready"
    web.post(f"/ui/folders/{folder.id}/trash/")
    web.post(f"/ui/folders/{folder.id}/purge/")
    folder.refresh_from_db()
    assert folder.status == "delete-complete" and not folder.path.exists()


def test_invite_accept_and_find_it_shared(client, owner, member, make_folder):
    folder = make_folder(owner, "together")
    client.force_login(owner)
    resp = client.post(f"/ui/folders/{folder.id}/invite/", {"emails": member.email, "permission": "ro"}, follow=True)
    assert f"Invited {member.email}." in messages_of(resp)
    client.force_login(member)
    assert b'id="pending-invitations">1<' in client.get("/ui/folders/").content
    inbox = client.get("/ui/folders/invitations/")
    inv_id = re.search(rb'name="inv_id" value="([0-9a-f-]+)"', inbox.content).group(1).decode()
    resp = client.post("/ui/folders/invitations/", {"inv_id": inv_id, "op": "accept"}, follow=True)
    assert "You can now use the folder together." in messages_of(resp)
    listing = client.get("/ui/folders/")
    assert re.search(rb'id="shared-folders".*together', listing.content, re.S)
    page = client.get(f"/ui/folders/{folder.id}/")
    assert b'id="my-permission" title="ro">read only<' in page.content and b'id="upload-form"' not in page.content
    assert client.post(f"/ui/folders/{folder.id}/leave/").status_code == 302
    assert client.get(f"/ui/folders/{folder.id}/").status_code == 302


def test_someone_elses_folder_is_not_shown(client, member, owner, make_folder):
    folder = make_folder(owner, "private")
    client.force_login(member)
    resp = client.get(f"/ui/folders/{folder.id}/", follow=True)
    assert "No such virtual folder" in " ".join(messages_of(resp))


def test_the_folder_list_page_costs_a_bounded_number_of_queries(web, owner, make_folder, make_user,
                                                                 django_assert_max_num_queries):
    for i in range(8):
        make_folder(owner, f"f{i}")
    with django_assert_max_num_queries(16):
        resp = web.get("/ui/folders/")
    assert resp.status_code == 200 and resp.content.count(b"data-folder=") == 8


def test_moving_a_file_into_a_directory_from_the_page(web, owner, make_folder):
    folder = make_folder(owner, "docs")
    (folder.path / "a.txt").write_bytes(b"a")
    (folder.path / "archive").mkdir()
    page = web.get(f"/ui/folders/{folder.id}/")
    assert b'name="dst"' in page.content
    resp = web.post(f"/ui/folders/{folder.id}/move-file/", {"path": ".", "src": "a.txt", "dst": "archive"},
                    follow=True)
    assert "Moved to archive/a.txt." in messages_of(resp)
    assert (folder.path / "archive" / "a.txt").exists()
