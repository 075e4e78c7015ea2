"""``submit(..., durability="checkpoint")``: the submitted workflow's snapshot is in
PostgreSQL before ``submit`` returns, written through the checkpointer's own path (life
checked, epoch stamped, quarantine on refusal), so whatever Redis loses afterwards, restore or
the checkpointer's reconciliation brings the workflow back."""

from __future__ import annotations

import time

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.drain import DrainPass
from stabilize_redis.durability.snapshots import SnapshotStore
from stabilize_redis.durable_submit import SubmitNotDurable

RETRY_DELAY_S = 0.05


def checkpoint_workflow(backend: RedisBackend, store: SnapshotStore, workflow_id: str, timeout_s: float) -> None:
    """Return once PostgreSQL holds a snapshot of ``workflow_id``; raise SubmitNotDurable when
    that is not achieved within ``timeout_s`` (PostgreSQL unreachable, the partition's
    reconciliation pending, the snapshot quarantined)."""
    deadline = time.monotonic() + timeout_s
    drain = DrainPass(backend, store, batch_size=1)
    partition = backend.part(workflow_id).index
    last_error = "PostgreSQL did not confirm the snapshot"
    while True:
        try:
            drain.checkpoint_now(partition, [workflow_id])
            if store.versions([workflow_id]):
                return
        except Exception as e:  # noqa: BLE001 - any failure is retried until the deadline, then reported
            last_error = f"{type(e).__name__}: {e}"
        if time.monotonic() + RETRY_DELAY_S >= deadline:
            raise SubmitNotDurable(workflow_id, f"{last_error} within {timeout_s:g}s")
        time.sleep(RETRY_DELAY_S)
