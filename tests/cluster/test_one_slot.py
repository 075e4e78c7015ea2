"""Every Lua script touches one slot: the core cases run on the cluster while every script call
is recorded, and every call's KEYS must map to one cluster slot.

Calls are recorded at two seams: the script registry (``Scripts``: every named command, with
its name) and the cluster client's EVALSHA (which also sees scripts queued on a batch by SHA,
``durability.redis_ops.evalsha``). Slots are computed with redis-py's ``key_slot``, checked
against the server's ``CLUSTER KEYSLOT`` for one call of every script."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from redis.cluster import RedisCluster, key_slot
from redis.commands.core import Script

from stabilize_redis.backend import scripts as script_registry
from tests.cluster import scenarios
from tests.cluster.nodes import LocalCluster
from tests.integration.support import make_engine

Call = tuple[str, tuple[str, ...]]


class _Recording:
    """A registered script that records the KEYS of every call, then runs it."""

    def __init__(self, name: str, script: Script, calls: list[Call]) -> None:
        self._name, self._script, self._calls = name, script, calls

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        self._calls.append((self._name, tuple(_text(k) for k in keys)))
        return self._script(keys=keys, args=args, client=client)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._script, name)


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


@pytest.fixture
def script_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Call]]:
    calls: list[Call] = []
    original = script_registry.Scripts.__getattr__
    evalsha = RedisCluster.evalsha

    def recording(self: script_registry.Scripts, name: str) -> Any:
        return _Recording(name, original(self, name), calls)

    def recorded_evalsha(self: RedisCluster, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        calls.append((f"evalsha {sha[:8]}", tuple(_text(k) for k in keys_and_args[:numkeys])))
        return evalsha(self, sha, numkeys, *keys_and_args)

    monkeypatch.setattr(script_registry.Scripts, "__getattr__", recording)
    monkeypatch.setattr(RedisCluster, "evalsha", recorded_evalsha)
    yield calls


def test_every_script_call_of_the_core_cases_touches_one_slot(
        cluster_target: tuple[str, str], redis_cluster: LocalCluster, script_calls: list[Call]) -> None:
    eng = make_engine(cluster_target)
    tasks = scenarios.register(eng)
    with eng.threaded(concurrency=4):
        for run in scenarios.ALL.values():
            run(eng, tasks)
        eng.processor.run_recovery()

    named = {name for name, _ in script_calls if not name.startswith("evalsha")}
    assert {"submit", "commit", "read_workflow", "promote_delayed"} <= named, named
    spanning = [(name, keys) for name, keys in script_calls if len({key_slot(k.encode()) for k in keys}) > 1]
    assert spanning == []
    node = redis_cluster.node(redis_cluster.masters()[0])
    for name in sorted(named):
        keys = next(k for n, k in script_calls if n == name)
        assert [int(node.execute_command("CLUSTER", "KEYSLOT", k)) for k in keys] == \
            [key_slot(k.encode()) for k in keys], name

