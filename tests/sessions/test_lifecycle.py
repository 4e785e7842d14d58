"""The status machine: transitions, derivation of a session from its kernels, legal walks."""
import pytest

from sessions.lifecycle import (
    KERNEL_TRANSITIONS,
    SESSION_TRANSITIONS,
    IllegalTransition,
    check_kernel_move,
    derive_session_status,
    kernel_can_move,
    session_can_move,
    session_path,
)


def test_terminal_statuses_go_nowhere():
    assert SESSION_TRANSITIONS["TERMINATED"] == SESSION_TRANSITIONS["CANCELLED"] == frozenset()
    assert KERNEL_TRANSITIONS["TERMINATED"] == KERNEL_TRANSITIONS["CANCELLED"] == frozenset()
    # an ERROR kernel only goes on to be cleaned up by a destroy
    assert KERNEL_TRANSITIONS["ERROR"] == frozenset({"TERMINATING", "TERMINATED"})


@pytest.mark.parametrize("current,new,allowed", [
    ("PENDING", "SCHEDULED", True), ("PENDING", "RUNNING", False), ("RUNNING", "PENDING", False),
    ("PULLING", "PREPARING", True), ("TERMINATING", "RUNNING", False), ("ERROR", "TERMINATED", True),
    ("RUNNING", "CANCELLED", False),
])
def test_session_moves_follow_the_map(current, new, allowed):
    assert session_can_move(current, new) is allowed


@pytest.mark.parametrize("current,new,allowed", [
    ("SCHEDULED", "RUNNING", True), ("RUNNING", "SCHEDULED", False), ("TERMINATING", "TERMINATED", True),
    ("TERMINATED", "RUNNING", False), ("PENDING", "RUNNING", False),
])
def test_kernel_moves_follow_the_map(current, new, allowed):
    assert kernel_can_move(current, new) is allowed


def test_an_illegal_kernel_move_raises():
    with pytest.raises(IllegalTransition):
        check_kernel_move("TERMINATED", "RUNNING")


@pytest.mark.parametrize("kernels,session", [
    (["RUNNING"], "RUNNING"),
    (["RUNNING", "ERROR"], "ERROR"),
    (["PREPARING", "PULLING"], "PULLING"),
    (["RUNNING", "PREPARING"], "PREPARING"),
    (["TERMINATED", "TERMINATING"], "TERMINATING"),
    (["TERMINATED", "TERMINATED"], "TERMINATED"),
    (["BUILDING"], "PREPARING"),
    (["RESIZING"], "RUNNING"),
    (["SUSPENDED"], "ERROR"),
    (["RUNNING", "TERMINATED"], "RUNNING_DEGRADED"),
    (["PENDING", "RUNNING"], "ERROR"),  # placement is all-or-nothing: an inconsistent mix
    ([], "PENDING"),
])
def test_a_session_takes_the_least_advanced_state_of_its_kernels(kernels, session):
    assert derive_session_status(kernels) == session


def test_a_walk_passes_through_progress_states_when_needed():
    assert session_path("SCHEDULED", "RUNNING") == ["PREPARING", "RUNNING"]
    assert session_path("PENDING", "RUNNING") == ["SCHEDULED", "PREPARING", "RUNNING"]
    assert session_path("RUNNING", "TERMINATED") == ["TERMINATED"]
    assert session_path("TERMINATED", "RUNNING") is None
