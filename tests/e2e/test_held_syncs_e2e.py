"""Held syncs (the agent long poll) hold no database connection: with a pool of
two connections per process, four syncs held at once leave the web process
serving other API requests, and each held sync answers within its wait: when
a hint for its agent comes (relayed to ``/internal/hints``) or when the wait
elapses."""
from __future__ import annotations

import json
import re
import threading
import time
import urllib.request

import httpx
import pytest

from backendai import hints
from backendai.signing import signed_headers

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WAIT = 30  # seconds each sync asks to be held: far longer than the requests made meanwhile
AGENTS = [f"held-{i}" for i in range(4)]


@pytest.fixture
def live_stack_env():
    return {"DB_POOL_MAX_SIZE": "2", "DB_POOL_MIN_SIZE": "1", "AGENT_SYNC_MAX_WAIT": str(WAIT),
            "AGENT_HEARTBEAT_TIMEOUT": str(4 * WAIT), "METRICS_PUBLIC": "true"}


def sync_body(agent_id, **extra):
    return {"agent_id": agent_id, "scaling_group": "default", "address": "127.0.0.1", "backend": "local",
            "capacity": {"cpu": "1", "mem": "1073741824"}, "slot_types": {"cpu": "count", "mem": "bytes"},
            "kernels": [], **extra}


def post_sync(url, token, body, timeout=30.0):
    return httpx.post(url + "/agent-api/v1/sync", content=json.dumps(body), timeout=timeout,
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


def held_now(url) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r"^backendai_agent_syncs_held(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_four_held_syncs_leave_a_pool_of_two_free_for_other_requests(live_stack, cluster, owner):
    token = cluster[1]
    known = {}
    for agent_id in AGENTS:
        first = post_sync(live_stack.url, token, sync_body(agent_id))
        assert first.status_code == 200, first.text
        known[agent_id] = first.json()["fingerprint"]
        assert first.json()["max_wait"] == WAIT

    answers: dict[str, httpx.Response | BaseException] = {}

    def held_sync(agent_id):
        try:
            answers[agent_id] = post_sync(live_stack.url, token,
                                          sync_body(agent_id, wait=WAIT, fingerprint=known[agent_id]),
                                          timeout=WAIT + 60)
        except BaseException as exc:  # noqa: BLE001 - reported below
            answers[agent_id] = exc

    threads = [threading.Thread(target=held_sync, args=(a,), daemon=True) for a in AGENTS]
    for thread in threads:
        thread.start()
    live_stack.wait_for(lambda: held_now(live_stack.url) >= len(AGENTS), timeout=60, interval=0.2,
                        what="four syncs held at once")

    keypair = owner.main_keypair
    results = []

    def api_call():
        headers = signed_headers(keypair.access_key, keypair.secret_key, "GET", "/config/resource-slots",
                                 live_stack.host)
        results.append(httpx.get(live_stack.url + "/config/resource-slots", headers=headers, timeout=60).status_code)

    callers = [threading.Thread(target=api_call, daemon=True) for _ in range(8)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(90)
    assert results == [200] * 8, results  # no 503: the held syncs took no connection from the pool
    assert held_now(live_stack.url) >= len(AGENTS), "the syncs were not held while the requests ran"

    # two end on a hint: one sent from this process over Redis (as a production worker sends it), the other
    # relayed as the embedded worker relays it (signed with the stack's own key); both relayed without Redis
    from django.conf import settings

    relay_to = AGENTS[:2]
    if settings.REDIS_URL:
        hints.hint_agents(AGENTS[:1])
        relay_to = AGENTS[1:2]
    body = json.dumps({"agents": relay_to}).encode()
    secret = (live_stack.data_dir / "secret_key").read_text().strip()
    timestamp = str(int(time.time()))
    relayed = httpx.post(live_stack.url + hints.RELAY_PATH, content=body, timeout=30,
                         headers={"Content-Type": "application/json", hints.TIMESTAMP_HEADER: timestamp,
                                  hints.SIGNATURE_HEADER: hints.signature(body, timestamp, secret=secret)})
    assert relayed.status_code == 204, relayed.text
    for thread in threads[:2]:
        thread.join(60)
        assert not thread.is_alive(), "a hinted sync was not answered"
    # the other two when their wait elapses
    for thread in threads[2:]:
        thread.join(WAIT + 90)
        assert not thread.is_alive(), "a held sync never answered"
    for agent_id in AGENTS:
        answer = answers[agent_id]
        assert isinstance(answer, httpx.Response) and answer.status_code == 200, answer
        assert answer.json()["fingerprint"] == known[agent_id]  # nothing changed for any of them
    assert held_now(live_stack.url) == 0
