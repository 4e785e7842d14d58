"""Statement counts of the session-start path that runs once per started session (issue 18 item 5):
the scheduler's hint wakes the agent's held sync, which reads the desired state again
(``sessions.agent_longpoll._again``), and the agent reports PREPARING and RUNNING through
``/agent-api/v1/events`` (pinned in ``tests/backendai/test_query_counts.py``).  The re-read must
not grow with the kernels the agent holds: with ``bench/hints/run.py --preload`` an agent has 100 000
terminated kernels in the table and a handful of live ones."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents import services as agent_services
from helpers import seed_http_image_and_agent
from sessions import agent_longpoll
from sessions import services as session_services
from sessions.lifecycle import KernelStatus
from sessions.models import Kernel

pytestmark = pytest.mark.django_db

# The agent's row, then its live kernels joined with their sessions and keypairs (the registries are
# one more statement only when a kernel names a registry; these do not).
HELD_SYNC_AFTER_A_HINT = 2
MANY = 10
SLOTS = {"cpu": "0.1", "mem": "33554432"}


@pytest.fixture
def agents(defaults):
    group = agent_services.ensure_default_scaling_group()
    _, one = seed_http_image_and_agent(group)
    many = type(one).objects.create(id="node-2", scaling_group=one.scaling_group, available_slots=one.available_slots,
                                    last_heartbeat=timezone.now())
    return one, many


def place(user, agent, count: int) -> None:
    for _ in range(count):
        session_services.create_session_on_agent(user=user, image="bai-test/http:1.0", agent=agent, slots=SLOTS)


def counted_again(agent) -> tuple[CaptureQueriesContext, dict]:
    with CaptureQueriesContext(connection) as captured:
        answer = agent_longpoll._again(agent.pk, {"stop": [{"kernel_id": "gone", "reason": "user-requested"}]})
    return captured, answer


def test_it_reads_the_desired_state_after_a_hint_in_the_same_statements_for_one_or_many_kernels(owner, agents):
    one, many = agents
    place(owner, one, 1)
    place(owner, many, MANY)
    counts = []
    for agent, expected in ((one, 1), (many, MANY)):
        captured, answer = counted_again(agent)
        assert len(answer["desired"]) == expected
        assert {"kernel_id": "gone", "reason": "user-requested"} in answer["stop"]  # the sync's own stop orders kept
        counts.append(captured)
    listing = "\n".join(q["sql"] for q in counts[1].captured_queries)
    assert len(counts[0]) == len(counts[1]) == HELD_SYNC_AFTER_A_HINT, listing


def test_it_does_not_read_the_terminated_kernels_of_an_agent_after_a_hint(owner, agents):
    one, _ = agents
    place(owner, one, MANY)
    Kernel.objects.filter(agent=one).update(status=KernelStatus.TERMINATED)
    place(owner, one, 1)
    captured, answer = counted_again(one)
    assert len(answer["desired"]) == 1
    assert len(captured) == HELD_SYNC_AFTER_A_HINT
