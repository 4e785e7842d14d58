"""Hints cross processes in the embedded mode (backendai.hints): with in-memory
channel layers, the scheduler's poke is sent in the Celery worker while the
agent's link is held by daphne; the worker relays it to ``/internal/hints``.

The agent syncs every 120 s here (and does not long-poll), so a session can
reach RUNNING within the test's bounded wait only because the hint arrived."""
from __future__ import annotations

import json
import re

import httpx
import pytest

from agents.models import Agent, AgentStatus
from backendai.signing import signed_headers
from sessions.models import Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = "hint-node"
INTERVAL = 120  # seconds between two syncs of the agent: far longer than any wait below


@pytest.fixture
def live_stack_env():
    return {"REDIS_URL": None,  # in-memory channel layers: the embedded mode
            "AGENT_SYNC_INTERVAL": str(INTERVAL), "AGENT_HEARTBEAT_TIMEOUT": str(5 * INTERVAL)}


def full_log(live_stack, name) -> str:
    return live_stack.logs[name].read_text(errors="replace")


def syncs_done(live_stack) -> int:
    return len(re.findall(r"sync #\d+ done", full_log(live_stack, AGENT)))


def test_the_workers_poke_reaches_the_agent_link_held_by_the_web_process(live_stack, cluster, owner):
    live_stack.env.update(BAI_AGENT_LONG_POLL="0", BAI_AGENT_LOG_LEVEL="DEBUG")
    live_stack.start_agent(AGENT, "local", cluster[1])
    live_stack.wait_for(lambda: Agent.objects.filter(pk=AGENT, status=AgentStatus.ALIVE,
                                                     images__name="local/shell:1.0").exists(),
                        what="the local agent with its images")
    live_stack.wait_for(lambda: f"agent {AGENT} link open" in full_log(live_stack, "web"), what="the agent's link")
    # the first sync, then the one the link's opening asks for; the next is INTERVAL seconds away
    live_stack.wait_for(lambda: syncs_done(live_stack) >= 2, what="the agent's second sync")
    pokes_before = full_log(live_stack, AGENT).count("link: poked")

    keypair = owner.main_keypair
    body = {"image": "local/shell:1.0", "name": "hinted", "enqueueOnly": True,
            "config": {"resources": {"cpu": "0.25", "mem": "256m"}}}
    headers = signed_headers(keypair.access_key, keypair.secret_key, "POST", "/session", live_stack.host)
    created = httpx.post(live_stack.url + "/session", headers=headers, content=json.dumps(body), timeout=60)
    assert created.status_code in (200, 201), created.text

    session = live_stack.wait_for(lambda: Session.objects.filter(name="hinted", status="RUNNING").first(),
                                  timeout=60, what="the session RUNNING well before the agent's next timed sync")
    assert full_log(live_stack, AGENT).count("link: poked") > pokes_before  # the hint came over the link
    entries = [entry["status"] for entry in session.status_history]
    assert entries[0] == "PENDING" and "RUNNING" in entries
