"""An agent's status changes only through its door: ``Agent.move_to`` for a row in
hand, ``AGENT_MOVES.update`` (and ``mark_silent_lost``, built on the same map) for
set-based writes.  Every writer refuses a move the map does not allow."""
from datetime import timedelta

import pytest
from django.utils import timezone

from agents import services
from agents.models import AGENT_MOVES, Agent, AgentStatus
from backendai.daemons import IllegalStatusMove
from sessions import agent_sync

pytestmark = pytest.mark.django_db

A = AgentStatus
ILLEGAL = [(current, new) for current in A for new in A if current != new and not AGENT_MOVES.allows(current, new)]


@pytest.fixture
def group(defaults):
    return services.ensure_default_scaling_group()


def make_agent(group, agent_id, status, heartbeat_age=0.0):
    earlier = timezone.now() - timedelta(days=1)
    return Agent.objects.create(id=agent_id, scaling_group=group, status=status, status_changed=earlier,
                                lost_at=earlier if status == A.LOST else None,
                                last_heartbeat=timezone.now() - timedelta(seconds=heartbeat_age))


def sync(token, agent_id):
    agent_sync.sync(token, {"agent_id": agent_id, "scaling_group": "default", "address": "127.0.0.1",
                            "capacity": {"cpu": "4", "mem": "8589934592"},
                            "slot_types": {"cpu": "count", "mem": "bytes"}, "images": [], "kernels": []},
                    "127.0.0.1")


def unchanged(agent):
    row = Agent.objects.get(pk=agent.pk)
    return (row.status, row.status_changed, row.lost_at) == (agent.status, agent.status_changed, agent.lost_at)


def test_the_map_names_every_status_and_the_moves_the_code_makes():
    assert set(AGENT_MOVES.moves) == set(A.values)
    assert AGENT_MOVES.sources(A.LOST) == {A.ALIVE}
    assert AGENT_MOVES.sources(A.ALIVE) == {A.LOST, A.RESTARTING, A.TERMINATED}
    assert AGENT_MOVES.sources(A.TERMINATED) == {A.ALIVE, A.LOST, A.RESTARTING}
    assert AGENT_MOVES.sources(A.RESTARTING) == set()
    assert (A.TERMINATED, A.LOST) in ILLEGAL and (A.LOST, A.RESTARTING) in ILLEGAL


@pytest.mark.parametrize("current, new", ILLEGAL)
def test_the_door_refuses_every_move_the_map_does_not_allow(group, current, new):
    agent = make_agent(group, "node-1", current)
    with pytest.raises(IllegalStatusMove, match=f"agent cannot move from {current} to {new}"):
        agent.move_to(new)
    assert agent.status == current and unchanged(agent)


def test_the_door_stamps_a_lost_agent_and_clears_the_stamp_when_it_comes_back(group):
    agent = make_agent(group, "node-1", A.ALIVE)
    now = timezone.now()
    assert agent.move_to(A.LOST, now) is True
    assert (agent.status, agent.status_changed, agent.lost_at) == (A.LOST, now, now)
    assert agent.move_to(A.ALIVE, now) is True
    assert (agent.status, agent.lost_at) == (A.ALIVE, None)
    assert agent.move_to(A.ALIVE) is False and agent.status_changed == now


@pytest.mark.parametrize("status", [A.LOST, A.TERMINATED, A.RESTARTING])
def test_mark_lost_agents_refuses_to_lose_an_agent_that_is_not_alive(group, status):
    stale = make_agent(group, "node-1", status, heartbeat_age=3600)
    alive = make_agent(group, "node-2", A.ALIVE, heartbeat_age=3600)
    assert services.mark_lost_agents(timeout_seconds=30) == 1
    assert unchanged(stale)
    assert Agent.objects.get(pk=alive.pk).status == A.LOST


def test_mark_lost_agents_leaves_agents_that_synced_in_time(group):
    fresh = make_agent(group, "node-1", A.ALIVE, heartbeat_age=1)
    assert services.mark_lost_agents(timeout_seconds=30) == 0
    assert unchanged(fresh)


def test_a_shutdown_refuses_to_end_an_agent_that_already_ended(group):
    token = services.issue_token("nodes", scaling_group=group)[0]
    ended = make_agent(group, "node-1", A.TERMINATED)
    services.shutdown(token, "node-1")
    assert unchanged(ended)


@pytest.mark.parametrize("status", [A.ALIVE, A.LOST, A.RESTARTING])
def test_a_shutdown_ends_an_agent_the_map_lets_end(group, status):
    token = services.issue_token("nodes", scaling_group=group)[0]
    make_agent(group, "node-1", status)
    services.shutdown(token, "node-1")
    assert Agent.objects.get(pk="node-1").status == A.TERMINATED


@pytest.mark.parametrize("status", [A.LOST, A.TERMINATED, A.RESTARTING])
def test_a_sync_revives_every_status_the_map_lets_come_back(group, status):
    token = services.issue_token("nodes", scaling_group=group)[0]
    make_agent(group, "node-1", status, heartbeat_age=3600)
    sync(token, "node-1")
    agent = Agent.objects.get(pk="node-1")
    assert (agent.status, agent.lost_at) == (A.ALIVE, None)
    assert agent.status_changed > timezone.now() - timedelta(minutes=1)


def test_a_sync_of_an_alive_agent_is_no_move(group):
    token = services.issue_token("nodes", scaling_group=group)[0]
    alive = make_agent(group, "node-1", A.ALIVE, heartbeat_age=5)
    sync(token, "node-1")
    assert unchanged(alive)


def test_a_set_based_move_skips_the_rows_the_map_refuses(group):
    for index, status in enumerate(A):
        make_agent(group, f"node-{index}", status)
    before = {a.pk: a for a in Agent.objects.all()}
    assert AGENT_MOVES.update(Agent.objects.all(), A.RESTARTING) == 0
    assert all(unchanged(agent) for agent in before.values())
    assert AGENT_MOVES.update(Agent.objects.all(), A.LOST) == 1
    assert set(Agent.objects.filter(status=A.LOST).values_list("pk", flat=True)) == {
        pk for pk, agent in before.items() if agent.status in (A.ALIVE, A.LOST)}
