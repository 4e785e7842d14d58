"""A dead agent's sessions: shown with the agent's state while it may come back,
ended once ``AGENT_LOST_GRACE`` has passed (not before), and removable at once by
a destroy (forced, or of a session in ERROR), as in Backend.AI.  The clock is
driven through the services' ``now`` parameters."""
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from agents import services
from agents.models import Agent, AgentStatus
from backendai import config
from sessions import agent_sync, tasks
from sessions import services as session_services
from sessions.models import Kernel, Session
from sessions.scheduler import reconcile_stuck

pytestmark = pytest.mark.django_db

AGENT = "node-1"
SLOTS = {"cpu": "1", "mem": "268435456"}


@pytest.fixture
def token(defaults):
    group = services.ensure_default_scaling_group()
    return services.issue_token("nodes", scaling_group=group)[0]


def sync(token, *reports, agent_id=AGENT):
    return agent_sync.sync(token, {
        "agent_id": agent_id, "scaling_group": "default", "address": "127.0.0.1", "architecture": "x86_64",
        "backend": "docker", "capacity": {"cpu": "4", "mem": "8589934592"},
        "slot_types": {"cpu": "count", "mem": "bytes"}, "images": [], "kernels": list(reports)}, "127.0.0.1")


def running_report(kernel):
    return {"kernel_id": str(kernel.pk), "status": "RUNNING", "container_id": "c0ffee"}


@pytest.fixture
def place(token):
    sync(token)

    def make(user):
        session = session_services.create_session_on_agent(user=user, image="bai-test/http:1.0",
                                                           agent=Agent.objects.get(pk=AGENT), slots=SLOTS)
        kernel = session.kernels.get()
        sync(token, running_report(kernel))
        return Session.objects.get(pk=session.pk), Kernel.objects.get(pk=kernel.pk)

    return make


@pytest.fixture
def running(place, owner):
    return place(owner)


def lose_agent(after_seconds=31, timeout=30):
    """Mark the agent LOST as the periodic task would ``after_seconds`` past its last sync;
    returns when it was marked."""
    when = Agent.objects.get(pk=AGENT).last_heartbeat + timedelta(seconds=after_seconds)
    assert services.mark_lost_agents(timeout, now=when) == 1
    assert Agent.objects.get(pk=AGENT).lost_at == when
    return when


def occupied():
    return Agent.objects.get(pk=AGENT).occupied_slots


def test_the_grace_defaults_to_three_heartbeat_timeouts_and_is_validated(tmp_path):
    assert config.load({"BACKEND_DATA_DIR": str(tmp_path)}).agent_lost_grace == 90
    assert config.load({"BACKEND_DATA_DIR": str(tmp_path), "AGENT_HEARTBEAT_TIMEOUT": "10"}).agent_lost_grace == 30
    assert config.load({"BACKEND_DATA_DIR": str(tmp_path), "AGENT_LOST_GRACE": "0"}).agent_lost_grace == 0
    for bad in ("-1", "soon"):
        with pytest.raises(config.ConfigError) as raised:
            config.load({"BACKEND_DATA_DIR": str(tmp_path), "AGENT_LOST_GRACE": bad})
        assert "AGENT_LOST_GRACE" in str(raised.value)


def test_a_silent_agent_is_not_marked_lost_before_its_heartbeat_timeout(token, running):
    last = Agent.objects.get(pk=AGENT).last_heartbeat
    assert services.mark_lost_agents(30, now=last + timedelta(seconds=29)) == 0
    assert Agent.objects.get(pk=AGENT).status == AgentStatus.ALIVE


def test_a_lost_agents_sessions_end_after_the_grace_and_not_before(token, running):
    session, kernel = running
    lost_at = lose_agent()
    assert occupied() == SLOTS  # still held while the agent may come back
    assert reconcile_stuck(lost_grace=120, now=lost_at + timedelta(seconds=119)).agent_lost == []
    assert Session.objects.get(pk=session.pk).status == "RUNNING"
    result = reconcile_stuck(lost_grace=120, now=lost_at + timedelta(seconds=120))
    assert result.agent_lost == [session.pk]
    session.refresh_from_db()
    assert (session.status, session.status_info) == ("ERROR", "agent-lost")
    assert AGENT in session.status_data["error"]["reason"]
    assert Kernel.objects.get(pk=kernel.pk).status == "ERROR"
    assert occupied() == {}  # its slots are released


def test_the_periodic_reconciler_uses_the_configured_grace(token, running, settings):
    session, _ = running
    settings.AGENT_LOST_GRACE = 45
    now = timezone.now()
    Agent.objects.filter(pk=AGENT).update(status=AgentStatus.LOST, lost_at=now - timedelta(seconds=40))
    tasks.reconcile()
    assert Session.objects.get(pk=session.pk).status == "RUNNING"
    Agent.objects.filter(pk=AGENT).update(lost_at=now - timedelta(seconds=50))
    tasks.reconcile()
    assert Session.objects.get(pk=session.pk).status == "ERROR"


def test_the_session_api_shows_the_state_of_its_agents(token, running, owner, signed):
    session, _ = running
    api = signed(owner)
    assert api.get(f"/session/{session.pk}").json()["agents"] == [{"id": AGENT, "status": "ALIVE", "lostAt": None}]
    lost_at = lose_agent()
    info = api.get(f"/session/{session.pk}").json()
    assert info["status"] == "RUNNING"
    assert info["agents"] == [{"id": AGENT, "status": "LOST", "lostAt": lost_at.isoformat()}]


def test_the_session_page_says_the_agent_is_lost(token, running, owner, client, settings):
    session, _ = running
    client.force_login(owner)
    page = client.get(f"/ui/sessions/{session.pk}/").content.decode()
    assert 'id="agent-lost"' not in page
    settings.AGENT_LOST_GRACE = 3600
    Agent.objects.filter(pk=AGENT).update(status=AgentStatus.LOST, lost_at=timezone.now() - timedelta(seconds=60))
    for url in (f"/ui/sessions/{session.pk}/", f"/ui/sessions/{session.pk}/status/"):
        page = client.get(url).content.decode()
        assert 'id="agent-lost"' in page and "Agent lost" in page and AGENT in page
        assert 'data-agent-state="LOST"' in page
        assert re.search(r"the session is ended in \d+ min", page)


@pytest.mark.parametrize("forced", [False, True])
def test_a_destroy_of_an_error_session_terminates_it_at_once(token, running, owner, signed, forced,
                                                             django_capture_on_commit_callbacks):
    session, kernel = running
    lost_at = lose_agent()
    reconcile_stuck(lost_grace=10, now=lost_at + timedelta(seconds=10))
    assert Session.objects.get(pk=session.pk).status == "ERROR"
    with django_capture_on_commit_callbacks(execute=True):
        response = signed(owner).delete(f"/session/{session.pk}" + ("?forced=true" if forced else ""))
    assert response.status_code == 200, response.content
    session.refresh_from_db()
    assert session.status == "TERMINATED" and session.terminated_at is not None
    assert Kernel.objects.get(pk=kernel.pk).status == "TERMINATED"
    assert [h["status"] for h in session.status_history][-2:] == ["ERROR", "TERMINATED"]
    assert occupied() == {}
    # the lifecycle events a client sees end with the termination
    from sessions import events

    assert [e.name for e in events.session_events(session)][-2:] == ["session_failure", "session_terminated"]


def test_a_forced_destroy_of_a_lost_agents_session_terminates_it_at_once(token, running, owner, signed,
                                                                          django_capture_on_commit_callbacks):
    session, kernel = running
    lose_agent()
    with django_capture_on_commit_callbacks(execute=True):
        response = signed(owner).delete(f"/session/{session.pk}?forced=true")
    assert response.status_code == 200
    session.refresh_from_db()
    assert (session.status, session.status_info) == ("TERMINATED", "force-terminated")
    assert Kernel.objects.get(pk=kernel.pk).status == "TERMINATED"
    assert occupied() == {}
    # the agent comes back with the container still running: it is told to stop it
    answer = sync(token, running_report(kernel))
    assert answer["stop"] == [{"kernel_id": str(kernel.pk), "reason": "force-terminated"}]
    assert Kernel.objects.get(pk=kernel.pk).status == "TERMINATED"


def test_a_plain_destroy_of_a_lost_agents_session_waits_for_the_grace(token, running, owner, signed):
    session, kernel = running
    lost_at = lose_agent()
    assert signed(owner).delete(f"/session/{session.pk}").status_code == 200
    assert Session.objects.get(pk=session.pk).status == "TERMINATING"
    assert reconcile_stuck(lost_grace=60, terminating_timeout=0, now=lost_at + timedelta(seconds=59)).agent_lost == []
    result = reconcile_stuck(lost_grace=60, terminating_timeout=0, now=lost_at + timedelta(seconds=60))
    assert result.agent_lost == [session.pk]
    session.refresh_from_db()
    assert session.status == "TERMINATED"
    assert Kernel.objects.get(pk=kernel.pk).status in ("TERMINATED", "ERROR")
    assert occupied() == {}


@pytest.mark.parametrize("role,allowed", [
    ("owner", True), ("superadmin", True), ("member", False), ("outsider", False), ("foreign_admin", False),
])
def test_who_may_destroy_a_lost_agents_session_is_unchanged(token, running, signed, role, allowed, request):
    session, kernel = running
    lose_agent()
    actor = request.getfixturevalue(role)
    response = signed(actor).delete(f"/session/{session.pk}?forced=true")
    session.refresh_from_db()
    if allowed:
        assert response.status_code == 200
        assert session.status == "TERMINATED"
    else:
        assert response.status_code == 404
        assert session.status == "RUNNING" and Kernel.objects.get(pk=kernel.pk).status == "RUNNING"
