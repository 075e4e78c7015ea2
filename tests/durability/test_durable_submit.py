"""``submit(..., durability="checkpoint")``: the workflow is in PostgreSQL when submit returns,
so a Redis crash that loses the submit (its AOF rolled back) loses nothing: the checkpointer's
reconciliation restores it and it runs to the end."""

from __future__ import annotations

import pytest

import stabilize_redis
from stabilize_redis import WorkflowStatus
from stabilize_redis.durability.snapshots import SnapshotStore
from stabilize_redis.durable_submit import SubmitNotDurable
from tests.chaos.harness import PrivateRedis
from tests.durability.support import TcpProxy, checkpointer, engine_with_tasks
from tests.integration.support import make_stage, make_workflow, wait_until


def _answers(client: stabilize_redis.Client) -> bool:
    try:
        return bool(client.backend.client.ping())
    except Exception:  # noqa: BLE001 - a restarting server
        return False


def test_a_checkpointed_submit_survives_redis_losing_it(server: PrivateRedis, namespace: str,
                                                         snapshot_store: SnapshotStore) -> None:
    eng = engine_with_tasks((server.url, namespace), snapshot_store)
    ckpt = checkpointer(eng.store.backend, snapshot_store)
    ckpt.run_once(interval=0.0, all_partitions=True)  # the partitions' lives are recorded
    client = eng.client
    copy = server.copy_aof()
    wf = make_workflow(make_stage("a"), make_stage("b", requires=["a"]))
    client.submit(wf, durability="checkpoint")
    saved = snapshot_store.get(wf.id)
    assert saved is not None and saved.status == "RUNNING", "in PostgreSQL before submit returned"

    server.restart_from(copy)  # Redis loses the acknowledged submit
    wait_until(lambda: _answers(client), timeout=10, what="the restarted Redis")
    assert client.backend.load_hash(wf.id) == {}
    ckpt.run_once(interval=0.0, all_partitions=True)
    eng.processor.process_all(timeout=20)
    assert eng.store.retrieve(wf.id).status == WorkflowStatus.SUCCEEDED


def test_a_checkpointed_submit_raises_when_postgres_cannot_confirm(
        real_target: tuple[str, str], pg_dsn: str, pg_schema: str, snapshot_store: SnapshotStore,
        proxy: TcpProxy) -> None:
    url, namespace = real_target
    try:
        unreachable = SnapshotStore(proxy.dsn(pg_dsn), pg_schema, namespace)
        proxy.down()
        client = stabilize_redis.connect(url, namespace, dsn="")
        client.store.snapshots = unreachable
        wf = make_workflow(make_stage("a"))
        with pytest.raises(SubmitNotDurable, match="not confirmed durable"):
            client.submit(wf, durability="checkpoint", durability_timeout=1.0)
        assert client.get(wf.id).id == wf.id, "stored in Redis all the same"
        client.store.snapshots = snapshot_store
        client.submit(wf, durability="checkpoint")  # a resubmit confirms it
        assert snapshot_store.get(wf.id) is not None
        unreachable.close()
    finally:
        proxy.down()


def test_checkpoint_durability_without_postgres_is_refused(namespace: str) -> None:
    client = stabilize_redis.connect(None, namespace, dsn="")
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        client.submit(make_workflow(make_stage("a")), durability="checkpoint")
