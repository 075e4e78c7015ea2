"""Retention: evict finished, checkpointed workflows from Redis after a retention period.

A sweep pages through each partition's workflow index (scored by submit time; a workflow
submitted after the cutoff cannot have ended before it), reads the status, versions and end
time of the candidates, and calls ``lua/evict.lua`` for the finished ones whose end is older
than ``retention``. The script deletes the hash, event stream, dedup record and index entry only if the
workflow is still complete, its version is the one seen, that version is checkpointed, it is
not dirty and every event is archived — so a workflow whose latest state is not in Postgres is
never dropped. Reads then fall back to Postgres (``RedisWorkflowStore.retrieve``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.decisions.codec import unpack
from stabilize_redis.durability.redis_ops import evalsha, execute
from stabilize_redis.keys import (
    CHECKPOINT_VERSION_FIELD,
    META_FIELD,
    STATUS_FIELD,
    WORKFLOW_VERSION_FIELD,
    PartitionKeys,
)
from stabilize_redis.models.status import WorkflowStatus

TERMINAL_STATUSES = tuple(s.name for s in WorkflowStatus if s.is_complete)


def _evictable(backend: RedisBackend, partition: int, ids: list[str], cutoff_ms: int) -> list[tuple[str, int]]:
    """(id, version) of the candidates that look evictable: complete, checkpointed at their
    current version and ended at or before the cutoff."""
    part = backend.keys.partition(partition)
    pipe = pipeline(backend.client)
    for wid in ids:
        pipe.hmget(part.workflow(wid), [STATUS_FIELD, WORKFLOW_VERSION_FIELD, CHECKPOINT_VERSION_FIELD, META_FIELD])
    out: list[tuple[str, int]] = []
    for wid, (st, ver, ckpt, meta) in zip(ids, pipe.execute(), strict=True):
        if st is None or st.decode() not in TERMINAL_STATUSES or ver is None or ver != ckpt or meta is None:
            continue
        end = unpack(meta).get("end")
        if end is not None and int(end) <= cutoff_ms:
            out.append((wid, int(ver)))
    return out


def sweep(backend: RedisBackend, partitions: Iterable[int], retention: float, *, page: int = 500,
          now_ms: int | None = None, check: Callable[[], None] | None = None) -> int:
    """Evict, in ``partitions``, every complete workflow that ended more than ``retention``
    seconds ago and is fully checkpointed; returns how many were evicted. ``check`` is called
    before each round trip that evicts; it raises to stop the sweep (the checkpointer's fence:
    an abandoned pass evicts nothing more)."""
    cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - int(retention * 1000)
    script = backend.scripts.evict
    statuses = "," + ",".join(TERMINAL_STATUSES) + ","
    evicted = 0
    for i in partitions:
        part = backend.keys.partition(i)
        offset = 0
        while True:
            ids = [w.decode() for w in backend.client.zrangebyscore(part.workflows, "-inf", cutoff,
                                                                    start=offset, num=page)]
            chosen = _evictable(backend, i, ids, cutoff) if ids else []
            done = 0
            if chosen:
                if check is not None:
                    check()

                def build(pipe: Any, chosen: list[tuple[str, int]] = chosen, part: PartitionKeys = part) -> None:
                    for wid, version in chosen:
                        evalsha(pipe, script, [part.workflow(wid), part.events(wid), part.workflows,
                                               part.dirty, part.processed(wid)], [wid, version, statuses])

                done = sum(1 for r in execute(backend.client, build, [script]) if int(r[0]) == 1)
                evicted += done
            if len(ids) < page:
                break
            offset += page - done  # evicted entries left the index: do not skip their successors
    return evicted
