"""The session and kernel tables carry only the indexes a query needs (migration 0006): every one of
them is rewritten for each session the scheduler places (a status change is never a HOT update), so
no ``varchar_pattern_ops`` twin, and the status indexes hold only the live rows.  These tests check
on PostgreSQL that the set stays so and that the hot queries still find an index (with sequential
scans disabled, so the answer does not depend on the table's size)."""
from __future__ import annotations

import pytest
from django.db import connection, transaction

from helpers import require
from sessions.lifecycle import AGENT_OCCUPYING_KERNEL, CONCURRENCY_SESSION, SessionStatus
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgres_only():
    require(connection.vendor == "postgresql", "PostgreSQL")


def index_defs(table: str) -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table])
        return dict(cursor.fetchall())


def plan_without_seqscan(queryset) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        return queryset.order_by().explain()


@pytest.fixture
def history(owner, make_group, make_agent, make_session):
    """A group with finished sessions, live ones and a queue."""
    group = make_group()
    agent = make_agent(group, "a1", cpu=64, mem="256g")
    for i in range(6):
        make_session(owner, group, status="TERMINATED", agent=agent, age=1000 + i)
    for i in range(3):
        make_session(owner, group, status="RUNNING", agent=agent, age=500 + i)
    for i in range(3):
        make_session(owner, group, age=10 + i)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE compute_sessions_session, compute_sessions_kernel")
    return group


def test_it_builds_no_pattern_ops_twin_and_no_full_status_index():
    for table, expected in (("compute_sessions_session", 7), ("compute_sessions_kernel", 5)):
        defs = index_defs(table)
        assert not [name for name, d in defs.items() if "pattern_ops" in d], defs
        status_indexes = [d for d in defs.values() if "(status" in d]
        assert status_indexes and all(" WHERE " in d for d in status_indexes), defs
        # each added index slows every scheduled session's write: see docs/performance.md before adding one
        assert len(defs) == expected, defs


def test_it_reads_the_scheduler_queue_through_the_live_status_index(history):
    queue = Session.objects.filter(scaling_group_id=history.pk, status=SessionStatus.PENDING).values_list("id")
    assert "session_live_status" in plan_without_seqscan(queue)
    pending_groups = Session.objects.filter(status=SessionStatus.PENDING, scaling_group__isnull=False)
    assert "session_live_status" in plan_without_seqscan(pending_groups.values_list("scaling_group_id"))


def test_it_counts_live_sessions_and_kernels_through_an_index(history, owner):
    live = Session.objects.filter(status__in=list(CONCURRENCY_SESSION)).values_list("access_key_id")
    assert "session_live_status" in plan_without_seqscan(live)
    by_keypair = Session.objects.filter(access_key_id=owner.main_keypair_id, name="s1")
    assert "session_keypair_name" in plan_without_seqscan(by_keypair)
    occupying = Kernel.objects.filter(status__in=list(AGENT_OCCUPYING_KERNEL)).values_list("session_id")
    assert "Seq Scan" not in plan_without_seqscan(occupying)  # kernel_live_status, or the (agent, status) one
    on_agent = Kernel.objects.filter(agent_id="a1", status__in=list(AGENT_OCCUPYING_KERNEL)).values_list("id")
    assert "kernel_agent_status" in plan_without_seqscan(on_agent)


def test_it_leaves_room_on_each_page_for_updates_that_touch_no_index():
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname IN "
                       "('compute_sessions_session', 'compute_sessions_kernel')")
        options = dict(cursor.fetchall())
    assert options == {"compute_sessions_session": ["fillfactor=80"], "compute_sessions_kernel": ["fillfactor=80"]}
