"""Reconcilers: stuck SCHEDULED/PREPARING/PULLING/TERMINATING sessions, kernels on
LOST agents, and occupancy recomputed from live kernels."""
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Agent
from sessions.models import Kernel, Session
from sessions.scheduler import reconcile_stuck, recompute_agent_occupancy

pytestmark = pytest.mark.django_db


def reload(session):
    return Session.objects.get(pk=session.pk)


def kernel_states(session):
    return list(Kernel.objects.filter(session=session).order_by("cluster_idx", "cluster_role")
                .values_list("status", "status_info"))


@pytest.fixture
def group(make_group):
    return make_group()


def lose(agent, seconds_ago):
    now = timezone.now()
    Agent.objects.filter(pk=agent.pk).update(status="LOST", lost_at=now - timedelta(seconds=seconds_ago),
                                             status_changed=now - timedelta(seconds=seconds_ago))


def test_a_session_scheduled_too_long_on_a_live_agent_fails_to_start(owner, group, make_agent, make_session):
    agent = make_agent(group, "a1")
    stuck = make_session(owner, group, status="SCHEDULED", agent=agent, age=301)
    recent = make_session(owner, group, status="SCHEDULED", agent=agent, age=10)
    result = reconcile_stuck(scheduled_timeout=300)
    assert result.failed_to_start == [stuck.pk]
    stuck = reload(stuck)
    assert (stuck.status, stuck.status_info) == ("CANCELLED", "failed-to-start")
    assert stuck.status_data["error"]["reason"] == "SCHEDULED for more than 300 s"
    assert stuck.terminated_at is not None
    assert stuck.status_history[-1]["status"] == "CANCELLED"
    assert kernel_states(stuck) == [("CANCELLED", "failed-to-start")]
    assert reload(recent).status == "SCHEDULED"
    assert Agent.objects.get(pk="a1").occupied_slots["cpu"] == "1"  # only the recent one holds it now


def test_a_preparing_session_has_its_own_timeout(owner, group, make_agent, make_session):
    agent = make_agent(group, "a1")
    preparing = make_session(owner, group, status="PREPARING", agent=agent, age=600)
    pulling = make_session(owner, group, status="PULLING", agent=agent, age=901)
    result = reconcile_stuck(scheduled_timeout=300, preparing_timeout=900)
    assert result.failed_to_start == [pulling.pk]
    assert reload(preparing).status == "PREPARING"


def test_a_session_on_a_lost_agent_that_never_started_is_rescheduled_once(owner, group, make_agent, make_session,
                                                                          pass_):
    gone = make_agent(group, "gone")
    make_agent(group, "alive")
    session = make_session(owner, group, status="PREPARING", agent=gone, age=5)
    lose(gone, 400)
    result = reconcile_stuck(lost_grace=300)
    assert result.rescheduled == [session.pk]
    session = reload(session)
    assert (session.status, session.status_info, session.agent_ids) == ("PENDING", "rescheduled", [])
    assert session.status_data["reschedule"]["count"] == 1
    assert "gone" in session.status_data["scheduler"]["msg"]
    assert session.status_history[-1]["status"] == "PENDING"
    assert list(Kernel.objects.filter(session=session).values_list("status", "agent_id", "agent_addr")) == [
        ("PENDING", None, "")]
    # the next pass places it on the live agent
    assert pass_(group).scheduled == [session.pk]
    assert list(Kernel.objects.filter(session=session).values_list("agent_id", flat=True)) == ["alive"]
    # lost again: no second retry
    Agent.objects.filter(pk="alive").update(status="LOST", lost_at=timezone.now() - timedelta(seconds=400))
    assert reconcile_stuck(lost_grace=300).failed_to_start == [session.pk]
    session = reload(session)
    assert (session.status, session.status_info) == ("CANCELLED", "failed-to-start")
    assert "alive" in session.status_data["error"]["reason"]


def test_a_lost_agent_within_its_grace_period_is_left_alone(owner, group, make_agent, make_session):
    gone = make_agent(group, "gone")
    running = make_session(owner, group, status="RUNNING", agent=gone)
    preparing = make_session(owner, group, status="PREPARING", agent=gone)
    lose(gone, 30)
    result = reconcile_stuck(lost_grace=300)
    assert result.rescheduled == result.agent_lost == []
    assert [reload(s).status for s in (running, preparing)] == ["RUNNING", "PREPARING"]


def test_running_kernels_on_a_lost_agent_become_errors_and_their_siblings_stop(owner, group, make_agent,
                                                                             make_session):
    gone = make_agent(group, "gone")
    alive = make_agent(group, "alive")
    session = make_session(owner, group, status="RUNNING", agent=gone, kernels=2, multi_node=True)
    sub = Kernel.objects.filter(session=session, cluster_role="sub").get()
    sub.agent = alive
    sub.save()
    lose(gone, 400)
    result = reconcile_stuck(lost_grace=300)
    assert result.agent_lost == [session.pk]
    session = reload(session)
    assert (session.status, session.status_info) == ("ERROR", "agent-lost")
    assert "gone" in session.status_data["error"]["reason"]
    assert dict(Kernel.objects.filter(session=session).values_list("agent_id", "status")) == {
        "gone": "ERROR", "alive": "TERMINATING"}
    # the ERROR kernel no longer holds capacity; the TERMINATING one does until its agent confirms
    assert Agent.objects.get(pk="gone").occupied_slots == {}
    assert Agent.objects.get(pk="alive").occupied_slots["cpu"] == "1"


def test_terminating_too_long_is_forced_to_terminated(owner, group, make_agent, make_session):
    agent = make_agent(group, "a1")
    stuck = make_session(owner, group, status="TERMINATING", agent=agent, age=601, session_type="batch")
    recent = make_session(owner, group, status="TERMINATING", agent=agent, age=10)
    result = reconcile_stuck(terminating_timeout=600)
    assert result.forced == [stuck.pk]
    stuck = reload(stuck)
    assert (stuck.status, stuck.status_info, stuck.result) == ("TERMINATED", "hang-timeout", "failure")
    assert kernel_states(stuck) == [("TERMINATED", "hang-timeout")]
    assert reload(recent).status == "TERMINATING"
    assert Agent.objects.get(pk="a1").occupied_slots["cpu"] == "1"


def test_zero_timeouts_disable_those_checks(owner, group, make_agent, make_session):
    agent = make_agent(group, "a1")
    make_session(owner, group, status="SCHEDULED", agent=agent, age=10**6)
    make_session(owner, group, status="TERMINATING", agent=agent, age=10**6)
    result = reconcile_stuck(scheduled_timeout=0, preparing_timeout=0, terminating_timeout=0)
    assert result.failed_to_start == result.forced == []


def test_occupancy_is_recomputed_for_every_agent(owner, group, make_agent, make_session):
    a1 = make_agent(group, "a1")
    make_agent(group, "a2")
    make_session(owner, group, status="RUNNING", agent=a1, cpu=3)
    make_session(owner, group, status="TERMINATED", agent=a1, cpu=5)
    Agent.objects.update(occupied_slots={"cpu": "99"})
    assert reconcile_stuck().agents_recomputed == 2
    assert Agent.objects.get(pk="a1").occupied_slots == {"cpu": "3", "mem": str(1024**3)}
    assert Agent.objects.get(pk="a2").occupied_slots == {}
    Agent.objects.update(occupied_slots={"cpu": "99"})
    assert recompute_agent_occupancy(["a2"]) == 1
    assert Agent.objects.get(pk="a2").occupied_slots == {}
    assert Agent.objects.get(pk="a1").occupied_slots == {"cpu": "99"}
    assert recompute_agent_occupancy(["a2"]) == 0  # already right: nothing written


def test_the_reconciler_result_serialises_and_counts_statements(owner, group, make_agent, make_session):
    import json

    agent = make_agent(group, "a1")
    session = make_session(owner, group, status="SCHEDULED", agent=agent, age=1000)
    result = reconcile_stuck()
    assert json.loads(json.dumps(result.as_dict()))["failed_to_start"] == [str(session.pk)]
    assert result.statements > 0
