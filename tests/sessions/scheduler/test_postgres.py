"""PostgreSQL-only properties: the advisory lock keeps concurrent passes from
over-allocating, and a pass costs the same number of statements whatever the
queue length (set-based writes)."""
import threading
import time

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from helpers import require
from sessions.models import Kernel
from sessions.scheduler import dispatcher, locks, run_pass, snapshot

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres_only():
    require(connection.vendor == "postgresql", "PostgreSQL")


def in_threads(n, target):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def run(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def assert_no_agent_overallocated(agents):
    from backendai.slots import ResourceSlot

    for agent in agents:
        used = sum((ResourceSlot.from_json(s) for s in Kernel.objects.filter(agent=agent).exclude(
            status__in=["PENDING", "TERMINATED", "CANCELLED", "ERROR"]).values_list("requested_slots", flat=True)),
            ResourceSlot())
        assert used <= ResourceSlot.from_json(agent.available_slots), (agent.pk, used)


def test_two_passes_started_at_once_never_over_allocate_an_agent(owner, member, make_group, make_agent,
                                                                 make_session, monkeypatch):
    group = make_group()
    agents = [make_agent(group, f"a{i}", cpu=4, mem="64g") for i in range(3)]
    for i in range(20):
        make_session(owner if i % 2 else member, group, cpu=1, age=100 - i)
    real_load = snapshot.load

    def slow_load(*args, **kwargs):
        raw = real_load(*args, **kwargs)
        time.sleep(0.3)  # the other pass starts while this one decides
        return raw

    monkeypatch.setattr(snapshot, "load", slow_load)
    results = in_threads(2, lambda i: run_pass(group.pk))
    assert sorted(r.skipped or "ran" for r in results) == ["locked", "ran"]
    ran = next(r for r in results if not r.skipped)
    assert len(ran.scheduled) == 12
    assert Kernel.objects.filter(status="SCHEDULED").count() == 12
    assert_no_agent_overallocated(agents)


def test_many_concurrent_passes_never_over_allocate(owner, member, make_group, make_agent, make_session):
    group = make_group()
    agents = [make_agent(group, f"a{i}", cpu=3, mem="64g") for i in range(3)]
    for i in range(30):
        make_session(owner if i % 2 else member, group, cpu=1, age=100 - i)
    for _ in range(3):
        in_threads(4, lambda i: run_pass(group.pk))
    assert Kernel.objects.filter(status="SCHEDULED").count() == 9
    assert_no_agent_overallocated(agents)


def test_a_pass_skips_while_another_connection_holds_the_groups_lock(make_group):
    group = make_group()
    holding, release = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                assert locks.try_xact_lock(dispatcher.LOCK_NAMESPACE, group.pk)
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    try:
        assert run_pass(group.pk).skipped == "locked"
    finally:
        release.set()
        holder.join(10)
    assert run_pass(group.pk).skipped is None


def _queue(n, users, group, make_session):
    for i in range(n):
        make_session(users[i % len(users)], group, cpu=100 if i == 1 else 1 + i % 3, gpus=int(i % 5 == 0), age=1000 - i,
                     kernels=2 if i % 7 == 0 else 1, multi_node=i % 14 == 0)


@pytest.mark.parametrize("scheduler", ["fifo", "drf"])
def test_the_statement_count_of_a_pass_does_not_grow_with_the_queue(scheduler, make_user, make_group, make_agent,
                                                                     make_session):
    from accounts.models import Keypair, KeypairResourcePolicy

    limited = KeypairResourcePolicy.objects.create(name="limited", max_pending_session_count=100,
                                                   max_concurrent_sessions=1000)
    users = [make_user() for _ in range(4)]
    Keypair.objects.filter(user__in=users).update(resource_policy=limited)
    counts = []
    for n in (5, 50):
        group = make_group(f"g{n}", scheduler=scheduler)
        for i in range(4):
            make_agent(group, f"g{n}-a{i}", cpu=8, mem="64g", gpus=2 if i == 0 else 0)
        _queue(n, users, group, make_session)
        with CaptureQueriesContext(connection) as captured:
            result = run_pass(group.pk)
        assert result.scheduled and result.failed  # both kinds of write happened
        statements = [q["sql"] for q in captured.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
        counts.append(len(statements))
        assert result.statements == len(statements)
    assert counts[0] == counts[1], counts
    # lock, group, pending, kernels, dependencies, agents, occupancy, usage, slot types,
    # pending elsewhere (a policy has a pending limit), the write's batch table, its COPY, its ANALYZE
    # and the guarded UPDATE, occupancy recompute
    assert counts[0] == 15, statements
    assert sum(1 for sql in statements if sql.startswith("COPY ")) == 1, statements


def test_the_copy_write_keeps_awkward_text_and_reports_exactly_what_it_changed(owner, make_group, make_agent,
                                                                               make_session):
    """The COPY text format escapes tabs, newlines and backslashes; a guard that fails leaves the
    session and its kernels alone; a kernel whose agent is kept reports the agent it has."""
    from django.utils import timezone

    from sessions.models import Session
    from sessions.scheduler import writer

    group = make_group()
    agent = make_agent(group, "a1", cpu=8)
    waiting = make_session(owner, group)
    moved = make_session(owner, group)
    running = make_session(owner, group, status="RUNNING", agent=agent)
    now = timezone.now()
    awkward = {"scheduler": {"msg": 'tab\there, line\nbreak, back\\slash \\N, "quotes", é, \u2028'},
               "keep": ["\\t", "\r\n"]}
    kernel_of_moved = moved.kernels.get()
    kernel_of_running = running.kernels.get()
    Session.objects.filter(pk=moved.pk).update(status="CANCELLED")  # someone else got there first
    sessions = [
        writer.SessionChange(waiting.pk, "PENDING", "PENDING", status_info="no\\where\tto go", status_data=awkward),
        writer.SessionChange(moved.pk, "PENDING", "SCHEDULED", status_info="scheduled", agent_ids=["a1"],
                             history=[{"status": "SCHEDULED", "timestamp": now.isoformat()}]),
        writer.SessionChange(running.pk, "RUNNING", "TERMINATING", status_info="user-requested",
                             history=[{"status": "TERMINATING", "timestamp": now.isoformat()}]),
    ]
    kernels = [
        writer.KernelChange(kernel_of_moved.pk, moved.pk, "PENDING", "SCHEDULED", agent_id="a1", agent_addr="x"),
        writer.KernelChange(kernel_of_running.pk, running.pk, "RUNNING", "TERMINATING", status_info="user-requested"),
    ]
    with transaction.atomic():
        written = writer.write(sessions, kernels, now)
        # a second batch in the same transaction reuses the batch table without seeing the first one's rows
        again = writer.write([writer.SessionChange(waiting.pk, "PENDING", "PENDING", status_info="again")], [], now)
    assert written.sessions == {waiting.pk, running.pk}
    assert written.kernels == {kernel_of_running.pk: "a1"}  # the kept agent, as the row has it
    assert again.sessions == {waiting.pk} and again.kernels == {}
    waiting.refresh_from_db()
    assert waiting.status_data == awkward and waiting.status_info == "again"
    moved.refresh_from_db()
    assert moved.status == "CANCELLED" and moved.agent_ids == []
    kernel_of_moved.refresh_from_db()
    assert kernel_of_moved.status == "PENDING" and kernel_of_moved.agent_id is None
    running.refresh_from_db()
    assert running.status == "TERMINATING" and running.status_history[-1]["status"] == "TERMINATING"
