"""``POST /internal/hints``: hints relayed to the web process (backendai.hints).

Only a body signed with the HMAC of ``SECRET_KEY`` and a fresh timestamp is
accepted; Backend.AI API signatures and agent tokens are worth nothing here;
malformed bodies are 400 problems; an accepted hint reaches the agent's group
on the channel layer."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from agents import services
from backendai import hints
from helpers import problem, slug

pytestmark = pytest.mark.django_db

PATH = "/internal/hints"


def relay(client, body, headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = hints.signed_headers(raw) if headers is None else headers
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items() if k != "Content-Type"}
    return client.generic("POST", PATH, raw, content_type="application/json", **extra)


@pytest.fixture
def listening():
    """A channel in the groups of agents node-1 and node-2; ``receive()`` returns the next message or None."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    groups = [hints.agent_group("node-1"), hints.agent_group("node-2")]
    for group in groups:
        async_to_sync(layer.group_add)(group, channel)

    async def next_message(timeout):
        try:
            return await asyncio.wait_for(layer.receive(channel), timeout)
        except asyncio.TimeoutError:
            return None

    def receive(timeout=5.0):
        return async_to_sync(next_message)(timeout)

    yield receive
    for group in groups:
        async_to_sync(layer.group_discard)(group, channel)


def test_a_signed_hint_is_delivered_to_the_agents_group(client, listening):
    response = relay(client, {"agents": ["node-1"]})
    assert response.status_code == 204, response.content
    assert listening() == {"type": "agent.poke"}


def test_one_relayed_request_hints_every_agent_it_names(client, listening):
    assert relay(client, {"agents": ["node-1", "node-2", "node-1"]}).status_code == 204
    assert listening() == {"type": "agent.poke"}
    assert listening() == {"type": "agent.poke"}


def test_the_agent_group_is_the_one_the_link_consumer_joins():
    assert services.agent_group("node-1") == hints.agent_group("node-1")


@pytest.mark.parametrize("headers", [
    {},
    {hints.TIMESTAMP_HEADER: str(int(time.time()))},
    {hints.SIGNATURE_HEADER: "0" * 64},
], ids=["nothing", "timestamp-only", "signature-only"])
def test_a_hint_without_its_signature_is_refused(client, listening, headers):
    response = relay(client, {"agents": ["node-1"]}, headers=headers)
    assert response.status_code == 403 and slug(response) == "generic-forbidden"
    assert listening(0.5) is None


def test_a_hint_signed_with_another_key_is_refused(client, listening):
    raw = json.dumps({"agents": ["node-1"]}).encode()
    timestamp = str(int(time.time()))
    forged = {hints.TIMESTAMP_HEADER: timestamp,
              hints.SIGNATURE_HEADER: hints.signature(raw, timestamp, secret="another-secret-key-" + "x" * 32)}
    response = relay(client, raw, headers=forged)
    assert response.status_code == 403 and "bad hint signature" in problem(response)["msg"].lower()
    assert listening(0.5) is None


def test_a_signature_over_another_body_is_refused(client, listening):
    headers = hints.signed_headers(json.dumps({"agents": ["node-2"]}).encode())
    response = relay(client, {"agents": ["node-1"]}, headers=headers)
    assert response.status_code == 403
    assert listening(0.5) is None


@pytest.mark.parametrize("age", [hints.MAX_SKEW + 60, -(hints.MAX_SKEW + 60)], ids=["stale", "future"])
def test_a_hint_outside_the_time_window_is_refused(client, listening, age):
    raw = json.dumps({"agents": ["node-1"]}).encode()
    response = relay(client, raw, headers=hints.signed_headers(raw, now=time.time() - age))
    assert response.status_code == 403 and "stale" in problem(response)["msg"].lower()
    assert listening(0.5) is None


def test_a_malformed_timestamp_is_refused(client):
    raw = json.dumps({"agents": ["node-1"]}).encode()
    for timestamp in ("soon", "1e9", "-5", "١٢٣", "9" * 40):
        headers = {hints.TIMESTAMP_HEADER: timestamp, hints.SIGNATURE_HEADER: "0" * 64}
        response = relay(client, raw, headers=headers)
        assert response.status_code == 403, timestamp


def test_a_backend_ai_api_signature_is_no_credential_here(signed, owner, listening):
    response = signed(owner).post(PATH, {"agents": ["node-1"]})
    assert response.status_code == 403 and slug(response) == "generic-forbidden"
    assert listening(0.5) is None


def test_an_agent_token_is_no_credential_here(client, defaults, listening):
    group = services.ensure_default_scaling_group()
    token = services.issue_token("nodes", scaling_group=group)[1]
    response = client.post(PATH, json.dumps({"agents": ["node-1"]}), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 403
    assert listening(0.5) is None


@pytest.mark.parametrize("body", [
    b"not json",
    b"\xff\xfe",
    b"[]",
    b'"node-1"',
    b"{}",
    b'{"agents": "node-1"}',
    b'{"agents": []}',
    b'{"agents": [1]}',
    b'{"agents": ["bad id!"]}',
    b'{"agents": [""]}',
    b'{"agents": ["' + b"a" * 65 + b'"]}',
    b'{"agents": ["node-1"], "extra": true}',
    json.dumps({"agents": [f"n{i}" for i in range(hints.MAX_AGENTS + 1)]}).encode(),
], ids=["text", "binary", "list", "string", "empty", "agents-string", "no-agents", "number", "bad-id", "blank-id",
        "long-id", "extra-key", "too-many"])
def test_a_malformed_signed_body_is_a_400_problem(client, listening, body):
    response = relay(client, body)
    assert response.status_code == 400 and slug(response) == "invalid-api-params", response.content
    assert listening(0.3) is None


def test_only_post_is_served(client):
    response = client.get(PATH)
    assert response.status_code == 405 and slug(response) == "method-not-allowed"
