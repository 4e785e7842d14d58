"""Brute force is slowed: after LOGIN_FAILURE_LIMIT failed logins for one account,
or from one client address, that account / address is locked out for
LOGIN_LOCKOUT_SECONDS on the web login, the admin login and /auth/authorize alike
(django-axes, database handler)."""
from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.conf import settings

from accounts.models import UserRole
from helpers import PASSWORD, problem, slug

pytestmark = pytest.mark.django_db

LOGIN = "/ui/login/"
ADMIN_LOGIN = "/admin/login/"
AUTHORIZE = "/auth/authorize"


def web_login(client, email, password, address="10.0.0.1", **extra):
    return client.post(LOGIN, {"username": email, "password": password}, REMOTE_ADDR=address, **extra)


def admin_login(client, email, password, address="10.0.0.1"):
    return client.post(ADMIN_LOGIN, {"username": email, "password": password, "next": "/admin/"}, REMOTE_ADDR=address)


def authorize(client, email, password, address="10.0.0.1"):
    return client.post(AUTHORIZE, {"type": "keypair", "domain": "default", "username": email, "password": password},
                       content_type="application/json", REMOTE_ADDR=address)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def fail_until_locked(do, count=None):
    """Fail ``count`` (default: the limit) times; returns the last response."""
    response = None
    for _ in range(count or settings.LOGIN_FAILURE_LIMIT):
        response = do()
    return response


def test_the_lockout_follows_the_configured_limit_and_duration():
    assert settings.LOGIN_FAILURE_LIMIT == 10 and settings.LOGIN_LOCKOUT_SECONDS == 1200  # Backend.AI's figures
    assert settings.AXES_FAILURE_LIMIT == settings.LOGIN_FAILURE_LIMIT
    assert settings.AXES_COOLOFF_TIME == timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
    assert settings.AXES_HANDLER == "axes.handlers.database.AxesDatabaseHandler"  # not the cache: tests roll it back
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"


def test_the_web_login_locks_an_account_and_refuses_even_the_right_password(client, owner):
    for attempt in range(settings.LOGIN_FAILURE_LIMIT - 1):
        response = web_login(client, owner.email, "wrong-password", address=f"10.0.1.{attempt}")
        assert response.status_code == 200 and b"Email or password is wrong" in response.content
    locked = web_login(client, owner.email, "wrong-password", address="10.0.1.200")
    assert locked.status_code == 429
    # per account: the right password from yet another address is refused, with the message beside the form
    response = web_login(client, owner.email, PASSWORD, address="10.0.2.1")
    assert response.status_code == 429
    page = response.content.decode()
    assert 'id="login-locked"' in page and "Too many failed logins" in page and 'name="password"' in page
    assert not logged_in(client)
    assert client.get("/ui/").status_code == 302  # still at the login door


def test_the_web_login_locks_an_address_that_tries_many_accounts(client, owner, member):
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):  # a different account each time, one address
        web_login(client, f"guess{attempt}@example.com", "nope", address="10.0.3.3")
    response = web_login(client, owner.email, PASSWORD, address="10.0.3.3")
    assert response.status_code == 429 and not logged_in(client)
    assert "Too many failed logins" in response.content.decode()
    # the accounts themselves are not locked: from another address the right password works
    response = web_login(client, member.email, PASSWORD, address="10.0.4.4")
    assert response.status_code == 302 and logged_in(client)


def test_emails_count_together_whatever_their_case(client, owner):
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        email = owner.email.upper() if attempt % 2 else f"  {owner.email.title()}"
        web_login(client, email.strip(), "wrong-password", address=f"10.0.5.{attempt}")
    assert web_login(client, owner.email, PASSWORD, address="10.0.6.6").status_code == 429


def test_the_admin_login_is_locked_with_the_message_on_its_page(client, superadmin):
    fail_until_locked(lambda: admin_login(client, superadmin.email, "wrong-password"))
    response = admin_login(client, superadmin.email, PASSWORD, address="10.0.7.7")
    assert response.status_code == 429 and not logged_in(client)
    page = response.content.decode()
    assert "Too many failed logins" in page and 'id="login-form"' in page


def test_authorize_answers_a_429_problem_once_the_limit_is_reached(client, owner):
    for _ in range(settings.LOGIN_FAILURE_LIMIT - 1):
        response = authorize(client, owner.email, "wrong-password")
        assert response.status_code == 401 and slug(response) == "auth-failed"
    response = authorize(client, owner.email, "wrong-password")
    assert response.status_code == 429 and slug(response) == "rate-limit-exceeded"
    refused = authorize(client, owner.email, PASSWORD, address="10.0.8.8")
    assert refused.status_code == 429
    body = problem(refused)
    assert slug(refused) == "rate-limit-exceeded" and "Too many failed logins" in body["msg"]
    assert owner.main_keypair.secret_key not in refused.content.decode()


def test_failures_on_the_web_form_and_the_api_share_one_counter(client, owner):
    half = settings.LOGIN_FAILURE_LIMIT // 2
    fail_until_locked(lambda: web_login(client, owner.email, "wrong-password"), half)
    fail_until_locked(lambda: authorize(client, owner.email, "wrong-password", address="10.0.9.9"),
                      settings.LOGIN_FAILURE_LIMIT - half)
    assert web_login(client, owner.email, PASSWORD, address="10.0.10.10").status_code == 429
    assert authorize(client, owner.email, PASSWORD, address="10.0.10.11").status_code == 429


def test_a_forwarded_for_header_from_an_untrusted_peer_does_not_dodge_the_address_lock(client, owner, settings):
    settings.TRUSTED_PROXIES = []
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        web_login(client, f"guess{attempt}@example.com", "nope", address="10.0.11.11",
                  HTTP_X_FORWARDED_FOR=f"192.0.2.{attempt}")
    response = web_login(client, owner.email, PASSWORD, address="10.0.11.11", HTTP_X_FORWARDED_FOR="192.0.2.200")
    assert response.status_code == 429 and not logged_in(client)


def test_logging_in_works_again_after_the_cool_off(client, owner):
    from axes.models import AccessAttempt

    fail_until_locked(lambda: web_login(client, owner.email, "wrong-password"))
    assert web_login(client, owner.email, PASSWORD).status_code == 429
    # the cool-off passes (moved in the database rather than waited for)
    past = timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS + 1)
    for attempt in AccessAttempt.objects.all():
        AccessAttempt.objects.filter(pk=attempt.pk).update(attempt_time=attempt.attempt_time - past)
    response = web_login(client, owner.email, PASSWORD)
    assert response.status_code == 302 and logged_in(client)
    client.logout()
    assert authorize(client, owner.email, PASSWORD).status_code == 200


def test_a_correct_login_below_the_limit_is_not_disturbed(client, owner):
    fail_until_locked(lambda: web_login(client, owner.email, "wrong-password"), settings.LOGIN_FAILURE_LIMIT - 1)
    response = web_login(client, owner.email, PASSWORD)
    assert response.status_code == 302 and logged_in(client)


def test_failures_and_the_lockout_are_logged_with_the_client_address(client, owner, caplog):
    with caplog.at_level(logging.WARNING, logger="axes"):
        fail_until_locked(lambda: web_login(client, owner.email, "wrong-password", address="198.51.100.23"))
        authorize(client, owner.email, PASSWORD, address="198.51.100.24")
    records = [r.getMessage() for r in caplog.records if r.name.startswith("axes") and r.levelno >= logging.WARNING]
    assert any("Locking out" in m and "198.51.100.23" in m and owner.email in m for m in records), records
    assert any("198.51.100.24" in m for m in records), records
    assert not any(PASSWORD in m for m in records)


def test_a_superadmin_is_locked_like_anyone(client, make_user):
    root = make_user("root@example.com", role=UserRole.SUPERADMIN)
    fail_until_locked(lambda: authorize(client, root.email, "wrong-password"))
    assert authorize(client, root.email, PASSWORD, address="10.0.12.12").status_code == 429


@pytest.mark.django_db(transaction=True)
def test_the_lockout_answers_the_same_under_asgi(owner):
    """daphne runs the middleware chain asynchronously (axes calls our lockout page another way there)."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    client = AsyncClient()

    async def attempts():
        for _ in range(settings.LOGIN_FAILURE_LIMIT):
            await client.post(LOGIN, {"username": owner.email, "password": "wrong-password"})
        page = await client.post(LOGIN, {"username": owner.email, "password": PASSWORD})
        api = await client.post(AUTHORIZE, {"domain": "default", "username": owner.email, "password": PASSWORD},
                                content_type="application/json")
        return page, api

    page, api = async_to_sync(attempts)()
    assert page.status_code == 429 and b'id="login-locked"' in page.content
    assert api.status_code == 429 and slug(api) == "rate-limit-exceeded"
