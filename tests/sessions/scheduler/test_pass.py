"""The pass as a whole: placement (single- and multi-node), pending timeout,
what is written, guards against concurrent changes, pokes, metrics."""
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Agent
from sessions.models import Kernel, Session
from sessions.scheduler import run_all_passes

pytestmark = pytest.mark.django_db


def reload(session):
    return Session.objects.get(pk=session.pk)


def test_a_scheduled_session_and_its_kernels_record_the_placement(owner, make_group, make_agent, make_session,
                                                                   pass_):
    group = make_group()
    make_agent(group, "a1", cpu=8, addr="10.1.1.1")
    session = make_session(owner, group, cpu=2, mem="2g", kernels=2)
    now = timezone.now()
    result = pass_(group, now=now)
    assert result.scheduled == [session.pk] and result.agents == ["a1"] and not result.skipped
    session = reload(session)
    assert session.status == "SCHEDULED" and session.status_info == "scheduled"
    assert session.status_changed == now
    assert session.status_history[-1] == {"status": "SCHEDULED", "timestamp": now.isoformat()}
    assert session.agent_ids == ["a1"]
    assert session.occupying_slots == {"cpu": "4", "mem": str(4 * 1024**3)}
    for kernel in session.kernels.all():
        assert (kernel.status, kernel.agent_id, kernel.agent_addr) == ("SCHEDULED", "a1", "10.1.1.1")
        assert kernel.occupied_slots == kernel.requested_slots
        assert kernel.status_history[-1]["status"] == "SCHEDULED"
    assert Agent.objects.get(pk="a1").occupied_slots == {"cpu": "4", "mem": str(4 * 1024**3)}


def test_a_single_node_cluster_needs_one_agent_for_all_its_kernels(owner, make_group, make_agent, make_session,
                                                                   pass_):
    group = make_group()
    make_agent(group, "a1", cpu=2)
    make_agent(group, "a2", cpu=2)
    session = make_session(owner, group, cpu=2, kernels=2)
    pass_(group)
    session = reload(session)
    assert session.status == "PENDING"
    assert "cpu 4" in session.status_data["scheduler"]["msg"]


def test_a_multi_node_session_spreads_its_kernels(owner, make_group, make_agent, make_session, pass_):
    group = make_group()
    make_agent(group, "a1", cpu=2)
    make_agent(group, "a2", cpu=2)
    session = make_session(owner, group, cpu=2, kernels=2, multi_node=True)
    assert pass_(group).scheduled == [session.pk]
    assert sorted(Kernel.objects.filter(session=session).values_list("agent_id", flat=True)) == ["a1", "a2"]
    assert sorted(reload(session).agent_ids) == ["a1", "a2"]


def test_a_multi_node_session_is_placed_all_or_nothing(owner, make_group, make_agent, make_session, pass_):
    group = make_group()
    make_agent(group, "a1", cpu=2)
    make_agent(group, "a2", cpu=2)
    big = make_session(owner, group, cpu=2, kernels=3, multi_node=True, age=20)
    small = make_session(owner, group, cpu=2, age=10)
    result = pass_(group)
    # two kernels of ``big`` could have been placed: they were released, and ``small`` used the room
    assert result.scheduled == [small.pk]
    big = reload(big)
    assert big.status == "PENDING" and big.status_info == "no-available-instances"
    assert "2 of 3 kernels could be placed" in big.status_data["scheduler"]["msg"]
    assert set(Kernel.objects.filter(session=big).values_list("status", "agent_id")) == {("PENDING", None)}
    assert sum(int(Agent.objects.get(pk=a).occupied_slots.get("cpu", "0")) for a in ("a1", "a2")) == 2


def test_a_multi_node_session_with_designated_agents(superadmin, make_group, make_agent, make_session, pass_):
    group = make_group()
    for i in range(3):
        make_agent(group, f"a{i}", cpu=4)
    session = make_session(superadmin, group, cpu=1, kernels=2, multi_node=True, agent_ids=["a2", "a0"])
    pass_(group)
    kernels = Kernel.objects.filter(session=session).order_by("cluster_role", "cluster_idx")
    assert [(k.cluster_hostname, k.agent_id) for k in kernels] == [("main1", "a2"), ("sub1", "a0")]


def test_pending_sessions_past_the_pending_timeout_are_cancelled(owner, make_group, make_agent, make_session,
                                                                 pass_):
    group = make_group(pending_timeout=60)
    make_agent(group, "a1", cpu=8)
    old = make_session(owner, group, age=61)
    fresh = make_session(owner, group, age=10)
    result = pass_(group)
    assert result.cancelled == {old.pk: "pending-timeout"}
    assert result.scheduled == [fresh.pk]
    old = reload(old)
    assert old.status == "CANCELLED" and old.status_info == "pending-timeout"
    assert old.terminated_at is not None
    assert old.status_history[-1]["status"] == "CANCELLED"
    assert "pending_timeout" in old.status_data["scheduler"]["msg"]
    assert list(old.kernels.values_list("status", "status_info")) == [("CANCELLED", "pending-timeout")]


def test_a_zero_pending_timeout_never_cancels(owner, make_group, make_agent, make_session, pass_):
    group = make_group(pending_timeout=0)
    old = make_session(owner, group, age=10**6)
    assert pass_(group).cancelled == {}
    assert reload(old).status == "PENDING"


def test_the_pending_timeout_applies_even_with_no_agent(owner, make_group, make_session, pass_):
    group = make_group(pending_timeout=5)
    old = make_session(owner, group, age=6)
    assert pass_(group).cancelled == {old.pk: "pending-timeout"}


def test_a_session_cancelled_meanwhile_is_not_scheduled(owner, make_group, make_agent, make_session, pass_,
                                                        monkeypatch):
    from sessions import services
    from sessions.scheduler import writer

    group = make_group()
    make_agent(group, "a1", cpu=8)
    session = make_session(owner, group)
    other = make_session(owner, group)
    real_write = writer.write

    def owner_cancels_first(sessions, kernels, now):
        services.request_termination(Session.objects.get(pk=session.pk))
        return real_write(sessions, kernels, now)

    monkeypatch.setattr(writer, "write", owner_cancels_first)
    result = pass_(group)
    assert result.scheduled == [other.pk]
    assert result.lost == [session.pk]
    session = reload(session)
    assert session.status == "CANCELLED" and session.status_info == "user-requested"
    assert list(session.kernels.values_list("status", "agent_id")) == [("CANCELLED", None)]
    assert Agent.objects.get(pk="a1").occupied_slots["cpu"] == "1"


def test_agents_that_received_kernels_are_poked_after_commit(owner, make_group, make_agent, make_session, pass_,
                                                             django_capture_on_commit_callbacks):
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from agents.services import agent_group

    layer = get_channel_layer()
    channels = {}
    for agent_id in ("a1", "a2", "idle"):
        channels[agent_id] = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(agent_group(agent_id), channels[agent_id])
    group = make_group()
    make_agent(group, "a1", cpu=1)
    make_agent(group, "a2", cpu=1)
    make_agent(group, "idle", cpu=0)
    make_session(owner, group, age=2)
    make_session(owner, group, age=1)
    with django_capture_on_commit_callbacks() as callbacks:
        pass_(group)
    assert len(callbacks) == 1  # one batch, after commit
    callbacks[0]()

    async def receive(channel):
        import asyncio

        try:
            return await asyncio.wait_for(layer.receive(channel), 0.5)
        except asyncio.TimeoutError:
            return None

    assert async_to_sync(receive)(channels["a1"]) == {"type": "agent.poke"}
    assert async_to_sync(receive)(channels["a2"]) == {"type": "agent.poke"}
    assert async_to_sync(receive)(channels["idle"]) is None
    for agent_id, channel in channels.items():
        async_to_sync(layer.group_discard)(agent_group(agent_id), channel)


def test_a_session_with_a_broken_kernel_waits_with_a_scheduler_error(owner, make_group, make_agent, make_session,
                                                                     pass_):
    group = make_group()
    make_agent(group, "a1", cpu=8)
    broken = make_session(owner, group, age=2)
    Kernel.objects.filter(session=broken).update(requested_slots={"cpu": "lots"})
    fine = make_session(owner, group, age=1)
    result = pass_(group)
    assert result.scheduled == [fine.pk]
    broken = reload(broken)
    assert broken.status_info == "scheduler-error"
    assert "malformed" in broken.status_data["scheduler"]["msg"]


def test_an_empty_queue_costs_a_handful_of_statements(make_group, pass_):
    group = make_group()
    result = pass_(group)
    assert result.considered == 0 and result.scheduled == []
    assert result.statements <= 6


def test_an_unknown_scaling_group_is_skipped(pass_):
    assert pass_("nope").skipped == "no-such-group"


def test_a_second_pass_for_the_same_group_in_this_process_is_skipped(make_group, pass_):
    from sessions.scheduler import locks

    group = make_group()
    with locks.process_lock("schedule", group.pk) as got:
        assert got
        if locks.connection.vendor != "postgresql":
            assert pass_(group).skipped == "locked"


def test_run_all_passes_visits_every_group_with_pending_sessions(owner, make_group, make_agent, make_session):
    g1, g2, _idle = make_group("g1"), make_group("g2"), make_group("g3")
    make_agent(g1, "a1")
    s1 = make_session(owner, g1)
    s2 = make_session(owner, g2)
    results = run_all_passes()
    assert [r.scaling_group for r in results] == ["g1", "g2"]
    assert results[0].scheduled == [s1.pk]
    assert results[1].failed == {s2.pk: "no-available-instances"}


def test_passes_are_counted_in_prometheus_metrics(owner, make_group, make_agent, make_session, pass_):
    from prometheus_client import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0

    group = make_group()
    make_agent(group, "a1", cpu=1)
    make_session(owner, group, age=2)
    make_session(owner, group, age=1)
    before = (value("backendai_scheduler_operation_count_total", operation="schedule", result="success"),
              value("backendai_scheduler_decision_count_total", outcome="scheduled"),
              value("backendai_scheduler_decision_count_total", outcome="no_agent"),
              value("backendai_scheduler_operation_duration_sec_count", operation="schedule"))
    pass_(group)
    after = (value("backendai_scheduler_operation_count_total", operation="schedule", result="success"),
             value("backendai_scheduler_decision_count_total", outcome="scheduled"),
             value("backendai_scheduler_decision_count_total", outcome="no_agent"),
             value("backendai_scheduler_operation_duration_sec_count", operation="schedule"))
    assert [a - b for a, b in zip(after, before)] == [1, 1, 1, 1]


def test_the_pass_result_serialises(owner, make_group, make_agent, make_session, pass_):
    import json

    group = make_group()
    make_agent(group, "a1")
    session = make_session(owner, group)
    data = pass_(group).as_dict()
    assert json.loads(json.dumps(data))["scheduled"] == [str(session.pk)]


def test_sessions_are_decided_with_the_pass_time(owner, make_group, make_agent, make_session, pass_):
    group = make_group()
    make_agent(group, "a1", cpu=0.5)
    session = make_session(owner, group)
    when = timezone.now() + timedelta(minutes=3)
    pass_(group, now=when)
    assert reload(session).status_data["scheduler"]["last_try"] == when.isoformat()
