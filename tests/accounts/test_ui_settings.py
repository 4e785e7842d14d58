"""The web UI's settings (``/ui/settings/``, ``/ui/settings/password/``): the main keypair among
the user's own active ones, the password (and the administrator's "must change password" flag,
enforced on every UI page until done), the SSH public key, the bootstrap script, and the
preferences (default preset and resource group among the ones the user may use, language,
time zone, which pages then render in).  Bad input: the message beside the field, nothing changed."""
from __future__ import annotations

import datetime
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.utils import timezone

from accounts import services
from accounts.models import Keypair, User, UserPreferences
from accounts.services import preferences
from agents import services as agent_services
from agents.models import ScalingGroup
from helpers import PASSWORD
from sessions.models import ResourcePreset

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a-Different-horse-42"


def ed25519_public_key(comment: str = "me@laptop") -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " " + comment


def post(client, section: str, **fields):
    return client.post("/ui/settings/", {"section": section, **fields})


def field_error(response, field: str) -> str:
    match = re.search(rf'id="error-{field}"[^>]*>([^<]*)<', response.content.decode())
    assert match, f"no error beside {field}"
    return match.group(1)


def refused_beside(client, section: str, field: str, **fields):
    """Post ``fields`` to the settings' ``section``: refused (400) with the reason beside ``field``."""
    response = post(client, section, **fields)
    assert response.status_code == 400 and field_error(response, field)
    return response


@pytest.fixture
def groups(defaults):
    default = agent_services.ensure_default_scaling_group()
    private = ScalingGroup.objects.create(name="private", is_public=False)  # nobody's: not the user's
    ResourcePreset.objects.create(name="small", resource_slots={"cpu": "1", "mem": "1073741824"})
    ResourcePreset.objects.create(name="elsewhere", resource_slots={"cpu": "1"}, scaling_group=private)
    return default, private


# --- the page and the keypair ----------------------------------------------------------------------

def test_the_settings_page_needs_a_login(client):
    for url in ("/ui/settings/", "/ui/settings/password/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/ui/login/")


def test_the_settings_page_shows_the_main_keypair_and_its_policy(client, owner):
    client.force_login(owner)
    page = client.get("/ui/settings/").content.decode()
    assert f'id="main-keypair">{owner.main_keypair_id}<' in page and "Settings" in page
    assert owner.main_keypair.resource_policy_id in page


def test_a_user_makes_another_of_their_active_keypairs_the_main_one(client, owner):
    other, _ = services.create_keypair(owner)
    client.force_login(owner)
    response = post(client, "keypair", main_keypair=other.pk)
    assert response.status_code == 302
    assert User.objects.get(pk=owner.pk).main_keypair_id == other.pk


@pytest.mark.parametrize("whose", ["member", "inactive", "unknown"])
def test_a_user_cannot_pick_a_keypair_that_is_not_their_own_active_one(client, owner, member, whose):
    if whose == "member":
        key = member.main_keypair_id
    elif whose == "inactive":
        keypair, _ = services.create_keypair(owner, is_active=False)
        key = keypair.pk
    else:
        key = "AKIANOSUCHKEY0000000"
    before = owner.main_keypair_id
    client.force_login(owner)
    refused_beside(client, "keypair", "main_keypair", main_keypair=key)
    assert User.objects.get(pk=owner.pk).main_keypair_id == before


def test_an_unknown_settings_form_changes_nothing(client, owner):
    client.force_login(owner)
    response = post(client, "role", role="superadmin")
    assert response.status_code == 302 and User.objects.get(pk=owner.pk).role == "user"


# --- the password ----------------------------------------------------------------------------------

def test_a_user_changes_their_password_and_stays_logged_in(client, owner):
    client.force_login(owner)
    response = client.post("/ui/settings/password/", {
        "old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password(NEW_PASSWORD) and not owner.check_password(PASSWORD)
    assert owner.password_changed_at is not None and timezone.now() - owner.password_changed_at < timezone.timedelta(
        minutes=1)
    assert client.get("/ui/").status_code == 200  # the session survived the new password hash


@pytest.mark.parametrize("fields, field", [
    ({"old_password": "wrong-one-123", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}, "old_password"),
    ({"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD + "x"}, "new_password2"),
    ({"old_password": PASSWORD, "new_password1": "password", "new_password2": "password"}, "new_password2"),
    ({"old_password": PASSWORD, "new_password1": "x" * 300, "new_password2": "x" * 300}, "new_password1"),
])
def test_a_refused_password_change_says_why_beside_the_field_and_changes_nothing(client, owner, fields, field):
    client.force_login(owner)
    response = client.post("/ui/settings/password/", fields)
    assert response.status_code == 400 and field_error(response, field)
    owner.refresh_from_db()
    assert owner.check_password(PASSWORD) and owner.password_changed_at is not None


def test_the_must_change_password_flag_sends_every_ui_page_to_the_password_page(client, make_user):
    user = make_user("flagged@example.com", need_password_change=True)
    client.force_login(user)
    for url in ("/ui/", "/ui/settings/", "/ui/keys/", "/ui/sessions/", "/admin/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"] == "/ui/settings/password/", url
    live = client.get("/ui/live/", HTTP_HX_REQUEST="true")
    assert live["HX-Redirect"] == "/ui/settings/password/" and live.content == b""
    page = client.get("/ui/settings/password/")
    assert page.status_code == 200 and b'id="password-required"' in page.content
    refused = client.post("/ui/keys/")  # an action elsewhere is refused too: no keypair made
    assert refused.status_code == 302 and Keypair.objects.filter(user=user).count() == 1
    assert client.get("/readyz").status_code != 302  # not a UI page


def test_changing_the_password_clears_the_flag_and_frees_the_pages(client, make_user):
    user = make_user("flagged@example.com", need_password_change=True)
    client.force_login(user)
    response = client.post("/ui/settings/password/", {
        "old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302
    user.refresh_from_db()
    assert not user.need_password_change and user.check_password(NEW_PASSWORD)
    assert client.get("/ui/").status_code == 200


def test_a_flagged_user_may_still_log_out_and_use_the_api(client, signed, make_user):
    user = make_user("flagged@example.com", need_password_change=True)
    assert signed(user).get("/auth/role").status_code == 200
    client.force_login(user)
    response = client.post("/ui/logout/")
    assert response.status_code == 302 and response["Location"] == "/ui/login/"


# --- the SSH key and the bootstrap script ------------------------------------------------------------

def test_a_user_sets_their_ssh_public_key(client, owner):
    key = ed25519_public_key()
    client.force_login(owner)
    assert post(client, "ssh", ssh_public_key=key).status_code == 302
    keypair = Keypair.objects.get(pk=owner.main_keypair_id)
    assert keypair.ssh_public_key.strip() == key and keypair.ssh_private_key == ""
    assert key in client.get("/ui/settings/").content.decode()


@pytest.mark.parametrize("text", [
    "not a key",
    "ssh-ed25519 AAAA!!notbase64",
    "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
    "ssh-rsa " + ed25519_public_key().split()[1],  # the blob says ssh-ed25519
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==",  # the right type, a truncated key
    ed25519_public_key() + "\n" + ed25519_public_key(),
    "ssh-ed25519 " + "A" * 9000,
], ids=["not-a-key", "bad-base64", "truncated-dss", "type-mismatch", "truncated-ed25519", "two-keys", "too-long"])
def test_a_malformed_ssh_public_key_is_refused_beside_the_field(client, owner, text):
    before = Keypair.objects.get(pk=owner.main_keypair_id).ssh_public_key
    client.force_login(owner)
    refused_beside(client, "ssh", "ssh_public_key", ssh_public_key=text)
    assert Keypair.objects.get(pk=owner.main_keypair_id).ssh_public_key == before


def test_a_user_sets_a_bootstrap_script_within_its_length(client, owner):
    client.force_login(owner)
    assert post(client, "bootstrap", bootstrap_script="pip install -q rich\n").status_code == 302
    assert Keypair.objects.get(pk=owner.main_keypair_id).bootstrap_script == "pip install -q rich\n"
    refused_beside(client, "bootstrap", "bootstrap_script", bootstrap_script="x" * 20000)
    assert Keypair.objects.get(pk=owner.main_keypair_id).bootstrap_script == "pip install -q rich\n"


# --- preferences ---------------------------------------------------------------------------------------

def test_preferences_default_to_nothing_picked_english_and_the_servers_zone(owner, settings):
    settings.TIME_ZONE = "UTC"
    prefs = preferences.preferences_for(owner)
    assert (prefs.default_preset, prefs.default_resource_group, prefs.language, prefs.time_zone) == ("", "", "en", "UTC")


def test_a_user_saves_a_default_preset_group_language_and_zone(client, owner, groups):
    client.force_login(owner)
    response = post(client, "preferences", default_preset="small", default_resource_group="default",
                    language="de", time_zone="Asia/Seoul")
    assert response.status_code == 302
    prefs = preferences.preferences_for(User.objects.get(pk=owner.pk))
    assert prefs == preferences.Preferences("small", "default", "de", "Asia/Seoul")


@pytest.mark.parametrize("field, value", [
    ("default_preset", "elsewhere"),  # a preset of a group the user may not use
    ("default_preset", "nosuch"),
    ("default_resource_group", "private"),
    ("language", "xx"),
    ("time_zone", "Mars/Olympus"),
])
def test_a_preference_the_user_may_not_pick_is_refused_beside_the_field(client, owner, groups, field, value):
    client.force_login(owner)
    fields = {"default_preset": "", "default_resource_group": "", "language": "en", "time_zone": "UTC", field: value}
    refused_beside(client, "preferences", field, **fields)
    assert not UserPreferences.objects.filter(user=owner).exists()


def test_a_superadmin_may_pick_a_private_group_that_is_theirs(client, superadmin, groups):
    _, private = groups
    private.domains.add(superadmin.domain)
    client.force_login(superadmin)
    response = post(client, "preferences", default_preset="elsewhere", default_resource_group="private",
                    language="en", time_zone="UTC")
    assert response.status_code == 302
    assert preferences.preferences_for(User.objects.get(pk=superadmin.pk)).default_resource_group == "private"


def test_pages_render_times_in_the_users_zone_and_language(client, owner):
    owner.password_changed_at = timezone.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)
    owner.save()
    UserPreferences.objects.create(user=owner, language="de", time_zone="Asia/Seoul")
    client.force_login(owner)
    response = client.get("/ui/settings/")
    assert "2026-01-02 12:04 KST" in response.content.decode()
    assert response["Content-Language"] == "de"
    refused = client.post("/ui/settings/password/", {"old_password": "", "new_password1": "", "new_password2": ""})
    assert "Dieses Feld ist zwingend erforderlich." in refused.content.decode()  # Django's own texts follow


def test_preferences_cost_no_query_on_a_page(client, owner, django_assert_num_queries):
    client.force_login(owner)
    client.get("/ui/keys/")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as without:
        client.get("/ui/keys/")
    UserPreferences.objects.create(user=owner, language="en", time_zone="Europe/Berlin")
    with django_assert_num_queries(len(without)):
        client.get("/ui/keys/")


def test_a_user_without_a_main_keypair_sees_the_pages_and_cannot_post_its_ssh_key(client, owner):
    User.objects.filter(pk=owner.pk).update(main_keypair=None)
    client.force_login(owner)
    page = client.get("/ui/settings/").content.decode()
    assert 'id="main-keypair-missing"' in page and 'name="ssh_public_key"' not in page
    assert client.get("/ui/").status_code == 200 and client.get("/ui/live/").status_code == 200
    assert post(client, "ssh", ssh_public_key=ed25519_public_key()).status_code == 302
    assert Keypair.objects.get(user=owner).ssh_private_key != ""  # untouched
