"""Every Lua script touches one slot: the core cases run on the cluster while every script call
is recorded, and every call's KEYS must map to one cluster slot.

Calls are recorded by the ``script_calls`` fixture (``conftest``). Slots are computed with
redis-py's ``key_slot``, checked against the server's ``CLUSTER KEYSLOT`` for one call of every
script."""

from __future__ import annotations

from redis.cluster import key_slot

from tests.cluster import scenarios
from tests.cluster.conftest import Call, spanning
from tests.cluster.nodes import LocalCluster
from tests.integration.support import make_engine


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
    assert spanning(script_calls) == []
    node = redis_cluster.node(redis_cluster.masters()[0])
    for name in sorted(named):
        keys = next(k for n, k in script_calls if n == name)
        assert [int(node.execute_command("CLUSTER", "KEYSLOT", k)) for k in keys] == \
            [key_slot(k.encode()) for k in keys], name

