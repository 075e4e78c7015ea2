"""The reads of an ancestor view (``decisions.views.Reads``) from Redis."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from stabilize_redis.decisions.codec import StageRecord, decode_stage
from stabilize_redis.decisions.views import Reads
from stabilize_redis.keys import OUTPUT_PREFIX, stage_field

if TYPE_CHECKING:
    from stabilize_redis.backend.redis_backend import RedisBackend


class AncestorsUnavailable(RuntimeError):
    """Redis failed while a task read its ancestors' outputs: not the task's failure. It passes
    through the task's error handling (``handlers.task_execution.execute``), so the RunTask
    fails as on any Redis error and is delivered again."""


def redis_reads(backend: RedisBackend, workflow_id: str) -> Reads:
    """Reads of workflow ``workflow_id``'s hash: one HMGET per batch; the scan is an HSCAN over
    the published fields. A Redis error raises AncestorsUnavailable."""
    key = backend.part(workflow_id).workflow(workflow_id)
    client = backend.client

    def records(ids: list[str]) -> dict[str, StageRecord]:
        try:
            blobs = client.hmget(key, [stage_field(i) for i in ids])
        except RedisError as e:
            raise AncestorsUnavailable(f"reading the ancestors of a stage of {workflow_id}: {e}") from e
        return {i: decode_stage(b) for i, b in zip(ids, blobs, strict=True) if b is not None}

    def fields(names: list[str]) -> list[bytes | None]:
        try:
            return list(client.hmget(key, names)) if names else []
        except RedisError as e:
            raise AncestorsUnavailable(f"reading ancestors' outputs in {workflow_id}: {e}") from e

    def scan() -> Iterable[tuple[str, bytes]]:
        try:
            found = [((n.decode() if isinstance(n, bytes) else n), v)
                     for n, v in client.hscan_iter(key, match=f"{OUTPUT_PREFIX}*", count=1000)]
        except RedisError as e:
            raise AncestorsUnavailable(f"reading ancestors' outputs in {workflow_id}: {e}") from e
        return found

    return Reads(records, fields, scan)


__all__ = ["AncestorsUnavailable", "redis_reads"]
