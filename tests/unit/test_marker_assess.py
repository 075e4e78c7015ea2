"""Deciding whether a namespace lost its Redis data, from its marker and Postgres (pure)."""

from __future__ import annotations

from stabilize_redis.durability.marker import NamespaceRecord, assess

REGISTERED = NamespaceRecord(partitions=16, created_at_ms=1_700_000_000_000)


def test_marker_gone_while_postgres_knows_the_namespace_is_a_loss_that_names_restore() -> None:
    state = assess("prod", None, REGISTERED, postgres_answered=True, seen_live=False)
    assert state.lost and "stabilize-redis restore" in state.reason and "'prod'" in state.reason


def test_new_namespace_unknown_to_postgres_is_fine() -> None:
    assert not assess("new", None, None, postgres_answered=True, seen_live=False).lost


def test_marker_vanishing_under_a_running_worker_is_a_loss_even_without_postgres() -> None:
    state = assess("prod", None, None, postgres_answered=False, seen_live=True)
    assert state.lost and not state.verified


def test_start_without_marker_while_postgres_is_down_goes_on_unverified() -> None:
    state = assess("prod", None, None, postgres_answered=False, seen_live=False)
    assert not state.lost and not state.verified


def test_live_marker_created_before_registration_is_fine() -> None:
    meta = {b"partitions": b"16", b"created_at": str(REGISTERED.created_at_ms - 5_000).encode()}
    assert not assess("prod", meta, REGISTERED, postgres_answered=True, seen_live=True).lost


def test_marker_recreated_after_registration_without_restore_is_a_loss() -> None:
    meta = {b"partitions": b"16", b"created_at": str(REGISTERED.created_at_ms + 3_600_000).encode()}
    state = assess("prod", meta, REGISTERED, postgres_answered=True, seen_live=False)
    assert state.lost and "re-created" in state.reason


def test_small_clock_skew_is_tolerated() -> None:
    meta = {b"partitions": b"16", b"created_at": str(REGISTERED.created_at_ms + 2_000).encode()}
    assert not assess("prod", meta, REGISTERED, postgres_answered=True, seen_live=False).lost


def test_restored_marker_is_fine_whenever_it_was_created() -> None:
    meta = {b"partitions": b"16", b"created_at": str(REGISTERED.created_at_ms + 3_600_000).encode(),
            b"restored_at": b"1"}
    assert not assess("prod", meta, REGISTERED, postgres_answered=True, seen_live=False).lost
