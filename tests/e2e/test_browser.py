"""The web UI in a real browser (Debian's Chromium through Playwright) against
a live server: logging in, the dashboard, API keys and the admin's door."""
from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


try:
    from playwright.sync_api import expect
except ImportError:  # the ``browser`` fixture reports it through require()
    expect = None


def test_a_user_logs_in_sees_the_dashboard_and_creates_a_keypair(make_user, login, page, live_server, signed_get):
    from accounts.models import Keypair

    user = make_user("alice@example.com", full_name="Alice Liddell")
    before = set(Keypair.objects.filter(user=user).values_list("access_key", flat=True))

    login(user)
    expect(page).to_have_url(live_server.url + "/ui/")
    expect(page.locator("#domain")).to_have_text("default")
    expect(page.locator("#projects")).to_contain_text("default")
    expect(page.locator("#role")).to_have_text("User")

    page.get_by_role("link", name="API keys").click()
    expect(page).to_have_url(live_server.url + "/ui/keys/")
    expect(page.locator("#new-secret")).to_have_count(0)
    page.click("#create-keypair")  # POST, then redirected back to /ui/keys/
    access_key = page.locator("#new-access-key").inner_text().strip()
    secret_key = page.locator("#new-secret-key").inner_text().strip()
    assert access_key.startswith("AKIA") and len(access_key) == 20
    assert len(secret_key) == 40
    assert access_key not in before
    expect(page.locator(f'#keypair-table tr[data-access-key="{access_key}"]')).to_contain_text("active")

    keypair = Keypair.objects.get(access_key=access_key)
    assert keypair.user_id == user.pk
    assert keypair.secret_key == secret_key
    assert keypair.is_active
    assert Keypair.objects.filter(user=user).count() == len(before) + 1

    page.reload()
    expect(page.locator(f'#keypair-table tr[data-access-key="{access_key}"]')).to_have_count(1)
    expect(page.locator("#new-secret")).to_have_count(0)
    assert secret_key not in page.content()

    # The key read off the page signs a real request.
    resp = signed_get(access_key, secret_key, "/auth/test?echo=from-the-browser")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"authorized": "yes", "echo": "from-the-browser"}


def test_a_wrong_password_shows_an_error_beside_the_form(make_user, login, page, live_server):
    user = make_user("bob@example.com")

    login(user, "not-the-password-at-all")

    expect(page).to_have_url(live_server.url + "/ui/login/")
    expect(page.get_by_role("alert")).to_contain_text("Email or password is wrong")
    expect(page.locator("input[name=username]")).to_have_value("bob@example.com")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    page.goto("/ui/")
    expect(page).to_have_url(live_server.url + "/ui/login/?next=/ui/")


def test_a_deactivated_keypair_can_be_reactivated_from_the_keys_page(make_user, login, page, live_server, signed_get):
    from accounts.models import Keypair

    user = make_user("carol@example.com")
    keypair = user.main_keypair
    access_key, secret_key = keypair.access_key, keypair.secret_key
    assert signed_get(access_key, secret_key, "/auth/test?echo=1").status_code == 200

    login(user)
    page.goto("/ui/keys/")
    row = page.locator(f'#keypair-table tr[data-access-key="{access_key}"]')
    expect(row).to_contain_text("active")
    row.get_by_role("button", name="Deactivate").click()
    page.wait_for_load_state("domcontentloaded")

    expect(page.locator(".messages")).to_contain_text(f"Keypair {access_key} deactivated.")
    row = page.locator(f'#keypair-table tr[data-access-key="{access_key}"]')
    expect(row).to_contain_text("inactive")
    expect(row.get_by_role("button", name="Activate")).to_be_visible()
    assert Keypair.objects.get(access_key=access_key).is_active is False

    refused = signed_get(access_key, secret_key, "/auth/test?echo=1")
    assert refused.status_code == 401, refused.text
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("auth-failed")

    row.get_by_role("button", name="Activate").click()
    page.wait_for_load_state("domcontentloaded")
    expect(page.locator(".messages")).to_contain_text(f"Keypair {access_key} activated.")
    row = page.locator(f'#keypair-table tr[data-access-key="{access_key}"]')
    expect(row.get_by_role("button", name="Deactivate")).to_be_visible()
    assert Keypair.objects.get(access_key=access_key).is_active is True

    again = signed_get(access_key, secret_key, "/auth/test?echo=back")
    assert again.status_code == 200, again.text
    assert again.json() == {"authorized": "yes", "echo": "back"}


def test_a_plain_user_cannot_enter_the_admin_but_a_superadmin_can(make_user, login, page, live_server):
    from accounts.models import UserRole

    plain = make_user("dave@example.com")
    root = make_user("root@example.com", role=UserRole.SUPERADMIN)
    make_user("findme@example.com", full_name="Needle In Haystack")
    make_user("other@example.com")

    login(plain)
    expect(page).to_have_url(live_server.url + "/ui/")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    page.goto("/admin/")
    assert page.url.startswith(live_server.url + "/admin/login/")
    expect(page.locator("body")).to_contain_text("not authorized to access this page")
    expect(page.locator("body")).not_to_contain_text("Cluster administration")

    page.goto("/ui/")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(live_server.url + "/ui/login/")

    login(root)
    expect(page).to_have_url(live_server.url + "/ui/")
    page.get_by_role("link", name="Admin").click()
    expect(page).to_have_url(live_server.url + "/admin/")
    expect(page.locator("body")).to_contain_text("Cluster administration")

    page.goto("/admin/accounts/user/")
    expect(page.locator("#result_list")).to_contain_text("other@example.com")
    page.fill("#searchbar", "findme")
    page.locator("#changelist-search").get_by_role("button").click()
    expect(page).to_have_url(re.compile(r"/admin/accounts/user/\?q=findme$"))
    results = page.locator("#result_list tbody tr")
    expect(results).to_have_count(1)
    expect(results).to_contain_text("findme@example.com")
    expect(page.locator("#result_list")).not_to_contain_text("other@example.com")
