"""The folder pages of issue 16: sizes and quota usage (loaded after the page, concurrently, with a
timeout), permissions spelled out, errors beside the
action, invitations that name the unknown emails, sharing project folders with their members, and
who may see and do what (owner, invited member, outsider, domain admin of another domain,
superadmin).  Django's test client against the run's storage proxy."""
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def section(content: bytes, element_id: str) -> str:
    """The markup of the element with ``id`` up to its closing tag (first one of the same name)."""
    match = re.search(rb'<(\w+)[^>]*id="' + element_id.encode() + rb'"', content)
    assert match, f"no #{element_id} on the page"
    tag = match.group(1)
    end = content.index(b"</" + tag + b">", match.end())
    return content[match.start():end].decode()


@pytest.fixture
def shared_folder(owner, member, make_folder):
    """A folder of ``owner`` with files, that ``member`` was invited to (ro) and accepted."""
    from vfolders import services

    folder = make_folder(owner, "together")
    (folder.path / "a.txt").write_bytes(b"x" * 3000)
    (folder.path / "sub").mkdir()
    services.invite(owner, folder.id.hex, "ro", [member.email])
    [inv] = services.invitations_received(member)
    services.accept_invitation(member, inv.id)
    return folder


@pytest.fixture
def lab(defaults, member, host):
    """A second project of the default domain, allowed the test host; only ``member`` belongs to it."""
    from accounts.models import Project, ProjectMembership
    from vfolders import services

    project = Project.objects.create(name="lab", domain=defaults.domain, resource_policy=defaults.project.resource_policy)
    ProjectMembership.objects.create(project=project, user=member)
    services.grant_host_permissions(project, host.name)
    return project


# --- sizes and quota usage ----------------------------------------------------------------------

SIZES = "/ui/folders/sizes/"


def size_of(content: bytes, folder) -> str:
    """The size markup the sizes fragment sends for ``folder`` (swapped in by id)."""
    return section(content, f"size-{folder.id}")


@pytest.fixture
def hang_proxy(host):
    """Moves the storage proxy ``local`` to an address that accepts connections and never answers."""
    import socket

    from vfolders.models import StorageProxy

    server = socket.create_server(("127.0.0.1", 0), backlog=128)  # the kernel accepts; nobody reads or answers

    def hang():
        StorageProxy.objects.filter(name="local").update(manager_url=f"http://127.0.0.1:{server.getsockname()[1]}")

    yield hang
    server.close()


def test_the_folder_list_shows_the_count_at_once_and_sizes_as_measuring(client, owner, make_folder, hang_proxy,
                                                                        settings):
    import time

    from accounts.models import UserResourcePolicy

    UserResourcePolicy.objects.filter(pk=owner.resource_policy_id).update(max_vfolder_count=5)
    data, empty = make_folder(owner, "data"), make_folder(owner, "empty")
    settings.STORAGE_PROXY_TIMEOUT = 30.0  # one call to the hung proxy would take that long
    hang_proxy()
    client.force_login(owner)
    started = time.monotonic()
    page = client.get("/ui/folders/")
    took = time.monotonic() - started
    assert page.status_code == 200 and took < 10, took  # the page asks the proxy nothing
    count = section(page.content, "folder-count")
    assert '<meter min="0" max="5" value="2"' in count and "2 of 5 folders" in count
    loader = section(page.content, "scope-usage")
    assert f'hx-get="{SIZES}" hx-trigger="load" hx-swap="outerHTML"' in loader and "measuring…" in loader
    for folder in (data, empty):
        assert "measuring…" in section(page.content, f"size-{folder.id}")
    assert "vfolders/sizes.js" in page.content.decode() and "<script>" not in page.content.decode()


def test_the_sizes_fragment_shows_sizes_and_quota_usage(client, owner, make_folder):
    from accounts.models import UserResourcePolicy

    UserResourcePolicy.objects.filter(pk=owner.resource_policy_id).update(max_quota_scope_size=10 * 2**20)
    folder = make_folder(owner, "data")
    (folder.path / "blob.bin").write_bytes(b"\0" * (2 * 2**20))
    client.force_login(owner)
    sizes = client.get(SIZES)
    assert sizes.status_code == 200 and sizes["X-Live-Fragment"] == "1" and b"<html" not in sizes.content
    usage = section(sizes.content, "scope-usage")
    assert f'data-scope="user:{owner.pk}"' in usage and "2.0\xa0MB of 10.0\xa0MB" in usage
    assert "measured" not in usage  # never measured before: walked now
    cell = size_of(sizes.content, folder)
    assert 'hx-swap-oob="true"' in cell and f'data-bytes="{2 * 2**20}"' in cell
    assert f'<meter min="0" max="{10 * 2**20}" value="{2 * 2**20}"' in cell and "2.0\xa0MB" in cell


def test_without_limits_the_fragment_says_unlimited(client, owner, make_folder):
    folder = make_folder(owner, "data")
    client.force_login(owner)
    assert "1 of unlimited folders" in section(client.get("/ui/folders/").content, "folder-count")
    sizes = client.get(SIZES)
    assert "of unlimited" in section(sizes.content, "scope-usage")
    cell = size_of(sizes.content, folder)
    assert "<meter" not in cell and "0\xa0bytes" in cell


def test_a_scope_usage_the_manager_keeps_is_shown_instead_of_a_walk(client, owner, make_folder):
    from datetime import timedelta

    from django.utils import timezone

    from vfolders.models import QuotaScope

    folder = make_folder(owner, "data")
    (folder.path / "blob.bin").write_bytes(b"\0" * (2 * 2**20))
    QuotaScope.objects.update_or_create(host=folder.host, quota_scope_id=folder.quota_scope_id, defaults={
        "usage_bytes": 5000, "measured_at": timezone.now() - timedelta(minutes=5)})
    client.force_login(owner)
    sizes = client.get(SIZES)
    usage = section(sizes.content, "scope-usage")
    assert "4.9\xa0KB of unlimited" in usage and "measured 5\xa0minutes ago" in usage
    assert "2.0\xa0MB" in size_of(sizes.content, folder)  # a folder's size is measured now


def test_a_hung_proxy_costs_one_timeout_and_its_sizes_show_unknown(client, owner, make_folder, settings, hang_proxy):
    import time

    folders = [make_folder(owner, f"f{i}") for i in range(20)]
    settings.VFOLDER_USAGE_TIMEOUT, settings.VFOLDER_USAGE_WORKERS = 2.0, 2
    hang_proxy()
    client.force_login(owner)
    started = time.monotonic()
    sizes = client.get(SIZES)
    took = time.monotonic() - started
    assert sizes.status_code == 200
    assert 2.0 <= took < 8, f"{took:.1f} s: the proxy was asked again after it did not answer"  # 10 rounds: 20 s
    for folder in folders:
        assert ">unknown" in size_of(sizes.content, folder)
    assert "usage unknown" in section(sizes.content, "scope-usage")


def test_a_proxy_that_does_not_answer_leaves_unknown_and_the_page_renders(client, owner, make_folder, storage_proxy):
    folder = make_folder(owner, "data")
    storage_proxy.stop()
    client.force_login(owner)
    assert client.get("/ui/folders/").status_code == 200
    sizes = client.get(SIZES)
    assert sizes.status_code == 200 and ">unknown" in size_of(sizes.content, folder)


def test_the_sizes_fragment_needs_a_login_and_a_get(client, owner):
    assert client.get(SIZES).status_code == 302
    client.force_login(owner)
    assert client.post(SIZES).status_code == 405


def test_the_folder_list_and_its_sizes_cost_the_same_queries_for_three_or_thirty_folders(
        client, owner, member, make_folder, domain_admin, defaults):
    from vfolders import services

    client.force_login(owner)

    def queries(url) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx.captured_queries)

    def add(n):
        for _ in range(n):
            i = add.counter = getattr(add, "counter", 0) + 1
            make_folder(owner, f"mine{i}")
            shared = make_folder(member, f"theirs{i}")
            services.invite(member, shared.id.hex, "rw", [owner.email])
            services.accept_invitation(owner, services.invitations_received(owner)[0].id)
            services.create_folder(domain_admin, name=f"team{i}", group=str(defaults.project.pk))

    add(1)
    few_page, few_sizes = queries("/ui/folders/"), queries(SIZES)
    add(9)
    assert queries("/ui/folders/") == few_page and queries(SIZES) == few_sizes
    assert client.get("/ui/folders/").content.count(b"data-size-pending") == 30 + 1  # + the storage block
    assert client.get(SIZES).content.count(b'hx-swap-oob="true"') == 30
    assert few_page <= 15 and few_sizes <= 12


# --- permissions spelled out ----------------------------------------------------------------------

def test_permissions_are_spelled_out_on_every_page(client, owner, member, shared_folder):
    client.force_login(member)
    listing = client.get("/ui/folders/")
    row = re.search(rb'<tr data-folder="together">.*?</tr>', listing.content, re.DOTALL).group(0).decode()
    assert ">read only<" in row
    client.force_login(owner)
    page = client.get(f"/ui/folders/{shared_folder.id}/")
    grants = section(page.content, "grants")
    assert "member@example.com" in grants and ">read only<" in grants
    choices = section(page.content, "invite-permission")
    assert "read only (ro)" in choices and "read-write (rw)" in choices and "read-write-delete (wd)" in choices


# --- the file browser -----------------------------------------------------------------------------

def test_the_file_browser_navigates_with_breadcrumbs_and_a_parent_link(client, owner, make_folder):
    folder = make_folder(owner, "docs")
    (folder.path / "a" / "b").mkdir(parents=True)
    client.force_login(owner)
    page = client.get(f"/ui/folders/{folder.id}/?path=a/b")
    crumbs = section(page.content, "breadcrumbs")
    assert f'href="/ui/folders/{folder.id}/?path=a"' in crumbs and '<span aria-current="page">b</span>' in crumbs
    assert f'href="/ui/folders/{folder.id}/?path=a" id="parent-dir"' in page.content.decode()


def test_rename_and_move_forms_are_not_nested_in_the_delete_form(client, owner, make_folder):
    folder = make_folder(owner, "docs")
    (folder.path / "a.txt").write_bytes(b"a")
    client.force_login(owner)
    page = client.get(f"/ui/folders/{folder.id}/").content.decode()
    delete_form = section(page.encode(), "delete-form")
    assert "<form" not in delete_form[5:]  # the checkboxes join it through their form attribute
    assert 'name="files" value="a.txt" form="delete-form"' in page


def test_several_files_are_deleted_at_once(client, owner, make_folder):
    folder = make_folder(owner, "docs")
    for name in ("a.txt", "b.txt", "c.txt"):
        (folder.path / name).write_bytes(b"x")
    client.force_login(owner)
    resp = client.post(f"/ui/folders/{folder.id}/delete-files/", {"path": ".", "files": ["a.txt", "c.txt"]},
                       follow=True)
    assert "Deleted 2 item(s)." in messages_of(resp)
    assert sorted(p.name for p in folder.path.iterdir()) == ["b.txt"]


def test_deleting_nothing_says_so_beside_the_delete_button_and_changes_nothing(client, owner, make_folder):
    folder = make_folder(owner, "docs")
    (folder.path / "a.txt").write_bytes(b"a")
    client.force_login(owner)
    resp = client.post(f"/ui/folders/{folder.id}/delete-files/", {"path": "."}, follow=True)
    assert "tick their boxes" in section(resp.content, "errors-files")
    messages_list = re.search(rb'<ul class="messages">(.*?)</ul>', resp.content, re.DOTALL)
    assert not messages_list or b"tick their boxes" not in messages_list.group(1)  # shown once, by the action
    assert [p.name for p in folder.path.iterdir()] == ["a.txt"]


def test_a_bad_directory_name_is_shown_beside_the_new_directory_form(client, owner, make_folder):
    folder = make_folder(owner, "docs")
    client.force_login(owner)
    resp = client.post(f"/ui/folders/{folder.id}/mkdir/", {"path": ".", "name": "a/b"}, follow=True)
    errors = section(resp.content, "errors-mkdir")
    assert "single name" in errors and 'role="alert"' in errors
    messages_list = re.search(rb'<ul class="messages">(.*?)</ul>', resp.content, re.DOTALL)
    assert not messages_list or b"single name" not in messages_list.group(1)
    assert list(folder.path.iterdir()) == []


def test_renaming_onto_a_bad_name_shows_the_error_by_the_files_and_changes_nothing(client, owner, make_folder):
    folder = make_folder(owner, "docs")
    (folder.path / "a.txt").write_bytes(b"a")
    client.force_login(owner)
    resp = client.post(f"/ui/folders/{folder.id}/rename-file/", {"path": ".", "target": "a.txt", "new_name": "../x"},
                       follow=True)
    assert section(resp.content, "errors-files").count('role="alert"') == 1
    assert [p.name for p in folder.path.iterdir()] == ["a.txt"]


# --- invitations and sharing ----------------------------------------------------------------------

def test_an_invitation_naming_an_unknown_email_names_it_and_sends_nothing(client, owner, member, make_folder):
    from vfolders.models import VFolderInvitation

    folder = make_folder(owner, "docs")
    client.force_login(owner)
    resp = client.post(f"/ui/folders/{folder.id}/invite/",
                       {"emails": f"{member.email}, nobody@example.com", "permission": "rw"}, follow=True)
    errors = section(resp.content, "errors-share")
    assert "nobody@example.com" in errors and "nothing was sent" in errors
    assert not VFolderInvitation.objects.exists()


@pytest.mark.parametrize("emails, expected", [
    ("", "This field is required."),
    (" , ", "Enter at least one email."),
    (" ".join(f"u{i}@example.com" for i in range(101)), "At most 100 emails"),
    ("x" * 300 + "@example.com", "at most"),
])
def test_bad_invitation_input_is_refused_with_a_message(client, owner, make_folder, emails, expected):
    from vfolders.models import VFolderInvitation

    folder = make_folder(owner, "docs")
    client.force_login(owner)
    resp = client.post(f"/ui/folders/{folder.id}/invite/", {"emails": emails, "permission": "rw"}, follow=True)
    assert resp.status_code == 200 and expected in section(resp.content, "errors-share")
    assert not VFolderInvitation.objects.exists()


def test_an_unknown_permission_is_refused(client, owner, member, make_folder):
    from vfolders.models import VFolderInvitation

    folder = make_folder(owner, "docs")
    client.force_login(owner)
    resp = client.post(f"/ui/folders/{folder.id}/invite/", {"emails": member.email, "permission": "rx"}, follow=True)
    assert "rx" in section(resp.content, "errors-share")
    assert not VFolderInvitation.objects.exists()


def test_inviting_someone_twice_says_they_were_invited_already(client, owner, member, make_folder):
    folder = make_folder(owner, "docs")
    client.force_login(owner)
    client.post(f"/ui/folders/{folder.id}/invite/", {"emails": member.email, "permission": "rw"})
    resp = client.post(f"/ui/folders/{folder.id}/invite/", {"emails": member.email, "permission": "rw"}, follow=True)
    assert "already invited" in section(resp.content, "errors-share")


def test_a_project_folder_is_shared_with_its_members_only(client, domain_admin, owner, member, lab):
    from vfolders import services
    from vfolders.models import VFolderGrant

    folder = services.create_folder(domain_admin, name="labdata", group=str(lab.pk), permission="ro")
    client.force_login(domain_admin)
    page = client.get(f"/ui/folders/{folder.id}/")
    members = section(page.content, "project-members")
    assert member.email in members and owner.email not in members  # the share form suggests the members
    resp = client.post(f"/ui/folders/{folder.id}/invite/", {"emails": owner.email, "permission": "rw"}, follow=True)
    assert f"{owner.email} is not a member of the project lab" in section(resp.content, "errors-share")
    assert not VFolderGrant.objects.exists()
    resp = client.post(f"/ui/folders/{folder.id}/invite/", {"emails": member.email, "permission": "rw"}, follow=True)
    assert f"Shared with {member.email}." in messages_of(resp)
    assert VFolderGrant.objects.get(vfolder=folder).permission == "rw"
    client.force_login(member)
    listing = client.get("/ui/folders/")
    assert "labdata" in section(listing.content, "project-folders")
    assert "project lab on local:volume1" in section(client.get(SIZES).content, "scope-usage")


# --- who may see and do what ------------------------------------------------------------------------

@pytest.mark.parametrize("who, section_id", [("owner", "my-folders"), ("member", "shared-folders"),
                                             ("outsider", None), ("foreign_admin", None), ("superadmin", None)])
def test_the_folder_list_shows_a_folder_with_its_size_only_to_its_users(request, client, shared_folder, who,
                                                                        section_id):
    client.force_login(request.getfixturevalue(who))
    page = client.get("/ui/folders/")
    sizes = client.get(SIZES)
    assert page.status_code == 200 and sizes.status_code == 200
    if section_id is None:  # admins find other people's folders by id, not in their own list
        assert b'data-folder="together"' not in page.content
        assert "0 of unlimited folders" in section(page.content, "folder-count")
        assert f"size-{shared_folder.id}".encode() not in sizes.content and "2.9\xa0KB" not in sizes.content.decode()
    else:
        row = re.search(r'<tr data-folder="together">.*?</tr>', section(page.content, section_id), re.DOTALL).group(0)
        assert f'id="size-{shared_folder.id}"' in row
        assert "2.9\xa0KB" in size_of(sizes.content, shared_folder)


@pytest.mark.parametrize("who, sees", [("owner", True), ("member", True), ("outsider", False),
                                       ("foreign_admin", False), ("superadmin", True)])
def test_the_folder_page_with_its_size_is_shown_to_those_who_may_see_it(request, client, shared_folder, who, sees):
    client.force_login(request.getfixturevalue(who))
    resp = client.get(f"/ui/folders/{shared_folder.id}/")
    if sees:
        assert resp.status_code == 200 and "2.9\xa0KB" in section(resp.content, "folder-size")
    else:
        assert resp.status_code == 302
        assert "No such virtual folder" in " ".join(messages_of(client.get(resp["Location"])))


@pytest.mark.parametrize("who, may", [("owner", True), ("member", False), ("outsider", False),
                                      ("foreign_admin", False), ("superadmin", True)])
def test_only_those_who_manage_a_folder_invite_to_it(request, client, shared_folder, make_user, who, may):
    from vfolders.models import VFolderInvitation

    guest = make_user("guest@example.com")
    client.force_login(request.getfixturevalue(who))
    resp = client.post(f"/ui/folders/{shared_folder.id}/invite/", {"emails": guest.email, "permission": "ro"},
                       follow=True)
    invited = VFolderInvitation.objects.filter(invitee=guest).exists()
    assert invited is may
    if not may:
        text = " ".join(messages_of(resp))
        assert "Only its owner may change" in text or "No such virtual folder" in text


@pytest.mark.parametrize("who, may", [("owner", True), ("member", False), ("outsider", False),
                                      ("foreign_admin", False), ("superadmin", True)])
def test_only_those_with_the_delete_permission_delete_files(request, client, shared_folder, who, may):
    client.force_login(request.getfixturevalue(who))
    client.post(f"/ui/folders/{shared_folder.id}/delete-files/", {"path": ".", "files": ["a.txt"]})
    assert (shared_folder.path / "a.txt").exists() is not may


@pytest.mark.parametrize("who, may", [("owner", True), ("member", False), ("outsider", False),
                                      ("foreign_admin", False), ("superadmin", True)])
def test_only_writers_create_directories(request, client, shared_folder, who, may):
    client.force_login(request.getfixturevalue(who))
    client.post(f"/ui/folders/{shared_folder.id}/mkdir/", {"path": ".", "name": "made"})
    assert (shared_folder.path / "made").exists() is may
