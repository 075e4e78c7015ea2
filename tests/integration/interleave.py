"""A test kit that forces two commits from one snapshot.

``interleave(backend, first, second)`` runs two actions (a handler handling a message, a store
call - anything that ends in ``RedisBackend.commit``) on two threads. Each action's first commit
waits until the other action has also reached its first commit, so both have read and decided
from the same state; then ``first`` commits, and only after it ``second``. Later commits (the
re-decision after a CONFLICT) go straight through. The result lists every commit outcome of
each action, so a test asserts how many CONFLICTs the interleaving produced and then checks
that the re-decided action did the right thing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.backend.redis_backend import CommitOutcome, RedisBackend

WAIT_S = 10.0


@dataclass
class Interleaving:
    """Commit outcomes of each action, in order ('ok', 'duplicate', 'conflict')."""

    first: list[str] = field(default_factory=list)
    second: list[str] = field(default_factory=list)

    @property
    def conflicts(self) -> int:
        return (self.first + self.second).count(CommitOutcome.CONFLICT)


@contextmanager
def _gated(backend: RedisBackend, result: Interleaving) -> Iterator[threading.local]:
    role = threading.local()
    arrived = {"first": threading.Event(), "second": threading.Event()}
    first_done = threading.Event()
    original = backend.commit
    started: set[str] = set()

    def commit(transition: Any, message: Any, delivery: Any) -> str:
        name = getattr(role, "name", None)
        if name is None or name in started:
            outcome = original(transition, message, delivery)
        else:
            started.add(name)
            arrived[name].set()
            other = "second" if name == "first" else "first"
            if not arrived[other].wait(WAIT_S):
                raise AssertionError(f"the {other} action never reached its commit")
            if name == "second" and not first_done.wait(WAIT_S):
                raise AssertionError("the first action's commit never finished")
            try:
                outcome = original(transition, message, delivery)
            finally:
                if name == "first":
                    first_done.set()
        if name is not None:
            getattr(result, name).append(outcome)
        return outcome

    backend.commit = commit  # type: ignore[method-assign]
    try:
        yield role
    finally:
        del backend.commit


def interleave(backend: RedisBackend, first: Callable[[], object], second: Callable[[], object]) -> Interleaving:
    """Run ``first`` and ``second`` so that both decide from one state and ``first`` commits
    first (see the module docstring). Errors raised by either action are re-raised."""
    result = Interleaving()
    errors: list[BaseException] = []
    with _gated(backend, result) as role:
        def run(name: str, action: Callable[[], object]) -> None:
            role.name = name
            try:
                action()
            except BaseException as e:  # noqa: BLE001 - handed to the test
                errors.append(e)

        threads = [threading.Thread(target=run, args=("first", first)),
                   threading.Thread(target=run, args=("second", second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(3 * WAIT_S)
    if errors:
        raise errors[0]
    assert result.first and result.second, f"an action did not commit: {result}"
    return result
