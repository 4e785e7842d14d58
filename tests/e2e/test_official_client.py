"""The official ``backend.ai-client`` (23.9.10, in its own virtualenv) against a
live server: its SDK signs calls we accept, a wrong secret is refused the way
it expects, and its CLI reads the versions and the announcement."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# In 23.9.10 ``Request.fetch()`` is an async context manager only (its docstring's
# sync ``with`` is not implemented); sync sessions run it on their worker thread,
# exactly as the SDK's own API functions do.
SIGNED_CALL = r"""
import json
from ai.backend.client.exceptions import BackendAPIError
from ai.backend.client.request import Request
from ai.backend.client.session import Session

with Session() as session:
    rqst = Request("GET", "/auth/test", params={"echo": ECHO})

    async def call():
        async with rqst.fetch() as resp:
            return {"status": resp.status, "body": await resp.json()}

    try:
        result = session.worker_thread.execute(call())
    except BackendAPIError as exc:
        result = {"error": "BackendAPIError", "status": exc.status, "reason": exc.reason, "data": exc.data}
    result["sent_version"] = rqst.headers["X-BackendAI-Version"]
    result["negotiated"] = list(session.api_version)
    result["signed"] = rqst.headers.get("Authorization", "")
print(json.dumps(result))
"""


def signed_call(echo: str) -> str:
    return SIGNED_CALL.replace("ECHO", repr(echo))


def test_the_official_client_makes_a_signed_call_with_the_right_keys(make_user, official_client):
    from accounts.models import Keypair

    user = make_user("sdk@example.com")
    keypair = user.main_keypair

    result = official_client.script_json(keypair, signed_call("hi there/&?"))

    assert result.get("error") is None, result
    assert result["status"] == 200
    assert result["body"] == {"authorized": "yes", "echo": "hi there/&?"}
    # The client negotiated min(server v8.20240915, its own v7.20230615), sent it, and we took it.
    assert result["negotiated"] == [7, "20230615"]
    assert result["sent_version"] == "v7.20230615"
    assert result["signed"].startswith(f"BackendAI signMethod=HMAC-SHA256, credential={keypair.access_key}:")
    used = Keypair.objects.get(pk=keypair.pk)
    assert used.num_queries >= 1 and used.last_used is not None


def test_the_official_client_is_refused_with_a_wrong_secret(make_user, official_client):
    from accounts.models import Keypair

    user = make_user("wrong@example.com")
    keypair = user.main_keypair
    wrong_secret = keypair.secret_key[::-1]
    assert wrong_secret != keypair.secret_key

    result = official_client.script_json((keypair.access_key, wrong_secret), signed_call("nope"))

    assert result.get("error") == "BackendAPIError", result
    assert result["status"] == 401
    assert result["data"]["type"].endswith("/auth-failed"), result["data"]
    assert result["data"]["title"]
    assert Keypair.objects.get(pk=keypair.pk).num_queries == 0


def test_the_cli_reads_the_announcement_and_config(make_user, official_client, live_server):
    from backendai import __version__, services, signing

    user = make_user("cli@example.com")
    services.set_announcement(True, "maintenance at noon")

    config = official_client.cli(user.main_keypair, "config")
    assert config.returncode == 0, f"stdout:\n{config.stdout}\nstderr:\n{config.stderr}"
    assert f"API endpoint: {live_server.url}" in config.stdout
    assert f"Server version: {__version__} (API: {signing.LATEST_API_VERSION})" in config.stdout
    assert "Server version: (failed to fetch)" not in config.stdout
    assert "Negotiated API version: (7, '20230615')" in config.stdout
    assert f'Access key: "{user.main_keypair.access_key}"' in config.stdout

    # ``admin announcement get`` is a plain signed GET /manager/announcement.  (The
    # unified 23.9.10 CLI does not install the client's announcement banner for
    # ``config`` or ``admin`` commands, so stdout of this command is what we check.)

    shown = official_client.cli(user.main_keypair, "admin", "announcement", "get")
    assert shown.returncode == 0, f"stdout:\n{shown.stdout}\nstderr:\n{shown.stderr}"
    assert shown.stdout.strip().splitlines()[-1] == "maintenance at noon"

    services.set_announcement(False, "")
    cleared = official_client.cli(user.main_keypair, "admin", "announcement", "get")
    assert cleared.returncode == 0, f"stdout:\n{cleared.stdout}\nstderr:\n{cleared.stderr}"
    assert "No announcements." in cleared.stdout
    assert "maintenance at noon" not in cleared.stdout
