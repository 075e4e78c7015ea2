"""The global mutex record (``decisions.global_mutex.GlobalMutexState``): FIFO hand-over, fences
that only grow, idempotent asks, and stale releases that change nothing. Pure."""

from __future__ import annotations

from stabilize_redis.decisions.global_mutex import GlobalMutexState, Requester

A, B, C = Requester("wa", "sa", 0), Requester("wb", "sb", 0), Requester("wc", "sc", 0)


def roundtrip(state: GlobalMutexState) -> GlobalMutexState:
    return GlobalMutexState.decode(state.encode().encode())


def test_a_free_lock_is_granted_with_a_new_fence_and_asking_again_gets_the_same_answer() -> None:
    state = GlobalMutexState()
    assert state.acquire(A) == 1
    assert state.acquire(A) == 1  # a redelivered ask
    assert state.acquire(B) is None and state.acquire(B) is None
    assert roundtrip(state).waiters == [B]


def test_the_release_hands_the_lock_to_the_first_waiter_with_the_next_fence() -> None:
    state = GlobalMutexState()
    state.acquire(A)
    state.acquire(B)
    state.acquire(C)
    assert state.release(A, 1) == (B, 2)
    assert state.release(B, 2) == (C, 3)
    assert state.release(C, 3) is None
    assert roundtrip(state) == GlobalMutexState(None, 3, [], 3)


def test_a_stale_release_cannot_free_a_lock_granted_since() -> None:
    state = GlobalMutexState()
    state.acquire(A)
    state.acquire(B)
    assert state.release(A, 1) == (B, 2)
    assert state.release(A, 1) is None  # A's release delivered again
    assert state.release(B, 1) is None  # a wrong fence
    assert state.holder == B and state.holder_fence == 2
    stale_run = Requester("wb", "sb", 1)  # another run of the holder's stage
    assert state.release(stale_run, 2) is None and state.holder == B


def test_a_waiter_that_leaves_is_never_granted() -> None:
    state = GlobalMutexState()
    state.acquire(A)
    state.acquire(B)
    state.acquire(C)
    assert state.release(B, None) is None
    assert state.release(A, 1) == (C, 2)


def test_a_holder_re_registering_after_a_lost_record_keeps_fences_growing() -> None:
    state = GlobalMutexState()  # the record a restore lost, empty again
    assert state.acquire(A, fence_floor=7) == 8
    assert state.acquire(B) is None
    assert state.release(A, 8) == (B, 9)
