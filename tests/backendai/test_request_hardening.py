"""Issue 9, the API request plumbing: client addresses only from trusted proxies,
signatures over the effective method and inside the date window, input limits
before any work, problem+json for every refusal."""
from __future__ import annotations

import asyncio
import ipaddress
import io
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
from django.urls import path

from helpers import SignedClient, problem, slug

pytestmark = pytest.mark.django_db

TRUSTED = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")]


@pytest.fixture
def restricted(owner):
    """The owner may call only from 198.51.100.0/24."""
    owner.allowed_client_ip = ["198.51.100.0/24"]
    owner.save(update_fields=["allowed_client_ip"])
    return owner


# --- 1. client addresses -----------------------------------------------------------------------------

@pytest.mark.parametrize("header", ["HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP"])
def test_a_forwarded_address_from_an_untrusted_peer_is_ignored(signed, restricted, settings, header):
    settings.TRUSTED_PROXIES = TRUSTED
    response = signed(restricted).get("/auth/test", extra={"REMOTE_ADDR": "203.0.113.9", header: "198.51.100.7"})
    assert response.status_code == 401
    assert "client address" in problem(response)["msg"]


def test_a_forwarded_address_is_ignored_when_no_proxy_is_trusted(signed, restricted, settings):
    settings.TRUSTED_PROXIES = []
    response = signed(restricted).get("/auth/test", extra={"HTTP_X_FORWARDED_FOR": "198.51.100.7"})
    assert response.status_code == 401


@pytest.mark.parametrize("header", ["HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP"])
def test_a_forwarded_address_from_a_trusted_proxy_is_believed(signed, restricted, settings, header):
    settings.TRUSTED_PROXIES = TRUSTED
    response = signed(restricted).get("/auth/test", extra={"REMOTE_ADDR": "10.0.0.2", header: "198.51.100.7"})
    assert response.status_code == 200


def test_the_client_is_the_right_most_hop_that_is_not_a_trusted_proxy(signed, restricted, settings):
    settings.TRUSTED_PROXIES = TRUSTED
    # the client wrote "198.51.100.7" itself; the trusted proxy saw 203.0.113.9
    spoofed = signed(restricted).get("/auth/test", extra={
        "REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "198.51.100.7, 203.0.113.9"})
    assert spoofed.status_code == 401
    # two trusted proxies in a row: walk back through both
    chained = signed(restricted).get("/auth/test", extra={
        "REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 198.51.100.7, 10.0.0.3"})
    assert chained.status_code == 200


def test_garbage_in_a_forwarded_chain_is_not_believed():
    from backendai.api import clientip

    assert clientip.resolve_client("10.0.0.2", "198.51.100.7, not-an-ip", None, TRUSTED) == "10.0.0.2"
    assert clientip.resolve_client("10.0.0.2", "", "also garbage", TRUSTED) == "10.0.0.2"


async def _scope_seen_by_the_app(scope):
    from backendai.asgi import TrustedProxyHeaders

    seen = {}

    async def app(inner_scope, receive, send):
        seen.update(inner_scope)

    await TrustedProxyHeaders(app)(scope, None, None)
    return seen


def _scope(kind, peer, headers):
    return {"type": kind, "path": "/stream/x", "scheme": "ws" if kind == "websocket" else "http",
            "client": (peer, 50000), "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            "query_string": b""}


@pytest.mark.parametrize("kind", ["http", "websocket"])
def test_the_asgi_wrapper_ignores_forwarded_headers_from_an_untrusted_peer(kind, settings):
    settings.TRUSTED_PROXIES = TRUSTED
    headers = {"x-forwarded-for": "198.51.100.7", "x-real-ip": "198.51.100.8", "x-forwarded-proto": "https"}
    seen = asyncio.run(_scope_seen_by_the_app(_scope(kind, "203.0.113.9", headers)))
    assert seen["client"] == ("203.0.113.9", 50000)
    assert seen["scheme"] == ("ws" if kind == "websocket" else "http")


@pytest.mark.parametrize("kind", ["http", "websocket"])
def test_the_asgi_wrapper_believes_a_trusted_proxy(kind, settings):
    settings.TRUSTED_PROXIES = TRUSTED
    headers = {"x-forwarded-for": "192.0.2.1, 198.51.100.7", "x-forwarded-proto": "https"}
    seen = asyncio.run(_scope_seen_by_the_app(_scope(kind, "10.0.0.2", headers)))
    assert seen["client"][0] == "198.51.100.7"
    assert seen["scheme"] == ("wss" if kind == "websocket" else "https")


def test_a_websocket_is_authenticated_with_the_resolved_address(settings, restricted):
    """Websocket consumers build their request from the scope (``sessions.streams.scope_request``):
    the allowed-client-IP check sees the wrapper's answer, not the client's header."""
    from backendai.api.authentication import client_address
    from sessions.streams import scope_request

    settings.TRUSTED_PROXIES = TRUSTED
    spoofed = asyncio.run(_scope_seen_by_the_app(_scope("websocket", "203.0.113.9", {"x-forwarded-for": "198.51.100.7"})))
    assert client_address(scope_request(spoofed)) == "203.0.113.9"
    proxied = asyncio.run(_scope_seen_by_the_app(_scope("websocket", "10.0.0.2", {"x-forwarded-for": "198.51.100.7"})))
    assert client_address(scope_request(proxied)) == "198.51.100.7"
    # a scope that never went through the wrapper gets the same rule
    raw = _scope("websocket", "203.0.113.9", {"x-forwarded-for": "198.51.100.7"})
    assert client_address(scope_request(raw)) == "203.0.113.9"


def _asgi_call(scope, body=b"", chunks=None):
    from asgiref.testing import ApplicationCommunicator

    from backendai.asgi import application

    async def run():
        communicator = ApplicationCommunicator(application, scope)
        for index, chunk in enumerate(chunks or [body]):
            await communicator.send_input({"type": "http.request", "body": chunk,
                                           "more_body": index < len(chunks or [body]) - 1})
        start = await communicator.receive_output(timeout=30)
        content = b""
        while True:
            message = await communicator.receive_output(timeout=30)
            content += message.get("body", b"")
            if not message.get("more_body"):
                break
        await communicator.wait(timeout=5)
        return start["status"], dict(start["headers"]), content

    return asyncio.run(run())


def _signed_scope(user, peer, extra_headers=(), method="GET", target="/auth/test", content_type="text/plain"):
    keypair = user.main_keypair
    api = SignedClient(None, keypair.access_key, keypair.secret_key)
    meta = api.headers(method, target, content_type)
    headers = [(b"host", b"testserver"), (b"date", meta["HTTP_DATE"].encode()),
               (b"x-backendai-version", meta["HTTP_X_BACKENDAI_VERSION"].encode()),
               (b"authorization", meta["HTTP_AUTHORIZATION"].encode()), (b"content-type", content_type.encode())]
    headers += [(k.encode(), v.encode()) for k, v in extra_headers]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": target, "raw_path": target.encode(), "query_string": b"", "root_path": "",
            "headers": headers, "client": (peer, 40000), "server": ("testserver", 80)}


@pytest.mark.django_db(transaction=True)
def test_the_whole_asgi_application_believes_only_trusted_proxies(settings, make_user):
    settings.TRUSTED_PROXIES = TRUSTED
    user = make_user("asgi@example.com", allowed_client_ip=["198.51.100.0/24"])
    user.refresh_from_db()
    spoofed = _asgi_call(_signed_scope(user, "203.0.113.9", [("x-forwarded-for", "198.51.100.7")]))
    assert spoofed[0] == 401
    proxied = _asgi_call(_signed_scope(user, "10.0.0.2", [("x-forwarded-for", "198.51.100.7")]))
    assert proxied[0] == 200


def test_daphne_is_not_started_with_proxy_headers():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert "--proxy-headers" not in (root / "backendai" / "stack.py").read_text()
    assert "--proxy-headers " not in (root / "README.md").read_text().replace("No --proxy-headers:", "")


# --- 2. a signature covers what the request does -------------------------------------------------------

@pytest.fixture
def folder(settings, tmp_path, owner):
    from vfolders import services

    settings.VFOLDER_ROOT = tmp_path / "vfroot"
    services.ensure_default_storage_host()
    return services.create_folder(owner, name="precious")


def _folder_status(folder):
    folder.refresh_from_db()
    return folder.status


def test_a_signed_get_replayed_with_a_delete_override_is_refused_and_the_folder_survives(signed, owner, folder, client):
    api = signed(owner)
    target = f"/folders/{folder.name}"
    captured = api.headers("GET", target, "text/plain")  # what an eavesdropper saw of a signed GET
    before = _folder_status(folder)
    replay = client.generic("GET", target, "", content_type="text/plain", CONTENT_TYPE="text/plain",
                            HTTP_X_METHOD_OVERRIDE="DELETE", **captured)
    assert replay.status_code == 401
    assert slug(replay) == "auth-failed"
    assert _folder_status(folder) == before
    assert api.get(target).status_code == 200


def test_an_override_the_client_signed_is_applied(signed, owner, folder, client):
    from vfolders.models import VFolderStatus

    api = signed(owner)
    target = f"/folders/{folder.name}"
    headers = api.headers("DELETE", target, "text/plain")  # signed over the effective method
    response = client.generic("POST", target, "", content_type="text/plain", CONTENT_TYPE="text/plain",
                              HTTP_X_METHOD_OVERRIDE="DELETE", **headers)
    assert response.status_code == 204, response.content
    assert _folder_status(folder) != VFolderStatus.READY


@pytest.mark.parametrize("spelling", [{"HTTP_X_HTTP_METHOD_OVERRIDE": "DELETE"}, {"QUERY": "_method=DELETE"}])
def test_other_override_spellings_are_ignored(signed, owner, folder, spelling):
    before = _folder_status(folder)
    target = f"/folders/{folder.name}" + (f"?{spelling['QUERY']}" if "QUERY" in spelling else "")
    response = signed(owner).get(target, extra={k: v for k, v in spelling.items() if k != "QUERY"})
    assert response.status_code == 200  # answered as the GET it was
    assert response.json()["name"] == folder.name
    assert _folder_status(folder) == before


@pytest.mark.parametrize("skew", [timedelta(minutes=16), -timedelta(minutes=16), timedelta(days=2)])
def test_a_signed_request_outside_the_date_window_is_refused(signed, owner, skew):
    response = signed(owner).get("/auth/test", date=datetime.now(timezone.utc) - skew)
    assert response.status_code == 400
    assert slug(response) == "invalid-auth-params"


@pytest.mark.parametrize("skew", [timedelta(minutes=14), -timedelta(minutes=14)])
def test_a_signed_request_inside_the_date_window_is_accepted(signed, owner, skew):
    assert signed(owner).get("/auth/test", date=datetime.now(timezone.utc) - skew).status_code == 200


# --- 3. input limits ---------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_refused_with_413(signed, superadmin, settings):
    from backendai.services import get_announcement

    settings.API_MAX_BODY = 1024
    before = get_announcement().message
    response = signed(superadmin).post("/manager/announcement", {"enabled": True, "message": "x" * 2000})
    assert response.status_code == 413
    assert slug(response) == "payload-too-large"
    assert get_announcement().message == before


def test_a_body_under_the_limit_is_accepted(signed, superadmin, settings):
    settings.API_MAX_BODY = 1024
    assert signed(superadmin).post("/manager/announcement", {"enabled": True, "message": "x" * 500}).status_code == 204


def test_the_parser_refuses_a_body_that_grows_past_the_limit_without_content_length(settings):
    from backendai.api import errors
    from backendai.api.parsers import HardenedJSONParser

    settings.API_MAX_BODY = 100
    with pytest.raises(errors.PayloadTooLarge):
        HardenedJSONParser().parse(io.BytesIO(b'{"a": "' + b"x" * 200 + b'"}'))


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_past_the_limit_gets_413_before_the_app_reads_it(settings, make_user):
    settings.API_MAX_BODY = 1000
    user = make_user("chunky@example.com")
    user.refresh_from_db()
    scope = _signed_scope(user, "127.0.0.1", method="POST", target="/auth/test", content_type="application/json")
    status, headers, body = _asgi_call(scope, chunks=[b'{"echo": "', b"x" * 600, b"x" * 600, b'"}'])
    assert status == 413
    assert headers[b"content-type"] == b"application/problem+json"
    assert json.loads(body)["type"].endswith("/payload-too-large")
    declared = _signed_scope(user, "127.0.0.1", [("content-length", "5000")], method="POST",
                             content_type="application/json")
    assert _asgi_call(declared, body=b"{}")[0] == 413
    small = _signed_scope(user, "127.0.0.1", method="POST", content_type="application/json")
    assert _asgi_call(small, chunks=[b'{"echo":', b' "hi"}'])[0] == 200


def test_request_data_too_big_from_django_is_a_413():
    from django.core.exceptions import RequestDataTooBig

    from backendai.api.exception_handler import problem_exception_handler

    response = problem_exception_handler(RequestDataTooBig("too big"), {})
    assert response.status_code == 413 and _slug_of(response) == "payload-too-large"


def test_a_file_upload_bigger_than_the_api_limit_still_works(signed, owner, folder, settings):
    """The bytes go to the storage proxy's client API, which has its own limits (not API_MAX_BODY)."""
    import httpx

    settings.API_MAX_BODY = 1024
    data = b"0123456789abcdef" * 512  # 8 KiB, eight times the API limit
    grant = signed(owner).post(f"/folders/{folder.name}/request-upload", {"path": "big.bin", "size": len(data)})
    assert grant.status_code == 200, grant.content
    response = httpx.patch(grant.json()["url"], params={"token": grant.json()["token"]}, content=data, timeout=30,
                           headers={"Content-Type": "application/offset+octet-stream", "Tus-Resumable": "1.0.0",
                                    "Upload-Offset": "0"})
    assert response.status_code == 204, response.content
    assert int(response.headers["Upload-Offset"]) == len(data)


def _slug_of(response) -> str:
    assert response["Content-Type"] == "application/problem+json"
    return json.loads(response.content)["type"].rsplit("/", 1)[-1]


def _nested(depth):
    return "[" * (depth - 1) + "{}" + "]" * (depth - 1)


@pytest.mark.parametrize("body", [
    '{"a": ' + _nested(40) + "}",
    '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1e999}', '{"a": -1e999}',
    '{"a": 123456789012345678901234567890}',
    '{"a": "nul\\u0000inside"}', '{"nul\\u0000key": 1}',
    "[]", '"x"', "null", "1", "true",
    '{"a": 1', "\xff\xfe",
], ids=["deep", "very-deep", "nan", "inf", "-inf", "1e999", "-1e999", "huge-int", "nul-value", "nul-key",
        "list", "string", "null", "number", "bool", "truncated", "not-utf8"])
def test_hostile_json_is_invalid_api_params(signed, superadmin, body):
    from backendai.services import get_announcement

    before = get_announcement().message
    response = signed(superadmin).post("/manager/announcement", body.encode("latin-1"), content_type="application/json")
    assert response.status_code == 400, response.content
    assert slug(response) == "invalid-api-params"
    assert get_announcement().message == before


def test_json_nested_up_to_the_limit_parses(settings):
    from backendai.api.parsers import loads

    assert loads('{"a": ' + _nested(settings.API_MAX_JSON_DEPTH - 1) + "}")
    with pytest.raises(Exception):
        loads('{"a": ' + _nested(settings.API_MAX_JSON_DEPTH) + "}")


def test_a_text_plain_body_goes_through_the_same_parser(signed, superadmin):
    response = signed(superadmin).post("/manager/announcement", '{"enabled": true, "message": NaN}',
                                       content_type="text/plain")
    assert response.status_code == 400 and slug(response) == "invalid-api-params"


def test_a_nul_in_the_path_names_no_object_and_in_the_query_is_invalid(signed, owner):
    response = signed(owner).get("/keypairs/%00")
    assert response.status_code == 404 and slug(response) == "object-not-found"
    response = signed(owner).get("/auth/test?x=%00")
    assert response.status_code == 400 and slug(response) == "invalid-api-params"
    assert problem(response)["msg"].startswith("x: ")


@pytest.mark.parametrize("body,field", [
    ('{"config": {"resources": {"cpu": NaN}}}', "config.resources.cpu"),
    ('{"mounts": ["a", 1e999]}', "mounts[1]"),
    ('{"name": "da\\u0000ta"}', "name"),
    ('{"batch_timeout": 99999999999999999999999}', "batch_timeout"),
])
def test_a_refused_json_value_names_its_field(signed, superadmin, body, field):
    response = signed(superadmin).post("/manager/announcement", body, content_type="application/json")
    assert response.status_code == 400
    assert problem(response)["msg"].startswith(f"{field}: "), response.content


def test_a_database_data_error_is_a_logged_400(caplog):
    from django.db import DataError

    from backendai.api.exception_handler import problem_exception_handler

    with caplog.at_level(logging.WARNING, logger="backendai.api.errors"):
        response = problem_exception_handler(DataError("value too long for type character varying(64)"), {})
    assert response.status_code == 400 and _slug_of(response) == "invalid-api-params"
    assert any(r.levelno == logging.WARNING and "missing validator" in r.getMessage() for r in caplog.records)


def test_type_errors_are_not_hidden_as_400(caplog):
    from backendai.api.exception_handler import problem_exception_handler

    with caplog.at_level(logging.ERROR):
        assert problem_exception_handler(TypeError("a bug"), {}).status_code == 500


def test_a_host_not_allowed_is_a_problem_json_400_on_the_api(client, settings):
    settings.ALLOWED_HOSTS = ["panel.example.com"]
    response = client.get("/auth/test", HTTP_HOST="evil.example.net")
    assert response.status_code == 400
    assert slug(response) == "generic-bad-request"
    page = client.get("/ui/login/", HTTP_HOST="evil.example.net")
    assert page.status_code == 400
    assert not page["Content-Type"].startswith("application/problem+json")


def _boom(request):
    raise RuntimeError("an unexpected bug")


urlpatterns = [path("auth/boom", _boom), path("ui/boom", _boom)]
from backendai.urls import handler400, handler404, handler500  # noqa: E402,F401


def test_an_unhandled_error_outside_drf_is_problem_json_500(settings):
    from django.test import Client

    settings.ROOT_URLCONF = __name__
    client = Client(raise_request_exception=False)
    response = client.get("/auth/boom")
    assert response.status_code == 500
    assert slug(response) == "internal-server-error"
    assert "an unexpected bug" not in response.content.decode()
    page = client.get("/ui/boom")
    assert page.status_code == 500 and not page["Content-Type"].startswith("application/problem+json")
