"""Server-rendered web UI pages (the browser flow itself is in tests/e2e)."""
import pytest

from accounts.models import Keypair
from helpers import PASSWORD

pytestmark = pytest.mark.django_db


def test_pages_need_a_login(client):
    for url in ("/ui/", "/ui/keys/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/ui/login/")


def test_the_login_page_renders_without_javascript(client):
    page = client.get("/ui/login/").content.decode()
    assert "<form" in page and 'name="username"' in page and "<script" not in page


def test_a_wrong_password_is_reported_next_to_the_form(client, owner):
    response = client.post("/ui/login/", {"username": owner.email, "password": "nope"})
    assert response.status_code == 200 and b"Email or password is wrong" in response.content


def test_the_dashboard_shows_domain_projects_role_and_limits(client, owner):
    client.post("/ui/login/", {"username": owner.email, "password": PASSWORD})
    page = client.get("/ui/").content.decode()
    assert 'id="domain">default<' in page and "<li>default" in page and 'id="role">User<' in page
    assert 'id="limits"' in page and "Concurrent sessions" in page


def test_the_keys_page_creates_a_keypair_and_shows_its_secret_once(client, owner):
    client.force_login(owner)
    response = client.post("/ui/keys/", follow=True)
    created = Keypair.objects.filter(user=owner).exclude(pk=owner.main_keypair_id).get()
    assert created.secret_key in response.content.decode()
    assert created.secret_key not in client.get("/ui/keys/").content.decode()


def test_the_keys_page_lists_only_my_keypairs(client, owner, member, domain_admin):
    client.force_login(domain_admin)
    page = client.get("/ui/keys/").content.decode()
    assert domain_admin.main_keypair_id in page and owner.main_keypair_id not in page


def test_a_user_cannot_deactivate_someone_elses_keypair_from_the_ui(client, owner, member):
    client.force_login(member)
    client.post("/ui/keys/action/", {"access_key": owner.main_keypair_id, "action": "deactivate"})
    owner.main_keypair.refresh_from_db()
    assert owner.main_keypair.is_active


def test_a_user_can_deactivate_their_own_keypair(client, owner):
    client.force_login(owner)
    client.post("/ui/keys/action/", {"access_key": owner.main_keypair_id, "action": "deactivate"})
    owner.main_keypair.refresh_from_db()
    assert not owner.main_keypair.is_active
