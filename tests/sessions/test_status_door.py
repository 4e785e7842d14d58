"""Every writer of a session's or kernel's status goes through one door that checks
``sessions.lifecycle``'s transition map: an illegal move through any of them is
refused and changes nothing; a legal one appends exactly its history entries."""
from datetime import timedelta

import pytest
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from sessions import agent_sync, lifecycle
from sessions import services as session_services
from sessions.lifecycle import (
    KERNEL_TRANSITIONS,
    SESSION_TRANSITIONS,
    IllegalTransition,
    KernelStatus,
    SessionStatus,
)
from sessions.models import Kernel, Session
from sessions.scheduler import reconcile_stuck, writer

pytestmark = pytest.mark.django_db

AGENT = "node-1"
ILLEGAL_KERNEL_MOVES = [(a, b) for a in KernelStatus for b in KernelStatus
                        if a != b and b not in KERNEL_TRANSITIONS[a]]
ILLEGAL_SESSION_MOVES = [(a, b) for a in SessionStatus for b in SessionStatus
                         if a != b and lifecycle.session_path(a, b) is None]


@pytest.fixture
def token(defaults):
    group = agent_services.ensure_default_scaling_group()
    return agent_services.issue_token("nodes", scaling_group=group)[0]


def payload(*reports):
    return {"agent_id": AGENT, "scaling_group": "default", "address": "127.0.0.1", "architecture": "x86_64",
            "backend": "docker", "capacity": {"cpu": "8", "mem": "17179869184"},
            "slot_types": {"cpu": "count", "mem": "bytes"}, "images": [], "kernels": list(reports)}


@pytest.fixture
def placed(token, owner):
    agent_sync.sync(token, payload(), "127.0.0.1")
    session = session_services.create_session_on_agent(
        user=owner, image="bai-test/http:1.0", agent=Agent.objects.get(pk=AGENT), slots={"cpu": "1", "mem": "1"})
    return session, session.kernels.get()


def set_status(obj, status):
    type(obj).objects.filter(pk=obj.pk).update(status=status, status_history=[])
    obj.refresh_from_db()


def test_the_maps_leave_no_status_out():
    assert set(KERNEL_TRANSITIONS) == set(KernelStatus)
    assert set(SESSION_TRANSITIONS) == set(SessionStatus)
    assert ILLEGAL_KERNEL_MOVES and ILLEGAL_SESSION_MOVES


@pytest.mark.parametrize("current,new", ILLEGAL_KERNEL_MOVES)
def test_the_kernel_door_refuses_every_illegal_move(placed, current, new):
    _, kernel = placed
    set_status(kernel, current)
    assert kernel.move_to(new) is False
    assert (kernel.status, kernel.status_history) == (current, [])


@pytest.mark.parametrize("current,new", ILLEGAL_SESSION_MOVES)
def test_the_session_door_refuses_every_illegal_move(placed, current, new):
    session, _ = placed
    set_status(session, current)
    assert session.move_to(new) is False
    assert (session.status, session.status_history) == (current, [])


def test_a_legal_kernel_move_appends_one_history_entry_and_stamps_the_end(placed):
    _, kernel = placed
    now = timezone.now()
    before = len(kernel.status_history)
    assert kernel.move_to(KernelStatus.TERMINATED, reason="test", now=now)
    assert kernel.status_history[before:] == [{"status": "TERMINATED", "timestamp": now.isoformat()}]
    assert (kernel.status_info, kernel.terminated_at, kernel.status_changed) == ("test", now, now)


def test_a_session_move_through_skipped_progress_states_records_each_step(placed):
    session, _ = placed
    now = timezone.now()
    before = len(session.status_history)
    assert session.move_to(SessionStatus.RUNNING, now=now)  # SCHEDULED -> PREPARING -> RUNNING
    assert [e["status"] for e in session.status_history[before:]] == ["PREPARING", "RUNNING"]


def test_the_move_kernel_service_refuses_an_illegal_move_and_sets_no_field(placed):
    _, kernel = placed
    set_status(kernel, KernelStatus.TERMINATED)
    assert session_services.move_kernel(kernel, KernelStatus.RUNNING, container_id="c0ffee") is False
    assert kernel.status == KernelStatus.TERMINATED and kernel.container_id in ("", None)


def test_refresh_session_status_refuses_what_the_map_forbids(placed):
    session, kernel = placed
    set_status(session, SessionStatus.TERMINATED)
    set_status(kernel, KernelStatus.RUNNING)
    assert session_services.refresh_session_status(session, [kernel]) is False
    assert session.status == SessionStatus.TERMINATED


def test_an_agent_report_cannot_revive_a_terminated_kernel(token, placed):
    session, kernel = placed
    session_services.request_termination(session, forced=True)
    kernel.refresh_from_db()
    assert kernel.status == KernelStatus.TERMINATED
    answer = agent_sync.sync(token, payload({"kernel_id": str(kernel.pk), "status": "RUNNING"}), "127.0.0.1")
    assert Kernel.objects.get(pk=kernel.pk).status == KernelStatus.TERMINATED
    assert str(kernel.pk) in {item["kernel_id"] for item in answer["stop"]}


def test_the_scheduler_writer_refuses_to_build_an_illegal_session_change():
    with pytest.raises(IllegalTransition):
        writer.SessionChange("s", SessionStatus.TERMINATED, SessionStatus.SCHEDULED)
    with pytest.raises(IllegalTransition):
        writer.SessionChange("s", SessionStatus.RUNNING, SessionStatus.PENDING)  # backward, not a reschedule


def test_the_scheduler_writer_refuses_to_build_an_illegal_kernel_change():
    with pytest.raises(IllegalTransition):
        writer.KernelChange("k", "s", KernelStatus.CANCELLED, KernelStatus.SCHEDULED)


def test_the_only_backward_move_is_a_reschedule_of_a_session_not_yet_running():
    writer.SessionChange("s", SessionStatus.SCHEDULED, SessionStatus.PENDING, reschedule=True)
    writer.KernelChange("k", "s", KernelStatus.PULLING, KernelStatus.PENDING, reschedule=True)
    with pytest.raises(IllegalTransition):
        writer.SessionChange("s", SessionStatus.RUNNING, SessionStatus.PENDING, reschedule=True)
    with pytest.raises(IllegalTransition):
        writer.KernelChange("k", "s", KernelStatus.RUNNING, KernelStatus.PENDING, reschedule=True)


def test_the_set_based_write_is_a_compare_and_set_on_the_decided_status(placed):
    session, kernel = placed
    now = timezone.now()
    stale = writer.SessionChange(session.pk, SessionStatus.PENDING, SessionStatus.SCHEDULED)
    result = writer.write([stale], [], now=now)
    assert session.pk not in result.sessions
    assert Session.objects.get(pk=session.pk).status == SessionStatus.SCHEDULED


def test_the_reconciler_moves_stuck_sessions_only_along_the_map(placed):
    session, kernel = placed
    later = timezone.now() + timedelta(hours=1)
    reconcile_stuck(scheduled_timeout=1, preparing_timeout=1, terminating_timeout=1, now=later)
    session.refresh_from_db()
    kernel.refresh_from_db()
    history = [e["status"] for e in session.status_history]
    for before, after in zip(history, history[1:]):
        assert lifecycle.session_can_move(before, after) or lifecycle.session_path(before, after), (before, after)
    assert lifecycle.kernel_can_move(KernelStatus.SCHEDULED, kernel.status) or kernel.status == KernelStatus.SCHEDULED


def test_status_sets_are_defined_once_and_agree():
    assert SessionStatus.ERROR not in lifecycle.OCCUPYING_SESSION
    assert lifecycle.RUNNING_SESSION < lifecycle.LIVE_SESSION < lifecycle.OCCUPYING_SESSION
    assert lifecycle.CONCURRENCY_SESSION == lifecycle.OCCUPYING_SESSION | {SessionStatus.TERMINATING}
    assert lifecycle.DEAD_SESSION < lifecycle.ENDED_SESSION
