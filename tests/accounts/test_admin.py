"""The Django admin: searching, filtering, inlines and actions, all through services."""
import pytest

from accounts.models import Keypair, KeypairResourcePolicy, User, UserResourcePolicy, UserStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, superadmin):
    client.force_login(superadmin)
    return client


@pytest.mark.parametrize("url", [
    "/admin/accounts/user/", "/admin/accounts/keypair/", "/admin/accounts/domain/", "/admin/accounts/project/",
    "/admin/accounts/keypairresourcepolicy/", "/admin/accounts/userresourcepolicy/",
    "/admin/accounts/projectresourcepolicy/", "/admin/backendai/announcement/", "/admin/backendai/resourceslottype/",
    "/admin/accounts/user/add/", "/admin/accounts/keypair/add/",
])
def test_every_accounts_page_opens(admin_client, owner, url):
    assert admin_client.get(url).status_code == 200


def test_users_can_be_searched_and_filtered(admin_client, owner, outsider):
    found = admin_client.get("/admin/accounts/user/?q=outsider").content.decode()
    assert "outsider@other.example.com" in found and "owner@example.com" not in found
    filtered = admin_client.get("/admin/accounts/user/?domain__name__exact=other").content.decode()
    assert "outsider@other.example.com" in filtered and "owner@example.com" not in filtered


def test_the_user_page_shows_keypairs_and_memberships_inline(admin_client, owner):
    page = admin_client.get(f"/admin/accounts/user/{owner.pk}/change/").content.decode()
    assert owner.main_keypair_id in page and owner.main_keypair.secret_key not in page
    assert "memberships" in page


def test_deactivate_and_activate_actions(admin_client, owner, member):
    admin_client.post("/admin/accounts/user/", {"action": "deactivate_users", "_selected_action": [owner.pk, member.pk]})
    assert set(User.objects.filter(pk__in=[owner.pk, member.pk]).values_list("status", flat=True)) == {UserStatus.INACTIVE}
    admin_client.post("/admin/accounts/user/", {"action": "activate_users", "_selected_action": [owner.pk]})
    assert User.objects.get(pk=owner.pk).status == UserStatus.ACTIVE


def test_a_superadmin_cannot_deactivate_themselves(admin_client, superadmin):
    admin_client.post("/admin/accounts/user/", {"action": "deactivate_users", "_selected_action": [superadmin.pk]})
    assert User.objects.get(pk=superadmin.pk).status == UserStatus.ACTIVE


def test_assign_policy_actions(admin_client, owner):
    strict_user = UserResourcePolicy.objects.create(name="strict")
    strict_kp = KeypairResourcePolicy.objects.create(name="strict-kp", default_for_unspecified="LIMITED")
    admin_client.post("/admin/accounts/user/", {"action": "assign_user_policy", "policy": "strict",
                                                "_selected_action": [owner.pk]})
    admin_client.post("/admin/accounts/keypair/", {"action": "assign_keypair_policy", "policy": "strict-kp",
                                                   "_selected_action": [owner.main_keypair_id]})
    assert User.objects.get(pk=owner.pk).resource_policy == strict_user
    assert Keypair.objects.get(pk=owner.main_keypair_id).resource_policy == strict_kp


def test_regenerating_someone_elses_secret_changes_it_without_showing_it(admin_client, owner):
    old = owner.main_keypair.secret_key
    response = admin_client.post("/admin/accounts/keypair/", {"action": "regenerate_secret",
                                                              "_selected_action": [owner.main_keypair_id]}, follow=True)
    new = Keypair.objects.get(pk=owner.main_keypair_id).secret_key
    assert new != old and new not in response.content.decode()
    assert "only its owner sees it" in response.content.decode()
    assert new not in admin_client.get("/admin/accounts/keypair/").content.decode()


def test_regenerating_ones_own_secret_shows_it_once(admin_client, superadmin):
    response = admin_client.post("/admin/accounts/keypair/", {"action": "regenerate_secret",
                                                              "_selected_action": [superadmin.main_keypair_id]},
                                 follow=True)
    new = Keypair.objects.get(pk=superadmin.main_keypair_id).secret_key
    assert new in response.content.decode()
    assert new not in admin_client.get("/admin/accounts/keypair/").content.decode()


def test_adding_a_user_in_the_admin_creates_a_main_keypair(admin_client, defaults):
    response = admin_client.post("/admin/accounts/user/add/", {
        "email": "new@example.com", "username": "newbie", "password": "a-fine-long-passphrase", "full_name": "New",
        "role": "user", "status": "active", "domain": "default", "resource_policy": "default",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    user = User.objects.get(email="new@example.com")
    assert user.main_keypair is not None and user.check_password("a-fine-long-passphrase")
    assert user.projects.filter(name="default").exists()


def test_adding_a_user_with_a_weak_password_shows_the_error_beside_the_field(admin_client, defaults):
    response = admin_client.post("/admin/accounts/user/add/", {
        "email": "weak@example.com", "username": "weak", "password": "123", "role": "user", "status": "active",
        "domain": "default", "resource_policy": "default",
    })
    assert response.status_code == 200 and b"too short" in response.content
    assert not User.objects.filter(email="weak@example.com").exists()


def test_adding_a_keypair_for_someone_else_in_the_admin_never_shows_its_secret(admin_client, owner, defaults):
    response = admin_client.post("/admin/accounts/keypair/add/", {
        "user": owner.pk, "resource_policy": "default", "rate_limit": 500, "is_active": "on"}, follow=True)
    created = Keypair.objects.filter(user=owner).exclude(pk=owner.main_keypair_id).get()
    assert created.rate_limit == 500 and created.secret_key not in response.content.decode()
    assert created.access_key in response.content.decode()


def test_adding_a_keypair_for_oneself_in_the_admin_shows_its_secret_once(admin_client, superadmin, defaults):
    response = admin_client.post("/admin/accounts/keypair/add/", {
        "user": superadmin.pk, "resource_policy": "default", "rate_limit": 500, "is_active": "on"}, follow=True)
    created = Keypair.objects.filter(user=superadmin).exclude(pk=superadmin.main_keypair_id).get()
    assert created.secret_key in response.content.decode()
