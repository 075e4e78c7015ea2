"""Key layout versions on one Redis: a new namespace records layout 2 and tags its partitions
with the namespace; a namespace created before layouts were recorded (its meta hash written the
old way, no ``layout`` field) keeps working with its old keys; asking for another layout than a
namespace has, or opening a namespace of an unknown layout, is refused."""

from __future__ import annotations

import time

import pytest
import redis
from redis.cluster import key_slot

from stabilize_redis import Task, TaskResult, WorkflowStatus
from stabilize_redis.backend.connection import Target, connect_redis, resolve
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.backend.registry import KEY_LAYOUT_ENV, backend_for
from stabilize_redis.keys import KeyLayoutError, NamespaceKeys, PartitionKeys
from tests.integration.support import make_engine, make_stage, make_workflow

Where = tuple[str, str]


class Ok(Task):
    def execute(self, stage):  # type: ignore[no-untyped-def]
        return TaskResult.success(outputs={f"{stage.ref_id}_out": 1})


def _keys(url: str, namespace: str) -> list[str]:
    return sorted(k.decode() for k in redis.Redis.from_url(url).scan_iter(match=f"{namespace}:*", count=1000))


def _run_chain(target: Where) -> str:
    eng = make_engine(target)
    eng.registry.register("t", Ok())
    wf = eng.run(make_workflow(make_stage("a"), make_stage("b", requires=["a"])))
    assert wf.status == WorkflowStatus.SUCCEEDED
    assert wf.stage_by_ref_id("b").context["a_out"] == 1  # type: ignore[union-attr]
    return wf.id


def test_a_new_namespace_records_layout_2_and_tags_partitions_with_the_namespace(real_target: Where) -> None:
    url, ns = real_target
    wf_id = _run_chain(real_target)
    meta = redis.Redis.from_url(url).hgetall(f"{ns}:{{meta}}")
    assert meta[b"layout"] == b"2"
    home = NamespaceKeys(ns, 16, 2).for_workflow(wf_id)
    assert home.workflow(wf_id) == f"{ns}:{{{ns}:p{home.index}}}:wf:{wf_id}"
    assert home.workflow(wf_id) in _keys(url, ns)
    assert not [k for k in _keys(url, ns) if k.startswith(f"{ns}:{{p")]


def test_a_namespace_created_by_the_old_layout_keeps_working_with_its_old_keys(real_target: Where) -> None:
    url, ns = real_target
    redis.Redis.from_url(url).hset(f"{ns}:{{meta}}", mapping={"partitions": 16, "created_at": int(time.time() * 1000)})
    wf_id = _run_chain(real_target)
    home = NamespaceKeys(ns, 16, 1).for_workflow(wf_id)
    assert home.workflow(wf_id) == f"{ns}:{{p{home.index}}}:wf:{wf_id}"
    keys = _keys(url, ns)
    assert home.workflow(wf_id) in keys
    assert not [k for k in keys if k.startswith(f"{ns}:{{{ns}:")]
    assert b"layout" not in redis.Redis.from_url(url).hgetall(f"{ns}:{{meta}}")  # still layout 1


def test_asking_for_layout_2_on_a_layout_1_namespace_is_refused(real_target: Where,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url, ns = real_target
    redis.Redis.from_url(url).hset(f"{ns}:{{meta}}", mapping={"partitions": 16, "created_at": 1})
    with pytest.raises(KeyLayoutError, match="uses key layout 1, but layout 2 was asked for"):
        RedisBackend(resolve(url, ns), key_layout=2)
    monkeypatch.setenv(KEY_LAYOUT_ENV, "2")
    with pytest.raises(KeyLayoutError, match=ns):
        backend_for(url, ns)
    assert _keys(url, ns) == [f"{ns}:{{meta}}"]  # nothing of either layout was created


def test_a_new_namespace_can_be_pinned_to_layout_1_for_older_workers(real_target: Where,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url, ns = real_target
    monkeypatch.setenv(KEY_LAYOUT_ENV, "1")
    assert backend_for(url, ns).keys.layout == 1
    assert redis.Redis.from_url(url).hget(f"{ns}:{{meta}}", "layout") == b"1"


def test_an_unknown_layout_or_setting_is_refused_naming_it(real_target: Where, monkeypatch: pytest.MonkeyPatch) -> None:
    url, ns = real_target
    redis.Redis.from_url(url).hset(f"{ns}:{{meta}}", mapping={"partitions": 16, "created_at": 1, "layout": 7})
    with pytest.raises(KeyLayoutError, match="key layout '7'.*upgrade"):
        RedisBackend(resolve(url, ns))
    monkeypatch.setenv(KEY_LAYOUT_ENV, "two")
    with pytest.raises(ValueError, match=f"{KEY_LAYOUT_ENV}='two'"):
        backend_for(url, ns)


def test_layout_2_spreads_namespaces_over_slots_where_layout_1_shares_them() -> None:
    names = [f"ns{i}" for i in range(10)]
    assert len({key_slot(PartitionKeys(n, 3, 1).ready.encode()) for n in names}) == 1
    assert len({key_slot(PartitionKeys(n, 3, 2).ready.encode()) for n in names}) >= 9
    keys = NamespaceKeys("stz", 16, 2)
    assert len({key_slot(p.ready.encode()) for p in keys.all_partitions()}) == 16
    assert {key_slot(k.encode()) for k in (keys.meta, keys.workers, keys.checkpointers, keys.recovery_lease)} \
        == {key_slot(b"{meta}")}


def test_a_layout_1_namespace_runs_on_the_cluster_too(cluster_target: Where) -> None:
    # Layout 1 keeps working on a cluster (each partition is still one slot); it only shares
    # its slots with partition N of every other layout-1 namespace.
    url, ns = cluster_target
    client = connect_redis(Target(url, ns))
    client.hset(f"{ns}:{{meta}}", mapping={"partitions": 16, "created_at": int(time.time() * 1000)})
    eng = make_engine(cluster_target)
    eng.registry.register("t", Ok())
    assert eng.store.backend.keys.layout == 1
    wfs = [make_workflow(make_stage("a"), make_stage("b", requires=["a"])) for _ in range(8)]
    with eng.threaded(concurrency=4):
        for wf in wfs:
            eng.client.submit(wf)
        assert [eng.client.wait(wf.id, timeout=30).status for wf in wfs] == [WorkflowStatus.SUCCEEDED] * len(wfs)
    home = eng.store.backend.part(wfs[0].id)
    assert client.exists(f"{ns}:{{p{home.index}}}:wf:{wfs[0].id}")
