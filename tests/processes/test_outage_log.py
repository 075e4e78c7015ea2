"""``OutageLog`` keeps the log of a failing loop bounded by time, not by attempts: one line
when it goes down, one "still down" line per interval, one when it recovers; a flapping loop
logs at most about two lines per interval; tracebacks only at DEBUG."""

from __future__ import annotations

import logging

import pytest
import redis

from stabilize_redis.outage import Backoff, OutageLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _outage(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> tuple[OutageLog, Clock]:
    caplog.set_level(level, logger="test.outage")
    clock = Clock()
    return OutageLog(logging.getLogger("test.outage"), "read", repeat_s=15.0, clock=clock), clock


def test_a_minute_of_failures_a_hundred_times_a_second_logs_five_lines(caplog: pytest.LogCaptureFixture) -> None:
    outage, clock = _outage(caplog)
    error = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    for step in range(6000):
        clock.now = step / 100
        outage.failed(error)
    clock.now = 60.0
    outage.ok()
    outage.ok()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("read: down (ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection "
                        "refused.); retrying")
    assert [line.split(" (")[0] for line in lines[1:4]] == [
        "read: still down after 15s", "read: still down after 30s", "read: still down after 45s"]
    assert lines[4] == "read: recovered after 60.0s (6000 failures)"
    assert len(lines) == 5
    assert not any(r.exc_info for r in caplog.records), "no traceback above DEBUG"


def test_a_flapping_loop_logs_a_bounded_number_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    outage, clock = _outage(caplog)
    for step in range(120):  # fails and recovers every half second for a minute
        clock.now = step / 2
        if step % 2:
            outage.ok()
        else:
            outage.failed(redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."))
    assert len(caplog.records) <= 2 * (60 // 15) + 2
    assert any("brief outages" in r.getMessage() for r in caplog.records)


def test_tracebacks_are_logged_at_debug_and_unexpected_errors_carry_theirs(
        caplog: pytest.LogCaptureFixture) -> None:
    outage, _ = _outage(caplog, logging.DEBUG)
    outage.failed(redis.ConnectionError("refused"))
    assert [(r.levelno, bool(r.exc_info)) for r in caplog.records] == [(logging.WARNING, False),
                                                                        (logging.DEBUG, True)]
    caplog.clear()
    other, _ = _outage(caplog)
    other.failed(KeyError("a bug, not an outage"))
    assert caplog.records[0].exc_info is not None


def test_backoff_doubles_from_its_initial_delay_up_to_its_cap() -> None:
    backoff = Backoff(0.2, 10.0)
    assert [backoff.next() for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    backoff.reset()
    assert backoff.next() == 0.2


def test_without_quiet_flaps_every_outage_is_announced_and_recovers_only_when_told(
        caplog: pytest.LogCaptureFixture) -> None:
    # The checkpointer's setting (durability.health): a second outage soon after the first is
    # still logged, at the level asked for; no "still down" lines with repeat_s=0.
    caplog.set_level(logging.INFO, logger="test.outage")
    clock = Clock()
    outage = OutageLog(logging.getLogger("test.outage"), "checkpointer (postgres)", repeat_s=0.0, clock=clock,
                       quiet_flaps=False, level=logging.ERROR)
    for second in range(3):
        clock.now = float(second)
        outage.failed(redis.ConnectionError("refused"), message="PostgreSQL unreachable")
        clock.now += 0.5
        outage.failed(redis.ConnectionError("refused"), message="PostgreSQL unreachable")
        assert outage.down
        outage.ok("catching up")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [(logging.ERROR, "checkpointer (postgres): PostgreSQL unreachable"),
                     (logging.WARNING, "checkpointer (postgres): recovered after 0.5s (2 failures); catching up")] * 3
