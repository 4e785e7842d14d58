"""Reports that are merely behind (PULLING or PREPARING for a kernel the manager
already has RUNNING or TERMINATING, RUNNING for one TERMINATING) move nothing
and log nothing at WARNING; an illegal report is refused and logged; the kernel
half of a sync costs the same number of statements whatever the kernel count."""
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import services
from agents.models import Agent
from sessions import agent_sync
from sessions import services as session_services
from sessions.models import Kernel, Session

pytestmark = pytest.mark.django_db

AGENT = "node-1"


@pytest.fixture
def token(defaults):
    group = services.ensure_default_scaling_group()
    return services.issue_token("nodes", scaling_group=group)[0]


def payload(reports):
    return {"agent_id": AGENT, "scaling_group": "default", "address": "127.0.0.1", "architecture": "x86_64",
            "backend": "docker", "capacity": {"cpu": "8", "mem": "17179869184"},
            "slot_types": {"cpu": "count", "mem": "bytes"}, "images": [], "kernels": reports}


def sync(token, *reports):
    return agent_sync.sync(token, payload(list(reports)), "127.0.0.1")


def report(kernel, status, **fields):
    return {"kernel_id": str(kernel.pk), "status": status, **fields}


@pytest.fixture
def place(token, owner):
    sync(token)

    def make():
        session = session_services.create_session_on_agent(
            user=owner, image="bai-test/http:1.0", agent=Agent.objects.get(pk=AGENT), slots={"cpu": "1", "mem": "1"})
        return session, session.kernels.get()

    return make


@pytest.fixture
def running(token, place):
    session, kernel = place()
    sync(token, report(kernel, "RUNNING", container_id="c0ffee"))
    kernel.refresh_from_db()
    assert kernel.status == "RUNNING"
    return session, kernel


def warnings_in(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("stale", ["PULLING", "PREPARING"])
def test_a_stale_report_does_not_move_a_running_kernel_back_and_logs_no_warning(token, running, stale, caplog):
    session, kernel = running
    history = list(Kernel.objects.get(pk=kernel.pk).status_history)
    caplog.set_level(logging.DEBUG)
    answer = sync(token, report(kernel, stale, stats={"cpu_util": "7"}))
    agent_sync.record_events(token, AGENT, [report(kernel, stale)])
    kernel.refresh_from_db()
    assert kernel.status == "RUNNING" and kernel.status_history == history
    assert kernel.last_stat == {"cpu_util": "7"}  # what else it said is still recorded
    assert Session.objects.get(pk=session.pk).status == "RUNNING"
    assert [d["kernel_id"] for d in answer["desired"]] == [str(kernel.pk)] and answer["stop"] == []
    assert warnings_in(caplog) == []


@pytest.mark.parametrize("stale", ["PULLING", "PREPARING", "RUNNING"])
def test_a_stale_report_does_not_undo_a_termination_and_logs_no_warning(token, running, stale, caplog):
    session, kernel = running
    session_services.request_termination(session)
    caplog.set_level(logging.DEBUG)
    answer = sync(token, report(kernel, stale))
    agent_sync.record_events(token, AGENT, [report(kernel, stale)])
    kernel.refresh_from_db()
    assert kernel.status == "TERMINATING"
    assert Session.objects.get(pk=session.pk).status == "TERMINATING"
    assert answer["stop"] == [{"kernel_id": str(kernel.pk), "reason": "user-requested"}]
    assert warnings_in(caplog) == []


def test_a_stale_report_for_a_terminated_kernel_is_answered_with_a_stop_order(token, running, caplog):
    session, kernel = running
    session_services.request_termination(session, "force-terminated", forced=True)
    caplog.set_level(logging.DEBUG)
    answer = sync(token, report(kernel, "PREPARING"))
    assert Kernel.objects.get(pk=kernel.pk).status == "TERMINATED"
    assert answer["stop"] == [{"kernel_id": str(kernel.pk), "reason": "force-terminated"}]
    assert warnings_in(caplog) == []


def test_pulling_and_preparing_may_still_alternate_before_the_kernel_runs(token, place):
    session, kernel = place()
    for status in ("PULLING", "PREPARING", "PULLING", "RUNNING"):
        sync(token, report(kernel, status))
        assert Kernel.objects.get(pk=kernel.pk).status == status


def test_an_illegal_report_is_refused_and_logged(token, place, caplog):
    session, kernel = place()
    Kernel.objects.filter(pk=kernel.pk).update(status="PENDING")  # a kernel the manager has not placed yet
    caplog.set_level(logging.INFO)
    sync(token, report(kernel, "RUNNING"))
    assert Kernel.objects.get(pk=kernel.pk).status == "PENDING"
    [warning] = warnings_in(caplog)
    assert "PENDING -> RUNNING" in warning.getMessage() and str(kernel.pk) in warning.getMessage()


def test_the_kernel_half_of_a_sync_costs_the_same_statements_for_1_or_12_kernels(token, place):
    counts = []
    for n in (1, 12):
        placed = [place() for _ in range(n)]
        sync(token, *(report(k, "RUNNING") for _, k in placed))
        with CaptureQueriesContext(connection) as captured:
            agent_sync.apply_kernel_reports(Agent.objects.get(pk=AGENT),
                                          [report(k, "RUNNING", stats={"cpu_util": "1"}) for _, k in placed])
        counts.append(len(captured.captured_queries))
        for session, _ in placed:
            session_services.request_termination(session, forced=True)
    assert counts[0] == counts[1], counts
