"""Request signing: the client-wire test vectors, tampering, clock skew and
malformed headers, checked both on the pure verifier and through the API."""
from datetime import datetime, timedelta, timezone

import pytest

from backendai import signing
from helpers import slug

VECTOR_AK = "AKIATESTTESTTESTTEST"
VECTOR_SK = "TESTSECRETKEYTESTSECRETKEYTESTSECRETKEY0"
VECTOR_HOST = "127.0.0.1:8081"
VECTOR_DATE = "2024-01-02T03:04:05.678901+00:00"
VECTORS = [
    ("GET", "/folders/_/hosts", "text/plain", "v8.20240915",
     "a80aaa9bf595b5a5ed3f4e3dccafc4dddad38cf0d74e8a3659b241d3d7a6affc"),
    ("POST", "/session", "application/json", "v7.20230615",
     "98f1f611ad292d83b5b970456ca0ce499b07729e8d2f0cb0e6b989cbbe890654"),
    ("DELETE", "/session/mysess?forced=true", "text/plain", "v7.20230615",
     "ca50a5a316a8919b7db79b008c48632ab8409d644086feebe7e361b9c0c82909"),
]
VECTOR_NOW = datetime.fromisoformat(VECTOR_DATE)


@pytest.mark.parametrize("method,target,ctype,version,expected", VECTORS)
def test_it_computes_the_client_wire_vectors(method, target, ctype, version, expected):
    assert signing.sign(VECTOR_SK, method, target, VECTOR_DATE, VECTOR_HOST, ctype, version) == expected


@pytest.mark.parametrize("method,target,ctype,version,expected", VECTORS)
def test_the_server_verifier_accepts_the_client_wire_vectors(method, target, ctype, version, expected):
    credential = signing.parse_authorization(signing.authorization_header(VECTOR_AK, expected))
    request = signing.SignedRequest(method, target, VECTOR_DATE, VECTOR_HOST, ctype + "; charset=utf-8", version)
    signing.verify(VECTOR_SK, credential, request, now=VECTOR_NOW + timedelta(minutes=3))


@pytest.mark.parametrize(
    "field,value",
    [("method", "PUT"), ("target", "/session/mysess?forced=false"), ("target", "/session/other?forced=true"),
     ("date_value", "2024-01-02T03:04:06.678901+00:00"), ("host", "127.0.0.1:8082"),
     ("content_type", "application/json"), ("api_version", "v8.20240915")],
)
def test_the_verifier_refuses_a_tampered_vector(field, value):
    method, target, ctype, version, expected = VECTORS[2]
    fields = dict(method=method, target=target, date_value=VECTOR_DATE, host=VECTOR_HOST, content_type=ctype,
                  api_version=version)
    fields[field] = value
    credential = signing.parse_authorization(signing.authorization_header(VECTOR_AK, expected))
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(VECTOR_SK, credential, signing.SignedRequest(**fields), now=VECTOR_NOW)


def test_the_verifier_refuses_a_wrong_secret():
    method, target, ctype, version, expected = VECTORS[0]
    credential = signing.parse_authorization(signing.authorization_header(VECTOR_AK, expected))
    request = signing.SignedRequest(method, target, VECTOR_DATE, VECTOR_HOST, ctype, version)
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(VECTOR_SK[:-1] + "1", credential, request, now=VECTOR_NOW)


def test_a_missing_content_type_counts_as_octet_stream():
    assert signing.media_type(None) == "application/octet-stream"
    assert signing.media_type("Multipart/Form-Data; boundary=xyz") == "multipart/form-data"


@pytest.mark.parametrize(
    "header",
    ["", "BackendAI", "Bearer abc", "BackendAI signMethod=HMAC-SHA256",
     "BackendAI signMethod=HMAC-SHA256, credential=AKIA", "BackendAI signMethod=RSA-SHA256, credential=A:B",
     "BackendAI signMethod=HMAC-NOPE, credential=A:B", "BackendAI credential=A:B", "BackendAI signMethod, credential"],
)
def test_it_rejects_malformed_authorization_headers(header):
    with pytest.raises(signing.MalformedAuthorization):
        signing.parse_authorization(header)


def test_it_accepts_rfc822_and_naive_dates():
    assert signing.parse_request_date("Tue, 02 Jan 2024 03:04:05 GMT") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert signing.parse_request_date("2024-01-02T03:04:05").tzinfo == timezone.utc


# --- through the API --------------------------------------------------------------------------

@pytest.fixture
def vector_user(make_user):
    from accounts.models import Keypair

    user = make_user("vector@example.com")
    user.main_keypair = Keypair.objects.create(
        access_key=VECTOR_AK, secret_key=VECTOR_SK, user=user, resource_policy=user.main_keypair.resource_policy
    )
    user.save(update_fields=["main_keypair"])
    return user


def _send(client, method, target, *, ctype="text/plain", version="v8.20240915", date=None, secret=VECTOR_SK,
          host=VECTOR_HOST, sign_host=None, sign_target=None, sign_version=None, sign_date=None, sent_version=None):
    date_value = (date or datetime.now(timezone.utc)).isoformat()
    sig = signing.sign(secret, method, sign_target or target, sign_date or date_value, sign_host or host, ctype,
                       sign_version or version)
    return client.generic(
        method, target, "", content_type=ctype, CONTENT_TYPE=ctype, HTTP_HOST=host, HTTP_DATE=date_value,
        HTTP_X_BACKENDAI_VERSION=sent_version or version,
        HTTP_AUTHORIZATION=signing.authorization_header(VECTOR_AK, sig),
    )


@pytest.mark.django_db
@pytest.mark.parametrize("version", ["v8.20240915", "v7.20230615", "v5.20191215", "v4.20190615"])
def test_the_api_accepts_a_signed_call_with_the_vector_keys(client, vector_user, version):
    response = _send(client, "GET", "/auth/test?echo=hello", version=version)
    assert response.status_code == 200, response.content
    assert response.json() == {"authorized": "yes", "echo": "hello"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "tamper",
    [
        {"sign_target": "/auth/test?echo=other"},
        {"sign_target": "/auth?echo=hello"},
        {"sign_date": "2024-01-02T03:04:05.678901+00:00"},
        {"sign_host": "127.0.0.1:9999"},
        {"sent_version": "v7.20230615"},
        {"secret": "X" * 40},
    ],
    ids=["query", "path", "date", "host", "version", "secret"],
)
def test_the_api_refuses_a_tampered_request_with_auth_failed(client, vector_user, tamper):
    response = _send(client, "GET", "/auth/test?echo=hello", **tamper)
    assert response.status_code == 401
    assert slug(response) == "auth-failed"


@pytest.mark.django_db
def test_the_api_accepts_a_skew_of_14m55s(client, vector_user):
    for delta in (timedelta(minutes=14, seconds=55), -timedelta(minutes=14, seconds=55)):
        response = _send(client, "GET", "/auth/test", date=datetime.now(timezone.utc) + delta)
        assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_the_api_refuses_a_skew_of_15m05s(client, vector_user):
    for delta in (timedelta(minutes=15, seconds=5), -timedelta(minutes=15, seconds=5)):
        response = _send(client, "GET", "/auth/test", date=datetime.now(timezone.utc) + delta)
        assert response.status_code == 400
        assert slug(response) == "invalid-auth-params"
        assert "sync" in response.json()["msg"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header", ["BackendAI", "BackendAI signMethod=HMAC-SHA256", "Token abc", "BackendAI signMethod=HMAC-SHA256, credential=nocolon"]
)
def test_the_api_answers_malformed_authorization_with_invalid_auth_params(client, vector_user, header):
    response = client.get("/auth/test", HTTP_AUTHORIZATION=header, HTTP_DATE=datetime.now(timezone.utc).isoformat())
    assert response.status_code == 400
    assert slug(response) == "invalid-auth-params"


@pytest.mark.django_db
def test_the_api_refuses_a_missing_date_with_invalid_auth_params(client, vector_user):
    response = client.get("/auth/test", HTTP_AUTHORIZATION=signing.authorization_header(VECTOR_AK, "ab" * 32))
    assert response.status_code == 400
    assert slug(response) == "invalid-auth-params"


@pytest.mark.django_db
def test_the_api_refuses_an_unknown_access_key(client, defaults):
    response = _send(client, "GET", "/auth/test")
    assert response.status_code == 401
    assert slug(response) == "auth-failed"


@pytest.mark.django_db
def test_an_unsigned_call_to_a_protected_endpoint_is_refused(client, defaults):
    response = client.get("/auth/test")
    assert response.status_code == 401
    assert slug(response) == "auth-failed"


@pytest.mark.django_db
def test_a_signed_post_with_a_json_body_and_charset_is_accepted(client, vector_user):
    date_value = datetime.now(timezone.utc).isoformat()
    sig = signing.sign(VECTOR_SK, "POST", "/auth/test", date_value, VECTOR_HOST, "application/json", "v8.20240915")
    response = client.post(
        "/auth/test", '{"echo": "posted"}', content_type="application/json; charset=utf-8", HTTP_HOST=VECTOR_HOST,
        HTTP_DATE=date_value, HTTP_X_BACKENDAI_VERSION="v8.20240915",
        HTTP_AUTHORIZATION=signing.authorization_header(VECTOR_AK, sig),
    )
    assert response.status_code == 200, response.content
    assert response.json()["echo"] == "posted"


@pytest.mark.django_db
def test_a_percent_encoded_query_is_signed_raw(client, vector_user):
    response = _send(client, "GET", "/auth/test?echo=a%20b%2Fc")
    assert response.status_code == 200, response.content
    assert response.json()["echo"] == "a b/c"


@pytest.mark.django_db
def test_the_x_backendai_date_header_takes_precedence(client, vector_user):
    real = datetime.now(timezone.utc).isoformat()
    sig = signing.sign(VECTOR_SK, "GET", "/auth/test", real, VECTOR_HOST, "text/plain", "v8.20240915")
    response = client.get(
        "/auth/test", CONTENT_TYPE="text/plain", HTTP_HOST=VECTOR_HOST, HTTP_DATE="Tue, 02 Jan 2024 03:04:05 GMT",
        HTTP_X_BACKENDAI_DATE=real, HTTP_X_BACKENDAI_VERSION="v8.20240915",
        HTTP_AUTHORIZATION=signing.authorization_header(VECTOR_AK, sig),
    )
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_a_signed_call_costs_a_constant_number_of_queries(client, vector_user, django_assert_num_queries):
    _send(client, "GET", "/auth/test")  # warm up
    with django_assert_num_queries(2):  # the keypair with its user and policy; the last-used update
        response = _send(client, "GET", "/auth/test")
    assert response.status_code == 200
