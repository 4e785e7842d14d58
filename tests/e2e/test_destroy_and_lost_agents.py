"""An agent killed for good (kill -9, never restarted), with a short heartbeat
timeout and ``AGENT_LOST_GRACE``: the manager marks it LOST, shows that on its
sessions, ends them once the grace has passed (not before), and a forced destroy
of each through the API takes it to TERMINATED with its slots released."""
from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from agents.models import Agent, AgentStatus
from backendai.signing import signed_headers
from sessions import services as session_services
from sessions.models import Kernel, Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = "e2e-doomed"
GRACE = 5
BOUND = 120  # seconds: the longest any wait below may take (it ends as soon as the condition holds)


@pytest.fixture
def live_stack_env():
    return {"AGENT_HEARTBEAT_TIMEOUT": "5", "AGENT_LOST_GRACE": str(GRACE)}


def api(live_stack, keypair, method, target):
    headers = signed_headers(keypair.access_key, keypair.secret_key, method, target, live_stack.host,
                             content_type="text/plain")
    return httpx.request(method, live_stack.url + target, headers=headers, timeout=90)


def test_a_dead_agents_sessions_end_after_the_grace_and_a_forced_destroy_terminates_them(live_stack, cluster, owner):
    _, token = cluster
    live_stack.start_agent(AGENT, "local", token)
    agent = live_stack.wait_for(lambda: Agent.objects.filter(pk=AGENT, status=AgentStatus.ALIVE).first(),
                                timeout=BOUND, what="the local agent")
    sessions = [session_services.create_session_on_agent(user=owner, image="local/shell:1.0", agent=agent,
                                                         slots={"cpu": "0.1", "mem": str(64 * 2**20)})
                for _ in range(2)]
    kernel_ids = [s.kernels.get().pk for s in sessions]
    try:
        live_stack.wait_for(lambda: Kernel.objects.filter(pk__in=kernel_ids, status="RUNNING").count() == 2,
                            timeout=BOUND, what="both kernels to run")

        live_stack.kill(AGENT)  # kill -9 of its process group, never restarted
        lost = live_stack.wait_for(lambda: Agent.objects.filter(pk=AGENT, status=AgentStatus.LOST).first(),
                                   timeout=BOUND, what="the agent to be marked LOST")
        info = api(live_stack, owner.main_keypair, "GET", f"/session/{sessions[0].pk}").json()
        assert info["agents"] == [{"id": AGENT, "status": "LOST", "lostAt": lost.lost_at.isoformat()}], info

        ended = live_stack.wait_for(
            lambda: (rows := list(Session.objects.filter(pk__in=[s.pk for s in sessions], status="ERROR")))
            and len(rows) == 2 and rows, timeout=BOUND, what="the sessions to end after the grace")
        for session in ended:
            assert session.status_info == "agent-lost"
            # ended by the reconciler once the grace had passed, not before (the server's own clock)
            assert session.status_changed >= lost.lost_at + timedelta(seconds=GRACE)
        assert set(Kernel.objects.filter(pk__in=kernel_ids).values_list("status", flat=True)) == {"ERROR"}
        # the reconciler recomputes occupancy right after it commits the sessions' end
        live_stack.wait_for(lambda: Agent.objects.get(pk=AGENT).occupied_slots == {}, timeout=BOUND,
                            what="the lost agent's slots to be released")

        for session in sessions:
            response = api(live_stack, owner.main_keypair, "DELETE", f"/session/{session.pk}?forced=true")
            assert response.status_code == 200, response.text
        for session in Session.objects.filter(pk__in=[s.pk for s in sessions]):
            assert session.status == "TERMINATED", (session.status, session.status_info)
            assert [h["status"] for h in session.status_history][-2:] == ["ERROR", "TERMINATED"]
        assert set(Kernel.objects.filter(pk__in=kernel_ids).values_list("status", flat=True)) == {"TERMINATED"}
        listed = api(live_stack, owner.main_keypair, "GET", f"/session/{sessions[1].pk}").json()
        assert listed["status"] == "TERMINATED" and listed["terminationTime"], json.dumps(listed)[:500]
    finally:
        live_stack.kill_local_kernels()  # the killed agent left them running
