"""Who sees what: a user, a domain admin, a superadmin and an outsider."""
import pytest

from helpers import PASSWORD, slug

pytestmark = pytest.mark.django_db


def _keys(response):
    assert response.status_code == 200, response.content
    return {row["access_key"] for row in response.json()["keypairs"]}


def test_a_user_lists_only_their_own_keypairs(signed, owner, member, outsider):
    assert _keys(signed(owner).get("/keypairs")) == {owner.main_keypair_id}


def test_a_domain_admin_lists_the_keypairs_of_their_domain_only(signed, owner, member, outsider, domain_admin):
    keys = _keys(signed(domain_admin).get("/keypairs"))
    assert {owner.main_keypair_id, member.main_keypair_id, domain_admin.main_keypair_id} <= keys
    assert outsider.main_keypair_id not in keys


def test_a_superadmin_lists_every_keypair(signed, owner, outsider, superadmin):
    assert {owner.main_keypair_id, outsider.main_keypair_id} <= _keys(signed(superadmin).get("/keypairs"))


def test_keypair_lists_never_show_secrets(signed, superadmin, owner):
    body = signed(superadmin).get("/keypairs").content.decode()
    assert owner.main_keypair.secret_key not in body and "secret" not in body


def test_a_user_cannot_read_or_change_another_users_keypair(signed, owner, member):
    for response in (signed(member).get(f"/keypairs/{owner.main_keypair_id}"),
                     signed(member).patch(f"/keypairs/{owner.main_keypair_id}", {"is_active": False})):
        assert response.status_code == 404 and slug(response) == "object-not-found"
    owner.main_keypair.refresh_from_db()
    assert owner.main_keypair.is_active


def test_an_outsider_cannot_touch_keypairs_of_another_domain(signed, owner, outsider):
    response = signed(outsider).patch(f"/keypairs/{owner.main_keypair_id}", {"is_active": False})
    assert response.status_code == 404


def test_a_domain_admin_can_deactivate_a_keypair_in_their_domain(signed, owner, domain_admin):
    response = signed(domain_admin).patch(f"/keypairs/{owner.main_keypair_id}", {"is_active": False})
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert signed(owner).get("/auth/test").status_code == 401


def test_a_domain_admin_cannot_touch_a_superadmins_keypair(signed, domain_admin, superadmin):
    from accounts.models import Domain

    superadmin.domain = Domain.objects.get(name="default")
    response = signed(domain_admin).patch(f"/keypairs/{superadmin.main_keypair_id}", {"is_active": False})
    assert response.status_code == 403 and slug(response) == "insufficient-privilege"


def test_creating_a_keypair_shows_the_secret_once(signed, owner):
    api = signed(owner)
    created = api.post("/keypairs")
    assert created.status_code == 201
    body = created.json()
    assert len(body["secret_key"]) == 40
    listed = api.get(f"/keypairs/{body['access_key']}").json()
    assert "secret_key" not in listed


@pytest.mark.parametrize("who,can_enter", [("owner", False), ("domain_admin", False), ("outsider", False),
                                           ("superadmin", True)])
def test_only_superadmins_enter_the_admin_site(client, request, who, can_enter):
    user = request.getfixturevalue(who)
    client.force_login(user)
    response = client.get("/admin/")
    if can_enter:
        assert response.status_code == 200 and b"Cluster administration" in response.content
    else:
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_user_with_a_password_cannot_log_into_the_admin(client, owner):
    response = client.post("/admin/login/", {"username": owner.email, "password": PASSWORD})
    assert response.status_code == 200  # the form again, with an error
    assert client.get("/admin/").status_code == 302


def test_an_inactive_user_cannot_log_into_the_web_ui(client, owner):
    from accounts import services
    from accounts.models import UserStatus

    services.set_user_status([owner], UserStatus.INACTIVE)
    response = client.post("/ui/login/", {"username": owner.email, "password": PASSWORD})
    assert response.status_code == 200 and b"not active" in response.content


def test_a_domain_admin_filters_the_keypair_list_by_user_email_case_insensitively(signed, owner, member,
                                                                                 domain_admin):
    keys = _keys(signed(domain_admin).get(f"/keypairs?user={owner.email.upper()}"))
    assert keys == {owner.main_keypair_id}


def test_the_user_filter_never_reaches_keypairs_the_caller_may_not_see(signed, member, outsider):
    assert _keys(signed(member).get(f"/keypairs?user={outsider.email}")) == set()


def test_an_overlong_user_filter_is_a_400_not_a_500(signed, owner):
    response = signed(owner).get("/keypairs?user=" + "a" * 300)
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
