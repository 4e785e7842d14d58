"""API versions: v4 to v8 and ``v9.20250722`` (what client 26.09 falls back to when it cannot
negotiate) are accepted; the root keeps announcing v8 while not every v9 difference is
served (docs/client-compat.md); anything else is refused with 400 before any view runs."""
from __future__ import annotations

import pytest

from backendai import signing
from backendai.api.middleware import ACCEPTED_API_VERSIONS
from helpers import PASSWORD, slug

pytestmark = pytest.mark.django_db

V9 = "v9.20250722"


def test_a_signed_v9_request_is_accepted(signed, owner):
    response = signed(owner, version=V9).get("/auth/test?echo=v9")
    assert response.status_code == 200 and response.json()["echo"] == "v9"


def test_a_signed_v9_graphql_query_is_answered(signed, owner):
    response = signed(owner, version=V9).post("/admin/gql", {"query": "query { keypair { access_key } }"})
    assert response.status_code == 200
    assert response.json()["data"]["keypair"]["access_key"] == owner.main_keypair.access_key


def test_the_root_keeps_announcing_v8(client):
    assert client.get("/").json()["version"] == "v8.20240915" == signing.LATEST_API_VERSION
    assert client.get("/", HTTP_X_BACKENDAI_VERSION=V9).json()["version"] == "v8.20240915"


def test_the_v9_version_header_is_covered_by_the_signature(signed, owner):
    """Signed as v8, sent as v9: the signature no longer matches."""
    api = signed(owner)
    headers = api.headers("GET", "/auth/test", "text/plain")
    headers["HTTP_X_BACKENDAI_VERSION"] = V9
    response = api.client.get("/auth/test", CONTENT_TYPE="text/plain", **headers)
    assert response.status_code == 401 and slug(response) == "auth-failed"


@pytest.mark.parametrize("version", ["v9.20250721", "v9.20250723", "v9", "v10.20260101", "V9.20250722",
                                     " v9.20250722", "v9.20250722\x00"])
def test_other_versions_are_still_refused_with_400(client, version):
    response = client.get("/", HTTP_X_BACKENDAI_VERSION=version)
    assert response.status_code == 400 and slug(response) == "generic-bad-request"


def test_the_accepted_versions_are_the_listed_ones_and_v9():
    assert ACCEPTED_API_VERSIONS == frozenset(signing.API_VERSIONS) | {V9}


def test_session_mode_accepts_v9_too(client, owner):
    client.post("/server/login", {"username": owner.email, "password": PASSWORD}, content_type="application/json")
    response = client.get("/func/auth/test", CONTENT_TYPE="text/plain", HTTP_X_BACKENDAI_VERSION=V9)
    assert response.status_code == 200
