"""The admin for hosts, folders, permissions, invitations and quota scope usage."""
import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, superadmin):
    client.force_login(superadmin)
    return client


@pytest.fixture
def populated(owner, member, make_folder):
    from vfolders import services

    folder = make_folder(owner, "data")
    (folder.path / "f.bin").write_bytes(b"x" * 2048)
    services.invite(owner, "data", "ro", [member.email])
    services.measure_scope(folder.host, folder.quota_scope_id)
    return folder


@pytest.mark.parametrize("url", [
    "/admin/vfolders/storagehost/", "/admin/vfolders/storagehost/add/", "/admin/vfolders/storagehost/local:volume1/change/",
    "/admin/vfolders/vfolder/", "/admin/vfolders/vfoldergrant/", "/admin/vfolders/vfolderinvitation/",
    "/admin/vfolders/quotascope/",
])
def test_every_folder_admin_page_opens(admin_client, populated, url):
    assert admin_client.get(url).status_code == 200


def test_the_folder_page_shows_paths_and_invitations(admin_client, populated):
    page = admin_client.get(f"/admin/vfolders/vfolder/{populated.pk}/change/").content.decode()
    assert str(populated.path) in page and "member@example.com" in page


def test_quota_usage_shows_owner_usage_and_live_limit(admin_client, populated, owner):
    from accounts.models import UserResourcePolicy

    UserResourcePolicy.objects.filter(name="default").update(max_quota_scope_size=4096)
    page = admin_client.get("/admin/vfolders/quotascope/").content.decode()
    assert owner.email in page and "2 KiB" in page and "4 KiB" in page and "50.0%" in page


def test_folder_actions_go_through_the_trash(admin_client, populated):
    admin_client.post("/admin/vfolders/vfolder/", {"action": "trash_folders", "_selected_action": [populated.pk]})
    populated.refresh_from_db()
    assert populated.status == "delete-pending"
    admin_client.post("/admin/vfolders/vfolder/", {"action": "restore_folders", "_selected_action": [populated.pk]})
    populated.refresh_from_db()
    assert populated.status == "ready"
    admin_client.post("/admin/vfolders/vfolder/", {"action": "trash_folders", "_selected_action": [populated.pk]})
    admin_client.post("/admin/vfolders/vfolder/", {"action": "purge_folders", "_selected_action": [populated.pk]})
    populated.refresh_from_db()
    assert populated.status == "delete-complete" and not populated.path.exists()


def test_the_measure_action_re_reads_the_disk(admin_client, populated):
    from vfolders.models import QuotaScope

    (populated.path / "more.bin").write_bytes(b"y" * 1000)
    scope = QuotaScope.objects.get()
    admin_client.post("/admin/vfolders/quotascope/", {"action": "measure", "_selected_action": [scope.pk]})
    scope.refresh_from_db()
    assert scope.usage_bytes == 3048 and scope.usage_files == 2
