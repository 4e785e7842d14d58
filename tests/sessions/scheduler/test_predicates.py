"""Predicates: reserved time, dependencies, concurrency, pending limits and the
keypair/user/project/domain resource limits, with what the owner is told."""
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Domain, Keypair, KeypairResourcePolicy, Project
from sessions.models import Session, SessionDependency

pytestmark = pytest.mark.django_db


@pytest.fixture
def group(make_group, make_agent):
    group = make_group()
    make_agent(group, "a1", cpu=64, mem="256g", gpus=8)
    return group


def policy(user, **fields):
    name = fields.pop("name", f"p-{user.username}")
    pol = KeypairResourcePolicy.objects.create(name=name, **fields)
    Keypair.objects.filter(user=user).update(resource_policy=pol)
    return pol


def reload(session):
    return Session.objects.get(pk=session.pk)


def failed(session) -> dict:
    return {p["name"]: p["msg"] for p in reload(session).status_data["scheduler"]["failed_predicates"]}


def test_a_reserved_session_waits_until_its_start_time(owner, group, make_session, pass_):
    later = make_session(owner, group, starts_at=timezone.now() + timedelta(hours=1))
    due = make_session(owner, group, starts_at=timezone.now() - timedelta(seconds=1))
    result = pass_(group)
    assert result.scheduled == [due.pk]
    assert "Reserved to start at" in failed(later)["reserved_time"]
    assert reload(later).status_info == "predicate-checks-failed"


def test_the_reserved_time_compares_instants_not_wall_clocks(owner, group, make_session, pass_):
    from datetime import timezone as tz

    seoul = tz(timedelta(hours=9))
    # 09:30 in Seoul is 00:30 UTC: in the past relative to 01:00 UTC
    now = timezone.now().replace(hour=1, minute=0, second=0, microsecond=0)
    session = make_session(owner, group, starts_at=now.astimezone(seoul).replace(minute=30) - timedelta(hours=1))
    assert pass_(group, now=now).scheduled == [session.pk]


def test_a_dependent_session_waits_for_its_dependency_to_succeed(owner, group, make_session, pass_):
    first = make_session(owner, group, session_type="batch", status="RUNNING", agent=None, name="first")
    second = make_session(owner, group, session_type="batch", name="second")
    SessionDependency.objects.create(session=second, depends_on=first)
    pass_(group)
    assert "first" in failed(second)["dependencies"] and "RUNNING" in failed(second)["dependencies"]
    Session.objects.filter(pk=first.pk).update(status="TERMINATED", result="success")
    assert pass_(group).scheduled == [second.pk]


def test_a_dependency_that_failed_cancels_the_dependent_session(owner, group, make_session, pass_):
    first = make_session(owner, group, session_type="batch", status="TERMINATED", result="failure", name="first")
    second = make_session(owner, group, session_type="batch", starts_at=timezone.now() + timedelta(hours=1))
    SessionDependency.objects.create(session=second, depends_on=first)
    result = pass_(group)
    assert result.cancelled == {second.pk: "dependency-failed"}
    second = reload(second)
    assert second.status == "CANCELLED"
    assert "can never start" in second.status_data["scheduler"]["msg"]
    assert list(second.kernels.values_list("status", flat=True)) == ["CANCELLED"]


def test_concurrency_counts_the_keypairs_live_sessions_in_the_database(owner, group, make_session, pass_):
    policy(owner, max_concurrent_sessions=2)
    make_session(owner, group, status="RUNNING")
    make_session(owner, group, status="TERMINATING")  # still holds its agent
    make_session(owner, group, status="TERMINATED")  # does not count
    waiting = make_session(owner, group)
    pass_(group)
    assert "more than 2 concurrent session(s)" in failed(waiting)["concurrency"]


def test_concurrency_is_counted_within_one_pass(owner, group, make_session, pass_):
    policy(owner, max_concurrent_sessions=2)
    sessions = [make_session(owner, group, age=10 - i) for i in range(3)]
    result = pass_(group)
    assert result.scheduled == [sessions[0].pk, sessions[1].pk]
    assert "concurrency" in failed(sessions[2])


def test_private_sessions_have_their_own_concurrency_limit_and_are_cancelled_when_over_it(owner, group,
                                                                                          make_session, pass_):
    policy(owner, max_concurrent_sessions=1, max_concurrent_sftp_sessions=1)
    make_session(owner, group, status="RUNNING")  # a regular session does not use the private budget
    sftp = make_session(owner, group, session_type="system", age=10)
    sftp2 = make_session(owner, group, session_type="system", age=5)
    result = pass_(group)
    assert result.scheduled == [sftp.pk]
    assert result.cancelled == {sftp2.pk: "predicate-checks-failed"}


def test_the_pending_count_limit_lets_the_first_sessions_of_the_queue_through(owner, make_group, make_agent,
                                                                              make_session, pass_):
    group = make_group()
    make_agent(group, "a1", cpu=1)
    other = make_group("other")
    policy(owner, max_pending_session_count=2)
    elsewhere = make_session(owner, other, age=100)  # oldest: first in the keypair's queue
    s1 = make_session(owner, group, age=50)
    s2 = make_session(owner, group, age=40)
    pass_(group)
    # s1 is #2 of the keypair's pending sessions: allowed; s2 is #3
    assert reload(s1).status == "SCHEDULED"
    # s1 left the queue, so s2 is now #2 and only waits for an agent
    assert "pending_session_count_limit" not in failed(s2)
    assert reload(s2).status_info == "no-available-instances"
    assert reload(elsewhere).status == "PENDING"


def test_the_pending_count_limit_blocks_sessions_behind_the_limit(owner, make_group, make_agent, make_session,
                                                                  pass_):
    group = make_group()
    make_agent(group, "a1", cpu=0.5)  # nothing fits: everyone stays pending
    policy(owner, max_pending_session_count=1)
    s1 = make_session(owner, group, age=50)
    s2 = make_session(owner, group, age=40)
    pass_(group)
    assert "pending_session_count_limit" not in failed(s1)
    assert "this one is #2 of your pending sessions" in failed(s2)["pending_session_count_limit"]


def test_the_pending_resource_limit_sums_the_queue_up_to_the_session(owner, make_group, make_agent, make_session,
                                                                     pass_):
    group = make_group()
    make_agent(group, "a1", cpu=0.5)
    policy(owner, max_pending_session_resource_slots={"cpu": "3"})
    s1 = make_session(owner, group, cpu=2, age=50)
    s2 = make_session(owner, group, cpu=2, age=40)
    pass_(group)
    assert "pending_session_resource_limit" not in failed(s1)
    assert "cpu requested 4, 3 left of 3" in failed(s2)["pending_session_resource_limit"]


def test_the_keypair_limit_counts_running_sessions_and_this_pass(owner, group, make_session, pass_):
    policy(owner, total_resource_slots={"cpu": "4"}, default_for_unspecified="UNLIMITED")
    make_session(owner, group, cpu=1, status="RUNNING")
    s1 = make_session(owner, group, cpu=2, age=20)
    s2 = make_session(owner, group, cpu=2, age=10)
    result = pass_(group)
    assert result.scheduled == [s1.pk]
    assert failed(s2)["keypair_resource_limit"] == (
        "Your keypair resource quota is exceeded: cpu requested 2, 1 left of 4")


def test_a_limited_policy_refuses_slots_it_does_not_list(owner, group, make_session, pass_):
    policy(owner, total_resource_slots={"cpu": "8", "mem": "32g"}, default_for_unspecified="LIMITED")
    gpu = make_session(owner, group, cpu=1, gpus=1)
    cpu = make_session(owner, group, cpu=1)
    assert pass_(group).scheduled == [cpu.pk]
    assert "cuda.device requested 1, 0 left of 0" in failed(gpu)["keypair_resource_limit"]


def test_the_user_limit_is_the_main_keypairs_policy_over_all_the_users_keypairs(owner, group, make_session,
                                                                                pass_):
    from accounts import services

    main_policy = KeypairResourcePolicy.objects.create(name="main", total_resource_slots={"cpu": "3"})
    loose = KeypairResourcePolicy.objects.create(name="loose")
    Keypair.objects.filter(pk=owner.main_keypair_id).update(resource_policy=main_policy)
    second, _ = services.create_keypair(owner, resource_policy=loose)
    make_session(owner, group, cpu=2, status="RUNNING")  # on the main keypair
    via_second = make_session(owner, group, cpu=2, access_key=second)
    pass_(group)
    reasons = failed(via_second)
    assert "keypair_resource_limit" not in reasons  # the second keypair's own policy is unlimited
    assert reasons["user_resource_limit"] == "Your user resource quota is exceeded: cpu requested 2, 1 left of 3"


def test_the_project_limit(owner, member, group, make_session, pass_):
    Project.objects.filter(pk=owner.projects.first().pk).update(total_resource_slots={"cpu": "3"})
    make_session(member, group, cpu=2, status="RUNNING")  # same default project
    waiting = make_session(owner, group, cpu=2, gpus=1)
    pass_(group)
    assert failed(waiting) == {
        "user_group_resource_limit": "The project's resource quota is exceeded: cpu requested 2, 1 left of 3"}


def test_the_domain_limit(owner, outsider, defaults, group, make_session, pass_):
    Domain.objects.filter(pk=owner.domain_id).update(total_resource_slots={"mem": "2g"})
    elsewhere = Project.objects.create(domain=outsider.domain, name="p", resource_policy=defaults.project_policy)
    make_session(outsider, group, mem="2g", status="RUNNING", project=elsewhere)  # another domain: does not count
    ok = make_session(owner, group, mem="1g", age=20)
    waiting = make_session(owner, group, mem="2g", age=10)
    assert pass_(group).scheduled == [ok.pk]
    assert failed(waiting)["domain_resource_limit"] == (
        "The domain's resource quota is exceeded: mem requested 2 GiB, 1 GiB left of 2 GiB")


def test_status_data_lists_failed_and_passed_predicates_and_counts_retries(owner, group, make_session, pass_):
    policy(owner, max_concurrent_sessions=0)
    session = make_session(owner, group, starts_at=timezone.now() + timedelta(hours=1))
    now = timezone.now()
    pass_(group, now=now)
    pass_(group, now=now + timedelta(seconds=2))
    session = reload(session)
    scheduler = session.status_data["scheduler"]
    assert session.status == "PENDING" and session.status_info == "predicate-checks-failed"
    assert scheduler["retries"] == 2
    assert scheduler["last_try"] == (now + timedelta(seconds=2)).isoformat()
    assert [p["name"] for p in scheduler["failed_predicates"]] == ["reserved_time", "concurrency"]
    assert all(p["msg"] for p in scheduler["failed_predicates"])
    assert [p["name"] for p in scheduler["passed_predicates"]] == [
        "dependencies", "pending_session_count_limit", "pending_session_resource_limit", "keypair_resource_limit",
        "user_resource_limit", "user_group_resource_limit", "domain_resource_limit"]
    assert session.status_history == [session.status_history[0]]  # waiting is not a transition


def test_no_available_instances_explains_what_does_not_fit(owner, make_group, make_agent, make_session, pass_):
    from sessions.scheduler import wait_reasons

    group = make_group()
    make_agent(group, "a1", cpu=2, mem="4g")
    session = make_session(owner, group, cpu=4, mem="8g", status_data={"keep": "me"})
    pass_(group)
    session = reload(session)
    assert session.status_info == "no-available-instances"
    scheduler = session.status_data["scheduler"]
    assert scheduler["retries"] == 1
    assert scheduler["msg"] == ("no ALIVE agent with cpu 4, mem 8 GiB free for architecture x86_64 "
                                "in scaling group 'sg' (1 agent(s) of that architecture)")
    assert scheduler["failed_predicates"] == []
    assert len(scheduler["passed_predicates"]) == 9
    assert session.status_data["keep"] == "me"
    assert wait_reasons(session) == [scheduler["msg"]]
