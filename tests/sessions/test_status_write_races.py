"""No lost updates between an agent's sync and a destroy.

Each race is forced with real PostgreSQL transactions on two connections (two
threads): one side holds its transaction open at a real seam (after its rows
are locked), the other is started and seen waiting on a row lock in
``pg_stat_activity`` before the first commits.  Whatever the order, the session
ends TERMINATED and the agent is told to stop the kernel in its next desired
state.  Plus the compare-and-set the scheduler and the reconcilers write with.
"""
from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from agents import services as agent_services
from sessions import agent_sync
from agents.models import Agent
from helpers import require
from sessions import services
from sessions.models import Kernel, Session
from sessions.scheduler import writer

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 60  # seconds: generous bounds, left as soon as the condition holds
AGENT = "node-race"


def payload(kernel_id=None, status="RUNNING", **report):
    kernels = [{"kernel_id": str(kernel_id), "status": status, "container_id": "c0ffee", **report}] if kernel_id else []
    return {"agent_id": AGENT, "scaling_group": "default", "address": "127.0.0.1", "architecture": "x86_64",
            "backend": "docker", "capacity": {"cpu": "4", "mem": "8589934592"},
            "slot_types": {"cpu": "count", "mem": "bytes"}, "images": [], "kernels": kernels}


@pytest.fixture
def postgres():
    require(connection.vendor == "postgresql", "PostgreSQL (row locks)")


@pytest.fixture
def token(postgres, defaults):
    group = agent_services.ensure_default_scaling_group()
    token, _ = agent_services.issue_token("race", scaling_group=group)
    return token


def sync(token, kernel_id=None, status="RUNNING", **report) -> dict:
    return agent_sync.sync(token, payload(kernel_id, status, **report), "127.0.0.1")


@pytest.fixture
def running(token, owner):
    """A session whose kernel the agent reports RUNNING."""
    sync(token)
    session = services.create_session_on_agent(user=owner, image="bai-test/http:1.0", agent=Agent.objects.get(pk=AGENT),
                                               slots={"cpu": "1", "mem": "268435456"})
    kernel = session.kernels.get()
    sync(token, kernel.pk, stats={"cpu_util": "1"})
    assert Session.objects.get(pk=session.pk).status == "RUNNING"
    return session, kernel


class Side(threading.Thread):
    """One side of a race on its own database connection: records its backend pid,
    runs ``body`` and keeps what it returned or raised."""

    def __init__(self, body):
        super().__init__(daemon=True)
        self.body = body
        self.pid = None
        self.ready = threading.Event()
        self.result = None
        self.error = None

    def run(self):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.pid = cursor.fetchone()[0]
            self.ready.set()
            self.result = self.body()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc
        finally:
            self.ready.set()
            connection.close()

    def outcome(self):
        self.join(WAIT)
        assert not self.is_alive(), "a side of the race did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def wait_until_blocked_on_a_lock(side: Side) -> None:
    """Until ``side``'s connection waits for a row lock (the interleaving is forced)."""
    assert side.ready.wait(WAIT) and side.pid is not None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert side.is_alive() or side.error is None, side.error
        with connection.cursor() as cursor:
            cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [side.pid])
            row = cursor.fetchone()
        if row and row[0] == "Lock":
            return
        assert side.is_alive(), f"the other side finished without waiting: {side.error or side.result}"
        time.sleep(0.05)
    raise AssertionError("the other side never waited for the row lock")


def held_open(work, locked: threading.Event, release: threading.Event):
    """Run ``work`` in a transaction that stays open (its locks held) until released."""
    def body():
        with transaction.atomic():
            result = work()
            locked.set()
            assert release.wait(WAIT), "never released"
        return result
    return body


def assert_ends_terminated(token, session, kernel, forced: bool, answer_after_destroy: dict):
    kernel.refresh_from_db()
    assert kernel.status == ("TERMINATED" if forced else "TERMINATING")
    # the agent is told to stop the kernel: by the sync that ran after the destroy, and by the next one
    stop = {"kernel_id": str(kernel.pk), "reason": "force-terminated" if forced else "user-requested"}
    assert stop in answer_after_destroy["stop"], answer_after_destroy
    assert str(kernel.pk) not in {d["kernel_id"] for d in answer_after_destroy["desired"]}
    again = sync(token, kernel.pk, stats={"cpu_util": "3"})  # the agent still has it running
    assert stop in again["stop"]
    kernel.refresh_from_db()
    assert kernel.status == ("TERMINATED" if forced else "TERMINATING")  # a report can't undo the termination
    sync(token, kernel.pk, "TERMINATED", exit_code=137)
    session = Session.objects.get(pk=session.pk)
    assert session.status == "TERMINATED" and session.terminated_at is not None
    assert Kernel.objects.get(pk=kernel.pk).status == "TERMINATED"
    assert Agent.objects.get(pk=AGENT).occupied_slots == {}
    assert [h["status"] for h in session.status_history].count("RUNNING") == 1


@pytest.mark.parametrize("forced", [False, True])
def test_a_sync_that_comes_while_a_destroy_holds_the_session_sees_the_termination(token, running, owner, forced):
    session, kernel = running
    locked, release = threading.Event(), threading.Event()
    destroyer = Side(held_open(lambda: services.destroy(owner, Session.objects.get(pk=session.pk), forced=forced),
                               locked, release))
    destroyer.start()
    assert locked.wait(WAIT) or destroyer.outcome()
    syncer = Side(lambda: sync(token, kernel.pk, stats={"cpu_util": "2"}))
    syncer.start()
    try:
        wait_until_blocked_on_a_lock(syncer)  # the sync read nothing yet: it waits for the destroy's locks
    finally:
        release.set()
    destroyer.outcome()
    answer = syncer.outcome()
    assert_ends_terminated(token, session, kernel, forced, answer)


@pytest.mark.parametrize("forced", [False, True])
def test_a_destroy_that_comes_while_a_sync_holds_the_kernel_waits_and_wins(token, running, owner, forced):
    session, kernel = running
    locked, release = threading.Event(), threading.Event()
    # the sync has read the kernel (RUNNING) and written its report, and has not committed yet
    syncer = Side(held_open(lambda: sync(token, kernel.pk, stats={"cpu_util": "2"}), locked, release))
    syncer.start()
    assert locked.wait(WAIT) or syncer.outcome()
    destroyer = Side(lambda: services.destroy(owner, Session.objects.get(pk=session.pk), forced=forced))
    destroyer.start()
    try:
        wait_until_blocked_on_a_lock(destroyer)
    finally:
        release.set()
    first = syncer.outcome()
    assert str(kernel.pk) in {d["kernel_id"] for d in first["desired"]}  # it answered before the destroy
    destroyed = destroyer.outcome()
    assert destroyed[0].status == ("TERMINATED" if forced else "TERMINATING")
    assert_ends_terminated(token, session, kernel, forced, sync(token, kernel.pk, stats={"cpu_util": "2"}))


def test_a_destroy_storm_racing_syncs_never_leaves_a_kernel_running(token, owner):
    """Many sessions on one agent, destroyed one by one while the agent keeps syncing
    them as RUNNING: every one ends TERMINATING and is in the agent's stop list."""
    sync(token)
    agent = Agent.objects.get(pk=AGENT)
    sessions = [services.create_session_on_agent(user=owner, image="bai-test/http:1.0", agent=agent,
                                                 slots={"cpu": "0.1", "mem": "67108864"}) for _ in range(8)]
    kernels = [s.kernels.get() for s in sessions]
    reports = [{"kernel_id": str(k.pk), "status": "RUNNING", "container_id": "c0ffee"} for k in kernels]
    done = threading.Event()

    def keep_syncing():
        answers, n = [], 0
        while not done.is_set() and n < 2000:
            n += 1
            answers.append(agent_sync.sync(token, {**payload(), "kernels": [
                {**r, "stats": {"cpu_util": str(n)}} for r in reports]}, "127.0.0.1"))
        return answers

    syncer = Side(keep_syncing)
    syncer.start()
    try:
        for session in sessions:
            services.destroy(owner, Session.objects.get(pk=session.pk))
    finally:
        done.set()
    syncer.outcome()
    statuses = dict(Kernel.objects.filter(pk__in=[k.pk for k in kernels]).values_list("pk", "status"))
    assert set(statuses.values()) == {"TERMINATING"}, statuses
    answer = agent_sync.sync(token, {**payload(), "kernels": reports}, "127.0.0.1")
    assert {s["kernel_id"] for s in answer["stop"]} == {str(k.pk) for k in kernels}
    assert answer["desired"] == []


def test_a_compare_and_set_write_leaves_a_row_that_moved_meanwhile(token, running, owner):
    """The scheduler's and the reconcilers' guarded write: a change decided on RUNNING
    is not applied to a session a destroy moved to TERMINATING in between; the same
    change on the status it was decided on is."""
    session, kernel = running
    now = timezone.now()

    def changes(expect_session, expect_kernel):
        entry = [{"status": "ERROR", "timestamp": now.isoformat()}]
        return ([writer.SessionChange(session.pk, expect_session, "ERROR", status_info="agent-lost", history=entry,
                                      terminated=True)],
                [writer.KernelChange(kernel.pk, session.pk, expect_kernel, "ERROR", status_info="agent-lost",
                                     history=entry, terminated=True)])

    decided = changes("RUNNING", "RUNNING")
    services.request_termination(Session.objects.get(pk=session.pk))  # commits TERMINATING in between
    with transaction.atomic():
        written = writer.write(*decided, now)
    assert written.sessions == set() and written.kernels == {}
    assert Session.objects.get(pk=session.pk).status == "TERMINATING"
    assert Kernel.objects.get(pk=kernel.pk).status == "TERMINATING"
    with transaction.atomic():
        written = writer.write(*changes("TERMINATING", "TERMINATING"), now)
    assert written.sessions == {session.pk} and written.kernels == {kernel.pk: AGENT}
    assert Session.objects.get(pk=session.pk).status == "ERROR"
    assert Kernel.objects.get(pk=kernel.pk).status == "ERROR"
