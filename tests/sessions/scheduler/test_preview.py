"""``preview_request``: what a pass would decide now for one more request, read only,
from the pass's own snapshot and ``decide``; it agrees with the pass that follows."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import Agent
from backendai.services import known_slot_types
from sessions.models import Kernel, Session
from sessions.scheduler import preview_request

from .conftest import slots

pytestmark = pytest.mark.django_db


def ask(user, group, cpu=1, mem="1g", **kw):
    keypair = user.main_keypair
    return preview_request(group, keypair=keypair, owner=user, project=user.projects.order_by("name").first(),
                           architecture="x86_64", per_kernel=slots(cpu, mem), **kw)


def test_a_preview_places_the_request_where_the_pass_then_places_it_and_writes_nothing(
        owner, make_group, make_agent, make_session, pass_):
    group = make_group()
    make_agent(group, "a1", cpu=2)
    make_agent(group, "a2", cpu=8)
    seen = ask(owner, group, cpu=4)
    assert seen.scheduled and seen.agents == ["a2"] and seen.queued_ahead == 0
    assert not Session.objects.exists() and not Kernel.objects.exists()
    assert all(not a.occupied_slots for a in Agent.objects.all())
    session = make_session(owner, group, cpu=4)
    assert pass_(group).scheduled == [session.pk]
    assert Session.objects.get(pk=session.pk).agent_ids == ["a2"]


def test_a_preview_waits_behind_the_queue_with_the_passs_own_reason(owner, member, make_group, make_agent,
                                                                     make_session, pass_):
    group = make_group()
    make_agent(group, "a1", cpu=8)
    make_session(member, group, cpu=7, age=60)
    seen = ask(owner, group, cpu=2, priority=10)
    assert not seen.scheduled and seen.considered and seen.queued_ahead == 1
    assert not seen.failed_predicates(seen.queued) and "cpu 2" in seen.message(seen.queued)
    assert Session.objects.get().status == "PENDING"  # the preview ran no pass
    session = make_session(owner, group, cpu=2)
    result = pass_(group)
    assert session.pk in result.failed and len(result.scheduled) == 1
    assert Session.objects.get(pk=session.pk).status_data["scheduler"]["msg"] == seen.message(seen.queued)


def test_a_preview_alone_shows_the_owners_limit_against_current_usage(owner, make_group, make_agent, make_session):
    group = make_group()
    make_agent(group, "a1", cpu=8)
    policy = owner.main_keypair.resource_policy
    policy.max_concurrent_sessions = 1
    policy.save()
    agent = Agent.objects.get(pk="a1")
    make_session(owner, group, cpu=1, status="RUNNING", agent=agent)
    seen = ask(owner, group, cpu=1)
    assert [p["name"] for p in seen.failed_predicates(seen.alone)] == ["concurrency"]
    assert not seen.scheduled


def test_a_request_below_the_top_priority_band_is_not_considered(owner, member, make_group, make_agent,
                                                                  make_session):
    group = make_group()
    make_agent(group, "a1", cpu=8)
    make_session(member, group, cpu=1, priority=20)
    seen = ask(owner, group, cpu=1, priority=10)
    assert not seen.considered and not seen.scheduled and seen.higher_priority == 1


@pytest.mark.parametrize("queued", [0, 1, 6])
def test_a_preview_costs_a_fixed_number_of_statements(owner, member, make_group, make_agent, make_session, queued):
    group = make_group()
    make_agent(group, "a1", cpu=8)
    for n in range(queued):
        make_session(member, group, cpu=1, age=n + 1)
    user = type(owner).objects.get(pk=owner.pk)
    keypair, project = user.main_keypair, user.projects.select_related("domain").order_by("name").first()
    keypair.resource_policy  # noqa: B018 - loaded by the caller, as the launcher has it
    slot_types = known_slot_types()
    with CaptureQueriesContext(connection) as ctx:
        seen = preview_request(group, keypair=keypair, owner=user, project=project, architecture="x86_64",
                               per_kernel=slots(1), slot_types=slot_types)
    assert seen.queued_ahead == queued
    # the pass's snapshot (6 statements with a queue; the pending read, agents and occupancy without),
    # the owner's usage, nothing per queued session
    assert len(ctx.captured_queries) == (7 if queued else 4), [q["sql"][:80] for q in ctx.captured_queries]
