"""The reads of an ancestor view (``decisions.views.Reads``) from Redis, and the ancestors' outputs
an expression names."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import RedisError

from stabilize_redis.decisions.codec import StageRecord, decode_stage
from stabilize_redis.decisions.views import AncestorView, Reads
from stabilize_redis.expressions import expression_names
from stabilize_redis.keys import OUTPUT_PREFIX, stage_field

if TYPE_CHECKING:
    from stabilize_redis.backend.redis_backend import RedisBackend

T = TypeVar("T")


class AncestorsUnavailable(RuntimeError):
    """Redis failed while a task read its ancestors' outputs: not the task's failure. It passes
    through the task's error handling (``handlers.task_execution.execute``), so the RunTask
    fails as on any Redis error and is delivered again."""


def redis_reads(backend: RedisBackend, workflow_id: str) -> Reads:
    """Reads of workflow ``workflow_id``'s hash: one HMGET per batch; the scan is an HSCAN over
    the published fields. A Redis error raises AncestorsUnavailable."""
    key = backend.part(workflow_id).workflow(workflow_id)
    client = backend.client

    def guarded(read: Callable[[], T]) -> T:
        try:
            return read()
        except RedisError as e:
            raise AncestorsUnavailable(f"reading ancestors' outputs in {workflow_id}: {e}") from e

    def records(ids: list[str]) -> dict[str, StageRecord]:
        blobs = guarded(lambda: client.hmget(key, [stage_field(i) for i in ids]))
        return {i: decode_stage(b) for i, b in zip(ids, blobs, strict=True) if b is not None}

    def fields(names: list[str]) -> list[bytes | None]:
        return guarded(lambda: list(client.hmget(key, names))) if names else []

    def scan() -> Iterable[tuple[str, bytes]]:
        return guarded(lambda: [((n.decode() if isinstance(n, bytes) else n), v)
                                for n, v in client.hscan_iter(key, match=f"{OUTPUT_PREFIX}*", count=1000)])

    return Reads(records, fields, scan)


def ancestors_named(backend: RedisBackend, workflow_id: str, rec: StageRecord, expressions: Iterable[str],
                    own: Mapping[str, Any]) -> dict[str, Any]:
    """The merged ancestors' outputs of ``rec`` under the names ``expressions`` use that ``own``
    (what the stage holds itself) lacks: one read per such name, none when there is none."""
    wanted = {n for e in expressions for n in expression_names(e)} - set(own)
    if not wanted:
        return {}
    view = AncestorView(rec, redis_reads(backend, workflow_id))
    found = {n: view.lookup(n) for n in sorted(wanted)}
    return {n: value for n, (ok, value) in found.items() if ok}


__all__ = ["AncestorsUnavailable", "ancestors_named", "redis_reads"]
