"""WorkflowStatus values, status sets and the transition table."""

from __future__ import annotations

import pytest

from stabilize_redis.models.status import (
    ACTIVE_STATUSES,
    COMPLETED_STATUSES,
    CONTINUABLE_STATUSES,
    HALT_STATUSES,
    InvalidStateTransitionError,
    WorkflowStatus,
    can_transition,
    validate_transition,
)

S = WorkflowStatus


def test_each_status_value_is_name_complete_halt_tuple_and_str_is_the_name() -> None:
    assert S.TERMINAL.value == ("TERMINAL", True, True)
    assert S.SUCCEEDED.value == ("SUCCEEDED", True, False)
    assert S.REDIRECT.value == ("REDIRECT", False, False)
    for status in S:
        assert str(status) == status.name == status.value[0]
        assert WorkflowStatus[status.name] is status


def test_status_sets_match_stabilize() -> None:
    assert {s for s in S if s.is_complete} == set(COMPLETED_STATUSES)
    assert {s for s in S if s.is_halt} == set(HALT_STATUSES) == {S.TERMINAL, S.CANCELED, S.STOPPED}
    assert set(CONTINUABLE_STATUSES) == {S.SUCCEEDED, S.FAILED_CONTINUE, S.SKIPPED, S.REDIRECT}
    assert set(ACTIVE_STATUSES) == {S.NOT_STARTED, S.RUNNING, S.PAUSED, S.SUSPENDED}


def test_canceled_halts_but_is_not_a_failure() -> None:
    assert S.CANCELED.is_halt
    assert not S.CANCELED.is_failure
    assert {s for s in S if s.is_failure} == {S.TERMINAL, S.STOPPED, S.FAILED_CONTINUE}


def test_skipped_counts_as_successful_and_skipped() -> None:
    assert {s for s in S if s.is_successful} == {S.SUCCEEDED, S.SKIPPED}
    assert S.SKIPPED.is_skipped and not S.SUCCEEDED.is_skipped


def test_only_running_and_redirect_are_dirty() -> None:
    assert {s for s in S if s.is_dirty} == {S.RUNNING, S.REDIRECT}


@pytest.mark.parametrize("status", list(S))
def test_staying_in_the_same_state_is_always_allowed(status: WorkflowStatus) -> None:
    assert can_transition(status, status)
    validate_transition(status, status)


@pytest.mark.parametrize("done", sorted(COMPLETED_STATUSES, key=str))
def test_completed_states_allow_no_other_state(done: WorkflowStatus) -> None:
    for target in S:
        if target is not done:
            assert not can_transition(done, target), f"{done} -> {target}"


@pytest.mark.parametrize(
    ("current", "allowed"),
    [
        (S.NOT_STARTED, {S.RUNNING, S.CANCELED, S.SKIPPED, S.BUFFERED, S.TERMINAL}),
        (S.BUFFERED, {S.NOT_STARTED, S.RUNNING, S.CANCELED, S.SKIPPED}),
        (
            S.RUNNING,
            {
                S.SUCCEEDED,
                S.FAILED_CONTINUE,
                S.TERMINAL,
                S.CANCELED,
                S.PAUSED,
                S.STOPPED,
                S.SUSPENDED,
                S.REDIRECT,
                S.SKIPPED,
            },
        ),
        (S.PAUSED, {S.RUNNING, S.CANCELED, S.STOPPED}),
        (S.SUSPENDED, {S.RUNNING, S.CANCELED, S.STOPPED}),
        (S.REDIRECT, {S.RUNNING, S.SUCCEEDED, S.CANCELED}),
    ],
)
def test_allowed_targets_per_state(current: WorkflowStatus, allowed: set[WorkflowStatus]) -> None:
    actual = {t for t in S if t is not current and can_transition(current, t)}
    assert actual == allowed


def test_invalid_transition_error_carries_both_states_and_the_entity() -> None:
    with pytest.raises(InvalidStateTransitionError) as info:
        validate_transition(S.SUCCEEDED, S.RUNNING, "stage", "01ABC")
    err = info.value
    assert (err.current, err.target, err.entity_type, err.entity_id) == (
        S.SUCCEEDED,
        S.RUNNING,
        "stage",
        "01ABC",
    )
    assert "stage 01ABC" in str(err) and "SUCCEEDED -> RUNNING" in str(err)


def test_not_started_cannot_jump_straight_to_succeeded() -> None:
    assert not can_transition(S.NOT_STARTED, S.SUCCEEDED)
