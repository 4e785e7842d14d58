"""Sequencers: FIFO (with num_retries_to_skip), LIFO, DRF, and the priority band."""
import pytest

from sessions.models import Session

pytestmark = pytest.mark.django_db


def statuses(*sessions):
    return [Session.objects.get(pk=s.pk).status for s in sessions]


def test_fifo_places_the_oldest_pending_session_first(owner, make_group, make_agent, make_session, pass_):
    group = make_group(scheduler="fifo")
    make_agent(group, "a1", cpu=1)
    newer = make_session(owner, group, cpu=1, age=10)
    oldest = make_session(owner, group, cpu=1, age=30)
    middle = make_session(owner, group, cpu=1, age=20)
    result = pass_(group)
    assert result.scheduled == [oldest.pk]
    assert statuses(oldest, middle, newer) == ["SCHEDULED", "PENDING", "PENDING"]


def test_lifo_places_the_newest_pending_session_first(owner, make_group, make_agent, make_session, pass_):
    group = make_group(scheduler="lifo")
    make_agent(group, "a1", cpu=1)
    oldest = make_session(owner, group, cpu=1, age=30)
    newest = make_session(owner, group, cpu=1, age=5)
    pass_(group)
    assert statuses(oldest, newest) == ["PENDING", "SCHEDULED"]


def test_a_blocked_session_does_not_stop_the_sessions_behind_it(owner, make_group, make_agent, make_session, pass_):
    group = make_group(scheduler="fifo")
    make_agent(group, "a1", cpu=2)
    too_big = make_session(owner, group, cpu=4, age=30)
    small = make_session(owner, group, cpu=1, age=20)
    result = pass_(group)
    assert result.scheduled == [small.pk]
    assert result.failed == {too_big.pk: "no-available-instances"}


def test_fifo_without_num_retries_to_skip_gives_the_oldest_the_first_claim(owner, make_group, make_agent,
                                                                            make_session, pass_):
    group = make_group(scheduler="fifo")
    make_agent(group, "a1", cpu=2)
    head = make_session(owner, group, cpu=2, age=30, status_data={"scheduler": {"retries": 7}})
    second = make_session(owner, group, cpu=2, age=20)
    pass_(group)
    assert statuses(head, second) == ["SCHEDULED", "PENDING"]


def test_fifo_with_num_retries_to_skip_puts_often_failed_sessions_behind(owner, make_group, make_agent,
                                                                          make_session, pass_):
    group = make_group(scheduler="fifo", config={"num_retries_to_skip": 3})
    make_agent(group, "a1", cpu=2)
    head = make_session(owner, group, cpu=2, age=30, status_data={"scheduler": {"retries": 3}})
    second = make_session(owner, group, cpu=2, age=20, status_data={"scheduler": {"retries": 2}})
    pass_(group)
    assert statuses(head, second) == ["PENDING", "SCHEDULED"]


def test_fifo_with_every_session_skipped_takes_the_first_skipped_one(owner, make_group, make_agent, make_session,
                                                                      pass_):
    group = make_group(scheduler="fifo", config={"num_retries_to_skip": 1})
    make_agent(group, "a1", cpu=2)
    first = make_session(owner, group, cpu=2, age=30, status_data={"scheduler": {"retries": 4}})
    second = make_session(owner, group, cpu=2, age=20, status_data={"scheduler": {"retries": 5}})
    pass_(group)
    assert statuses(first, second) == ["SCHEDULED", "PENDING"]


def test_fifo_with_an_empty_status_data_counts_zero_retries(owner, make_group, make_agent, make_session, pass_):
    group = make_group(scheduler="fifo", config={"num_retries_to_skip": 1})
    make_agent(group, "a1", cpu=2)
    first = make_session(owner, group, cpu=2, age=30, status_data={})
    second = make_session(owner, group, cpu=2, age=20)
    pass_(group)
    assert statuses(first, second) == ["SCHEDULED", "PENDING"]


@pytest.mark.parametrize("scheduler", ["fifo", "lifo", "drf"])
def test_only_the_top_priority_band_competes(scheduler, owner, make_group, make_agent, make_session, pass_):
    group = make_group(scheduler=scheduler)
    make_agent(group, "a1", cpu=8)
    low_old = make_session(owner, group, cpu=1, age=30, priority=5)
    high = make_session(owner, group, cpu=1, age=20, priority=50)
    high_too = make_session(owner, group, cpu=1, age=10, priority=50)
    low_new = make_session(owner, group, cpu=1, age=1, priority=5)
    result = pass_(group)
    assert set(result.scheduled) == {high.pk, high_too.pk}
    assert statuses(low_old, low_new) == ["PENDING", "PENDING"]
    # the lower band is not touched at all: no retries counted against it
    assert Session.objects.get(pk=low_old.pk).status_data == {}
    assert set(pass_(group).scheduled) == {low_old.pk, low_new.pk}


def test_drf_favours_the_user_with_the_smaller_dominant_share(owner, member, make_group, make_agent, make_session,
                                                               pass_):
    group = make_group(scheduler="drf")
    agent = make_agent(group, "a1", cpu=4, mem="16g")
    make_session(owner, group, cpu=2, status="RUNNING", agent=agent, age=100)
    owner_pending = make_session(owner, group, cpu=1, age=50)  # older, but its owner already holds half the CPUs
    member_pending = make_session(member, group, cpu=1, age=10)
    result = pass_(group)
    assert result.scheduled[0] == member_pending.pk
    assert set(result.scheduled) == {member_pending.pk, owner_pending.pk}


def test_drf_alternates_between_two_users_within_one_pass(owner, member, make_group, make_agent, make_session,
                                                           pass_):
    group = make_group(scheduler="drf")
    make_agent(group, "a1", cpu=4, mem="64g")
    owner_sessions = [make_session(owner, group, cpu=1, age=100 - i) for i in range(4)]
    member_sessions = [make_session(member, group, cpu=1, age=50 - i) for i in range(4)]
    result = pass_(group)
    # four CPUs shared fairly: two sessions each, although all of the owner's sessions are older
    assert len(result.scheduled) == 4
    assert sum(s.pk in result.scheduled for s in owner_sessions) == 2
    assert sum(s.pk in result.scheduled for s in member_sessions) == 2
    # and each user's oldest sessions went first
    assert set(result.scheduled) == {owner_sessions[0].pk, owner_sessions[1].pk, member_sessions[0].pk,
                                     member_sessions[1].pk}


def test_fifo_would_have_served_one_user_only(owner, member, make_group, make_agent, make_session, pass_):
    group = make_group(scheduler="fifo")
    make_agent(group, "a1", cpu=4, mem="64g")
    owner_sessions = [make_session(owner, group, cpu=1, age=100 - i) for i in range(4)]
    for i in range(4):
        make_session(member, group, cpu=1, age=50 - i)
    assert set(pass_(group).scheduled) == {s.pk for s in owner_sessions}


def test_sequencer_unit_fifo_skip_order():
    from datetime import datetime, timedelta, timezone as tz

    from sessions.scheduler.sequencers import make

    class S:
        def __init__(self, i, retries):
            self.id, self.retries = i, retries
            self.created_at = datetime(2024, 1, 1, tzinfo=tz.utc) + timedelta(seconds=i)

    sessions = [S(1, 5), S(2, 0), S(3, 2), S(4, 9)]
    assert [s.id for s in make("fifo", sessions, num_retries_to_skip=3)] == [2, 3, 1, 4]
    assert [s.id for s in make("fifo", sessions)] == [1, 2, 3, 4]
    assert [s.id for s in make("lifo", sessions)] == [4, 3, 2, 1]
