"""Session mode (what Backend.AI's webserver adds): ``POST /server/login`` (plain and the
encoded body of clients 24.09+), ``/server/logout``, ``/server/login-check``, and the API
under ``/func/`` with the login cookie instead of a signature: the same views and rules,
refused cross-site, failures counted by the same lockout as the web login."""
from __future__ import annotations

import base64
import json
import secrets
import string

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.conf import settings

from accounts.models import Keypair
from helpers import PASSWORD, problem, slug

pytestmark = pytest.mark.django_db

LOGIN = "/server/login"
LOGOUT = "/server/logout"
CHECK = "/server/login-check"
VERSION = {"HTTP_X_BACKENDAI_VERSION": "v7.20230615"}
KEYPAIR_DOC = {"query": "query { keypair { access_key secret_key is_admin } }"}


def server_login(client, email, password, address="10.1.0.1", **extra):
    return client.post(LOGIN, {"username": email, "password": password}, content_type="application/json",
                       REMOTE_ADDR=address, **extra)


def func_get(client, target, **extra):
    return client.get("/func" + target, **{**VERSION, "CONTENT_TYPE": "text/plain", **extra})


def func_gql(client, body=None, **extra):
    return client.post("/func/admin/gql", json.dumps(body or KEYPAIR_DOC), content_type="application/json",
                       **{**VERSION, **extra})


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def encode_like_the_client(endpoint: str, body: dict) -> bytes:
    """The 24.09+ client's login body over http, written from client-wire.md §3: ``iv:b64(AES-256-CBC)``
    with the key ``(b64(endpoint) + iv + iv)[:32]``."""
    iv = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16)).encode()
    key = (base64.b64encode(endpoint.encode()) + iv + iv)[:32]
    padder = padding.PKCS7(128).padder()
    plain = padder.update(json.dumps(body).encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + b":" + base64.b64encode(encryptor.update(plain) + encryptor.finalize())


# --- login, logout, the login check -------------------------------------------------------------

def test_login_with_the_right_password_sets_the_session_cookie_and_answers_authenticated(client, owner):
    response = server_login(client, owner.email, PASSWORD)
    assert response.status_code == 200
    body = response.json()
    assert body["authenticated"] is True
    assert body["data"]["access_key"] == owner.main_keypair.access_key and body["data"]["role"] == "user"
    assert settings.SESSION_COOKIE_NAME in response.cookies and logged_in(client)
    assert owner.main_keypair.secret_key not in response.content.decode()  # the cookie is the credential


def test_login_with_a_wrong_password_answers_not_authenticated_with_details(client, owner):
    response = server_login(client, owner.email, "wrong-password")
    assert response.status_code == 200
    body = response.json()
    assert body["authenticated"] is False and body["data"]["details"] == "User credential mismatch."
    assert not logged_in(client)
    assert func_get(client, "/auth/test").status_code == 401


def test_login_of_an_unknown_account_answers_the_same_as_a_wrong_password(client, defaults):
    body = server_login(client, "nobody@example.com", "whatever-1").json()
    assert body == {"authenticated": False, "data": {
        "type": "https://api.backend.ai/probs/auth-failed", "title": "Credential/signature mismatch.",
        "details": "User credential mismatch."}}


@pytest.mark.parametrize("payload", [{}, {"username": "x@example.com"}, {"password": "p"},
                                     {"username": 5, "password": "p"}, {"username": "a@b.c", "password": ["p"]},
                                     {"username": "a@b.c", "password": "p", "domain": 3},
                                     {"username": "a" * 5000, "password": "p"}])
def test_a_malformed_login_body_is_a_400_problem(client, defaults, payload):
    response = client.post(LOGIN, payload, content_type="application/json")
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
    assert not logged_in(client)


def test_the_encoded_login_body_of_newer_clients_logs_in(client, owner):
    body = encode_like_the_client("http://testserver", {"username": owner.email, "password": PASSWORD})
    response = client.post(LOGIN, body, content_type="application/octet-stream", HTTP_X_BACKENDAI_ENCODED="true")
    assert response.status_code == 200 and response.json()["authenticated"] is True
    assert logged_in(client)


def test_an_encoded_body_for_another_endpoint_is_refused_cleanly(client, owner):
    body = encode_like_the_client("http://elsewhere.example:8080", {"username": owner.email, "password": PASSWORD})
    response = client.post(LOGIN, body, content_type="application/octet-stream", HTTP_X_BACKENDAI_ENCODED="true")
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
    assert "could not be decoded" in problem(response)["msg"] and not logged_in(client)


@pytest.mark.parametrize("raw", [b"", b"short:AAAA", b"0123456789abcdef:not base64!",
                                 b"0123456789abcdef:" + base64.b64encode(b"x" * 15),
                                 b"0123456789abcdef:" + base64.b64encode(b"x" * 32)])
def test_a_broken_encoded_body_is_a_400_never_a_500(client, owner, raw):
    response = client.post(LOGIN, raw, content_type="application/octet-stream", HTTP_X_BACKENDAI_ENCODED="true")
    assert response.status_code == 400 and not logged_in(client)


def test_an_octet_stream_body_without_the_encoded_header_is_refused(client, owner):
    body = encode_like_the_client("http://testserver", {"username": owner.email, "password": PASSWORD})
    response = client.post(LOGIN, body, content_type="application/octet-stream")
    assert response.status_code == 400 and not logged_in(client)


def test_logout_ends_the_session_and_the_cookie_no_longer_works(client, owner):
    server_login(client, owner.email, PASSWORD)
    assert func_get(client, "/auth/test").status_code == 200
    response = client.post(LOGOUT, content_type="text/plain", **VERSION)
    assert response.status_code == 200 and not logged_in(client)
    assert func_get(client, "/auth/test").status_code == 401
    assert client.post(LOGOUT, content_type="text/plain").status_code == 200  # again: nothing to end, still fine


def test_the_login_check_says_whether_the_cookie_is_logged_in(client, owner):
    assert client.get(CHECK).json() == {"authenticated": False, "data": None}
    server_login(client, owner.email, PASSWORD)
    for response in (client.get(CHECK), client.post(CHECK, content_type="text/plain")):
        body = response.json()
        assert body["authenticated"] is True and body["data"]["email"] == owner.email
    client.post(LOGOUT, content_type="text/plain")
    assert client.get(CHECK).json()["authenticated"] is False


# --- the lockout --------------------------------------------------------------------------------

def test_server_login_failures_count_with_the_web_login_and_lock_the_account(client, owner):
    for attempt in range(settings.LOGIN_FAILURE_LIMIT - 1):
        body = server_login(client, owner.email, "wrong-password", address=f"10.1.1.{attempt}").json()
        assert body["authenticated"] is False
    web = client.post("/ui/login/", {"username": owner.email, "password": "wrong-password"}, REMOTE_ADDR="10.1.2.1")
    assert web.status_code == 429  # the tenth failure, on the web form: one counter
    refused = server_login(client, owner.email, PASSWORD, address="10.1.3.1")
    assert refused.status_code == 429 and slug(refused) == "rate-limit-exceeded"
    assert "Too many failed logins" in problem(refused)["msg"]
    assert not logged_in(client) and func_get(client, "/auth/test").status_code == 401


def test_a_locked_address_cannot_log_in_through_the_server_login(client, owner, member):
    for attempt in range(settings.LOGIN_FAILURE_LIMIT):
        server_login(client, f"guess{attempt}@example.com", "nope", address="10.1.4.4")
    assert server_login(client, member.email, PASSWORD, address="10.1.4.4").status_code == 429
    assert server_login(client, member.email, PASSWORD, address="10.1.5.5").json()["authenticated"] is True


def test_a_successful_server_login_is_logged_once_by_axes(client, owner):
    from axes.models import AccessLog

    server_login(client, owner.email, PASSWORD)
    assert AccessLog.objects.filter(username=owner.email).count() == 1


# --- /func/: the API with the cookie ------------------------------------------------------------

def test_the_version_probe_answers_under_func(client):
    response = client.get("/func/")
    assert response.status_code == 200 and response.json()["version"] == "v8.20240915"


def test_func_serves_the_api_with_the_login_cookie_as_that_user(client, owner):
    server_login(client, owner.email, PASSWORD)
    echo = func_get(client, "/auth/test?echo=hi")
    assert echo.status_code == 200 and echo.json() == {"authorized": "yes", "echo": "hi"}
    graphql = func_gql(client)
    assert graphql.status_code == 200
    keypair = graphql.json()["data"]["keypair"]
    assert keypair["access_key"] == owner.main_keypair.access_key and keypair["is_admin"] is False
    assert Keypair.objects.get(pk=owner.main_keypair.pk).num_queries == 2  # counted like signed calls


def test_func_without_a_cookie_is_refused_with_401(client, owner):
    response = func_get(client, "/auth/test")
    assert response.status_code == 401 and slug(response) == "auth-failed"
    assert func_gql(client).status_code == 401


def test_the_cookie_is_not_read_by_the_signed_api_at_the_root(client, owner):
    server_login(client, owner.email, PASSWORD)
    response = client.get("/auth/test", CONTENT_TYPE="text/plain", **VERSION)
    assert response.status_code == 401


def test_func_keeps_the_permission_rules_of_each_view(client, owner, superadmin):
    server_login(client, owner.email, PASSWORD)
    refused = client.post("/func/manager/announcement", {"enabled": True, "message": "x"},
                          content_type="application/json", **VERSION)
    assert refused.status_code == 403 and slug(refused) == "insufficient-privilege"
    client.post(LOGOUT, content_type="text/plain")
    server_login(client, superadmin.email, PASSWORD)
    allowed = client.post("/func/manager/announcement", {"enabled": True, "message": "x"},
                          content_type="application/json", **VERSION)
    assert allowed.status_code == 204


def test_a_web_ui_login_opens_func_too(client, owner):
    client.post("/ui/login/", {"username": owner.email, "password": PASSWORD})
    assert func_get(client, "/auth/test").status_code == 200


@pytest.mark.parametrize("headers", [
    {"HTTP_ORIGIN": "https://evil.example"},
    {"HTTP_ORIGIN": "null"},
    {"HTTP_ORIGIN": "http://[::1"},
    {"HTTP_ORIGIN": "https://testserver.evil.example"},
    {"HTTP_SEC_FETCH_SITE": "cross-site"},
    {"HTTP_SEC_FETCH_SITE": "same-site"},
], ids=["foreign-origin", "null-origin", "broken-origin", "lookalike-origin", "fetch-cross-site",
        "fetch-same-site"])
def test_a_cross_site_request_may_not_use_the_cookie_and_changes_nothing(client, owner, superadmin, headers):
    from backendai import services as manager_services

    server_login(client, superadmin.email, PASSWORD)
    def announcement():
        current = manager_services.get_announcement()
        return current.enabled, current.message

    before = announcement()
    response = client.post("/func/manager/announcement", {"enabled": True, "message": "pwned"},
                           content_type="application/json", **VERSION, **headers)
    assert response.status_code == 403 and "may not use the login cookie" in problem(response)["msg"]
    assert announcement() == before
    assert func_get(client, "/auth/test", **headers).status_code == 403


def test_a_cookie_call_without_the_version_header_is_refused(client, owner):
    """A cross-site form cannot set a header: the header requirement is what stops it."""
    server_login(client, owner.email, PASSWORD)
    response = client.post("/func/auth/test", "echo=x", content_type="text/plain")
    assert response.status_code == 403 and "X-BackendAI-Version" in problem(response)["msg"]


def test_a_same_origin_browser_call_may_use_the_cookie(client, owner, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.example"]
    server_login(client, owner.email, PASSWORD)
    assert func_get(client, "/auth/test", HTTP_ORIGIN="http://testserver", HTTP_SEC_FETCH_SITE="same-origin").status_code == 200
    assert func_get(client, "/auth/test", HTTP_ORIGIN="https://console.example").status_code == 200


def test_a_cross_site_login_is_refused(client, owner):
    response = server_login(client, owner.email, PASSWORD, HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403 and not logged_in(client)


def test_an_inactive_keypair_closes_its_cookie_session(client, owner):
    server_login(client, owner.email, PASSWORD)
    Keypair.objects.filter(pk=owner.main_keypair.pk).update(is_active=False)
    response = func_get(client, "/auth/test")
    assert response.status_code == 401 and "inactive" in problem(response)["msg"]


def test_func_answers_unknown_paths_with_a_404_problem(client, owner):
    server_login(client, owner.email, PASSWORD)
    response = func_get(client, "/no/such/thing")
    assert response.status_code == 404 and slug(response) == "url-not-found"


def test_func_does_not_serve_the_web_ui_the_admin_or_internal_routes(client, owner):
    server_login(client, owner.email, PASSWORD)
    for target in ("/ui/", "/admin/", "/internal/hints", "/healthz", "/metrics"):
        assert func_get(client, target).status_code == 404, target


def test_the_session_event_stream_takes_the_cookie_under_func(client, owner):
    target = "/func/events/session?sessionName=no-such-session"
    assert client.get(target, **VERSION).status_code == 401
    server_login(client, owner.email, PASSWORD)
    response = client.get(target, **VERSION)
    assert response.status_code == 404  # authenticated as the owner, who has no such session
