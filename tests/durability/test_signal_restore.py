"""A suspended approval gate and a buffered persistent signal survive the loss of Redis: both
are fields of the workflow hash, so its PostgreSQL snapshot carries them and restore brings them
back; the gate then resumes on its signal and the buffered one is consumed by the next suspension."""

from __future__ import annotations

import redis

from stabilize_redis import WorkflowStatus
from stabilize_redis.durability.restore import restore_namespace
from stabilize_redis.durability.snapshots import SnapshotStore
from stabilize_redis.handlers.signal_stage import buffered_signals
from stabilize_redis.hitl import ApprovalTask
from tests.conftest import delete_namespace
from tests.durability.support import checkpointer
from tests.integration.support import make_engine, make_stage, make_workflow, stage_named


def test_a_suspended_gate_and_a_buffered_signal_survive_restore_from_postgres(
        real_target: tuple[str, str], snapshot_store: SnapshotStore) -> None:
    url, ns = real_target
    eng = make_engine(real_target)
    eng.registry.register("approval", ApprovalTask())
    wf = make_workflow(make_stage("gate", "approval"), make_stage("second", "approval", ["gate"]))
    eng.client.submit(wf)
    eng.processor.process_all(timeout=20)
    eng.client.signal(wf.id, "second", "approve", {"by": "early"})  # buffered: 'second' has not started
    eng.processor.process_all(timeout=20)
    second_id = stage_named(wf, "second").id
    assert stage_named(eng.store.retrieve(wf.id), "gate").status == WorkflowStatus.SUSPENDED
    assert len(buffered_signals(eng.store.backend, wf.id, second_id)) == 1

    checkpointer(eng.store.backend, snapshot_store).drain_all()
    delete_namespace(url, ns)
    report = restore_namespace(redis.Redis.from_url(url), snapshot_store)
    assert report.restored == 1 and report.messages == 0  # a suspended gate needs no message

    restored = eng.store.retrieve(wf.id)
    assert stage_named(restored, "gate").status == WorkflowStatus.SUSPENDED
    assert restored.status == WorkflowStatus.SUSPENDED
    assert buffered_signals(eng.store.backend, wf.id, second_id) == [
        {"signal_name": "approve", "signal_data": {"by": "early"}}]

    eng.client.signal(wf.id, "gate", "approve", {"by": "ops"})
    eng.processor.process_all(timeout=20)
    done = eng.store.retrieve(wf.id)
    assert done.status == WorkflowStatus.SUCCEEDED
    assert stage_named(done, "gate").outputs["approval"] == {"by": "ops"}
    assert stage_named(done, "second").outputs["approval"] == {"by": "early"}
