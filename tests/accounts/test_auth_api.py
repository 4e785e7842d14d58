"""The /auth endpoints."""
import re

import pytest

from accounts import services
from accounts.models import UserStatus
from helpers import PASSWORD, slug

pytestmark = pytest.mark.django_db


def test_keys_have_the_backendai_format(owner):
    keypair = owner.main_keypair
    assert re.fullmatch(r"AKIA[A-Z2-7]{16}", keypair.access_key)
    assert len(keypair.secret_key) == 40 and re.fullmatch(r"[A-Za-z0-9_-]{40}", keypair.secret_key)
    assert keypair.ssh_public_key.startswith("ssh-ed25519 ")
    assert "PRIVATE KEY" in keypair.ssh_private_key


def test_authorize_exchanges_a_password_for_the_main_keypair(client, owner):
    response = client.post("/auth/authorize", {"type": "keypair", "domain": "default", "username": owner.email,
                                               "password": PASSWORD}, content_type="application/json")
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data == {"access_key": owner.main_keypair.access_key, "secret_key": owner.main_keypair.secret_key,
                    "role": "user", "status": "active"}


@pytest.mark.parametrize("email,password,domain", [
    ("owner@example.com", "wrong-password", "default"),
    ("nobody@example.com", PASSWORD, "default"),
    ("owner@example.com", PASSWORD, "other"),
])
def test_authorize_refuses_wrong_credentials(client, owner, email, password, domain):
    response = client.post("/auth/authorize", {"type": "keypair", "domain": domain, "username": email,
                                               "password": password}, content_type="application/json")
    assert response.status_code == 401
    assert slug(response) == "auth-failed"


@pytest.mark.parametrize("status", [UserStatus.INACTIVE, UserStatus.DELETED, UserStatus.BEFORE_VERIFICATION])
def test_authorize_refuses_users_that_are_not_active(client, owner, status):
    services.set_user_status([owner], status)
    response = client.post("/auth/authorize", {"domain": "default", "username": owner.email, "password": PASSWORD},
                           content_type="application/json")
    assert response.status_code == 401
    assert slug(response) == "auth-failed"
    if status == UserStatus.BEFORE_VERIFICATION:
        assert "verification" in response.json()["msg"]


def test_authorize_refuses_missing_fields(client, defaults):
    response = client.post("/auth/authorize", {"domain": "default"}, content_type="application/json")
    assert response.status_code == 400
    assert slug(response) == "invalid-api-params"
    assert "username" in response.json()["msg"]


def test_a_signed_call_from_an_inactive_user_is_refused(signed, owner):
    api = signed(owner)
    assert api.get("/auth/test").status_code == 200
    services.set_user_status([owner], UserStatus.INACTIVE)
    response = api.get("/auth/test")
    assert response.status_code == 401 and slug(response) == "auth-failed"


def test_a_deactivated_keypair_is_refused(signed, owner):
    services.set_keypair_active([owner.main_keypair], False)
    response = signed(owner).get("/auth/test")
    assert response.status_code == 401 and slug(response) == "auth-failed"


def test_allowed_client_ips_are_enforced(signed, owner):
    owner.allowed_client_ip = ["10.1.0.0/16"]
    owner.save(update_fields=["allowed_client_ip"])
    refused = signed(owner).get("/auth/test")
    assert refused.status_code == 401 and "client address" in refused.json()["msg"]
    allowed = signed(owner).get("/auth/test", extra={"REMOTE_ADDR": "10.1.2.3"})
    assert allowed.status_code == 200


def test_x_forwarded_for_is_believed_only_from_trusted_proxies(signed, owner, settings):
    import ipaddress

    owner.allowed_client_ip = ["10.1.0.0/16"]
    owner.save(update_fields=["allowed_client_ip"])
    spoofed = signed(owner).get("/auth/test", extra={"HTTP_X_FORWARDED_FOR": "10.1.2.3"})
    assert spoofed.status_code == 401
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.0/8")]
    proxied = signed(owner).get("/auth/test", extra={"HTTP_X_FORWARDED_FOR": "10.1.2.3, 127.0.0.1"})
    assert proxied.status_code == 200


def test_role_reports_global_domain_and_group_roles(signed, owner, domain_admin, superadmin):
    assert signed(owner).get("/auth/role").json() == {"global_role": "user", "domain_role": "user"}
    assert signed(domain_admin).get("/auth/role?group=default").json() == {
        "global_role": "user", "domain_role": "admin", "group_role": "admin"}
    assert signed(superadmin).get("/auth/role").json()["global_role"] == "superadmin"


def test_role_for_a_project_the_user_is_not_in_is_not_found(signed, outsider, defaults):
    response = signed(outsider).get("/auth/role?group=default")
    assert response.status_code == 404 and slug(response) == "object-not-found"


def test_update_password_changes_it(signed, owner):
    response = signed(owner).post("/auth/update-password", {
        "old_password": PASSWORD, "new_password": "a-new-long-passphrase", "new_password2": "a-new-long-passphrase"})
    assert response.status_code == 201, response.content
    owner.refresh_from_db()
    assert owner.check_password("a-new-long-passphrase")


@pytest.mark.parametrize("body,expected", [
    ({"old_password": "wrong", "new_password": "a-new-long-passphrase", "new_password2": "a-new-long-passphrase"}, "generic-forbidden"),
    ({"old_password": PASSWORD, "new_password": "a-new-long-passphrase", "new_password2": "different-passphrase"}, "invalid-api-params"),
    ({"old_password": PASSWORD, "new_password": "short", "new_password2": "short"}, "invalid-api-params"),
    ({"old_password": PASSWORD}, "invalid-api-params"),
])
def test_update_password_refuses_bad_input_and_keeps_the_old_one(signed, owner, body, expected):
    response = signed(owner).post("/auth/update-password", body)
    assert slug(response) == expected
    owner.refresh_from_db()
    assert owner.check_password(PASSWORD)


def test_ssh_keypair_can_be_read_regenerated_and_uploaded(signed, owner):
    api = signed(owner)
    original = api.get("/auth/ssh-keypair").json()["ssh_public_key"]
    assert original == owner.main_keypair.ssh_public_key
    regenerated = api.patch("/auth/ssh-keypair").json()
    assert regenerated["ssh_public_key"] != original and "PRIVATE KEY" in regenerated["ssh_private_key"]
    public, private = services.generate_ssh_keypair()
    assert api.post("/auth/ssh-keypair", {"pubkey": public, "privkey": private}).status_code == 200
    assert api.get("/auth/ssh-keypair").json()["ssh_public_key"].strip() == public.strip()


def test_an_uploaded_ssh_keypair_must_match(signed, owner):
    public, _ = services.generate_ssh_keypair()
    _, private = services.generate_ssh_keypair()
    response = signed(owner).post("/auth/ssh-keypair", {"pubkey": public, "privkey": private})
    assert response.status_code == 400 and slug(response) == "invalid-api-params"


def test_regenerating_a_secret_invalidates_the_old_one(signed, owner):
    old = signed(owner)
    secret = services.regenerate_secret(owner.main_keypair)
    assert old.get("/auth/test").status_code == 401
    owner.main_keypair.secret_key = secret
    assert signed(owner.main_keypair).get("/auth/test").status_code == 200
