"""Hints cross processes in the embedded mode (backendai.hints): with in-memory
channel layers, the scheduler's poke is sent in the Celery worker while the
agent's link is held by daphne; the worker relays it to ``/internal/hints``.

The agent syncs every 120 s here (and does not long-poll), so a session can
reach RUNNING within the test's bounded wait only because the hint arrived."""
from __future__ import annotations

import re

import pytest

from sessions.models import Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = "hint-node"
INTERVAL = 120  # seconds between two syncs of the agent: far longer than any wait below


@pytest.fixture
def live_stack_env():
    return {"REDIS_URL": None,  # in-memory channel layers: the embedded mode
            "AGENT_SYNC_INTERVAL": str(INTERVAL), "AGENT_HEARTBEAT_TIMEOUT": str(5 * INTERVAL)}


def syncs_done(live_stack) -> int:
    return len(re.findall(r"sync #\d+ done", live_stack.full_log(AGENT)))


def test_the_workers_poke_reaches_the_agent_link_held_by_the_web_process(live_stack, cluster, owner):
    live_stack.env.update(BAI_AGENT_LONG_POLL="0", BAI_AGENT_LOG_LEVEL="DEBUG")
    live_stack.start_local_agent(AGENT, cluster[1])
    # the first sync, then the one the link's opening asks for; the next is INTERVAL seconds away
    live_stack.wait_for(lambda: syncs_done(live_stack) >= 2, what="the agent's second sync")
    pokes_before = live_stack.full_log(AGENT).count("link: poked")

    live_stack.enqueue_shell_session(owner.main_keypair, "hinted")

    session = live_stack.wait_for(lambda: Session.objects.filter(name="hinted", status="RUNNING").first(),
                                  timeout=60, what="the session RUNNING well before the agent's next timed sync")
    assert live_stack.full_log(AGENT).count("link: poked") > pokes_before  # the hint came over the link
    entries = [entry["status"] for entry in session.status_history]
    assert entries[0] == "PENDING" and "RUNNING" in entries
