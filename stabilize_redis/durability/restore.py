"""Restore: reload a namespace's unfinished workflows from PostgreSQL into Redis.

For every non-terminal snapshot (``SnapshotStore.non_terminal``) one call of
``lua/restore_workflow.lua`` writes the snapshot into the workflow's hash, unless Redis already
holds the same or a newer version, and in the same atomic step enqueues the messages its state
needs (``recovery_plan.recovery_messages``: running tasks get RunTask, started stages their next
step, runnable stages StartStage; nothing already completed is redone). Finished workflows stay
in Postgres, where reads find them.

Idempotent: a second run finds every workflow at the snapshot's version and skips it, so it
enqueues nothing; a run interrupted half-way is completed by the next one (each workflow's
write and messages are one step). Before the workflows, the consumer groups are created; after
them, the namespace marker is re-created with ``restored_at`` so workers start again
(``durability.marker``).

The restore works from a raw Redis client, never a ``RedisBackend``: building a backend would
re-create the marker before the workflows are back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.commands.core import Script

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.scripts import Scripts
from stabilize_redis.durability.marker import namespace_record
from stabilize_redis.durability.recovery_plan import decode_workflow, recovery_messages
from stabilize_redis.durability.redis_ops import evalsha, execute
from stabilize_redis.keys import (
    CONSUMER_GROUP,
    CURRENT_LAYOUT,
    LAYOUT_FIELD,
    PARTITIONS_FIELD,
    NamespaceKeys,
    layout_of,
)
from stabilize_redis.queue.messages import new_message_id

if TYPE_CHECKING:
    from stabilize_redis.durability.snapshots import SnapshotRow, SnapshotStore

log = logging.getLogger("stabilize_redis.restore")

RECOVERY_GUARD_TTL_MS = 10 * 60 * 1000
"""How long a restored version stays guarded against being recovered again by the stalled-
workflow sweep (which acts only on workflows with no message anyway)."""


class RestoreError(RuntimeError):
    """The namespace cannot be restored (unknown to Postgres, partition counts disagree)."""


@dataclass
class RestoreReport:
    """What one restore did. ``restored``: workflows written; ``skipped``: Redis already held the
    snapshot's version or a newer one; ``messages``: messages enqueued; ``failed``: (id, reason)
    of snapshots that could not be decoded."""

    namespace: str
    partitions: int
    examined: int = 0
    restored: int = 0
    skipped: int = 0
    messages: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    marker_recreated: bool = False
    seconds: float = 0.0
    restored_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "partitions": self.partitions, "examined": self.examined,
                "restored": self.restored, "skipped": self.skipped, "messages": self.messages,
                "failed": [{"id": i, "reason": r} for i, r in self.failed],
                "marker_recreated": self.marker_recreated, "seconds": round(self.seconds, 3)}


@dataclass
class _Planned:
    row: SnapshotRow
    fields: dict[bytes, bytes]
    messages: list[tuple[str, str]]  # (message id, payload)


def _plan(row: SnapshotRow) -> _Planned:
    """Decode a snapshot and plan its messages (pure). Raises ValueError on a bad snapshot."""
    fields = row.fields()
    decoded = decode_workflow(fields)
    if decoded is None:
        raise ValueError("snapshot has no meta")
    wf, records = decoded
    messages = []
    for m in recovery_messages(wf, records):
        m.message_id = new_message_id()
        messages.append((m.message_id, m.encode()))
    return _Planned(row, fields, messages)


def _batches(rows: Iterable[SnapshotRow], size: int) -> Iterator[list[SnapshotRow]]:
    batch: list[SnapshotRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _partitions(client: Any, keys_meta: str, store: SnapshotStore) -> int:
    stored = client.hget(keys_meta, "partitions")
    record = namespace_record(store)
    if record is None:
        raise RestoreError(f"namespace {store.namespace!r} is unknown to PostgreSQL schema "
                           f"{store.schema!r}: nothing was ever checkpointed there, nothing to restore")
    if stored is not None and int(stored) != record.partitions:
        raise RestoreError(f"namespace {store.namespace!r} has {int(stored)} partitions in Redis but "
                           f"{record.partitions} in PostgreSQL; refusing to restore")
    return record.partitions


def ensure_groups(client: Any, keys: NamespaceKeys) -> None:
    """Create every partition's ready stream and consumer group (existing ones are kept)."""
    pipe = pipeline(client)
    for part in keys.all_partitions():
        pipe.xgroup_create(part.ready, CONSUMER_GROUP, id="0", mkstream=True)
    for result in pipe.execute(raise_on_error=False):
        if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
            raise result


def restore_namespace(client: Any, store: SnapshotStore, *, batch_size: int = 200) -> RestoreReport:
    """Restore every non-terminal workflow of ``store.namespace`` into the Redis of ``client``
    (see the module docstring) and re-create the namespace marker. Postgres and Redis errors
    propagate; a run that failed half-way can simply be run again."""
    started = time.monotonic()
    meta_key = NamespaceKeys(store.namespace, 0).meta
    partitions = _partitions(client, meta_key, store)
    layout, new_marker = _layout(client, meta_key, store.namespace)
    keys = NamespaceKeys(store.namespace, partitions, layout)
    report = RestoreReport(store.namespace, partitions)
    ensure_groups(client, keys)
    script: Script = Scripts(client).restore_workflow
    for rows in _batches(store.non_terminal(), batch_size):
        planned: list[_Planned] = []
        for row in rows:
            report.examined += 1
            try:
                planned.append(_plan(row))
            except (ValueError, KeyError, TypeError) as e:
                log.error("restore: snapshot of workflow %s cannot be decoded (%s); skipped", row.id, e)
                report.failed.append((row.id, str(e)))
        if planned:
            _write(client, script, keys, planned, report)
    _recreate_marker(client, meta_key, partitions, store, layout if new_marker else None)
    report.marker_recreated = True
    report.seconds = time.monotonic() - started
    return report


def restore_snapshots(client: Any, keys: NamespaceKeys, rows: Iterable[SnapshotRow]) -> RestoreReport:
    """Restore the given snapshots (one ``restore_workflow`` call each, in one round trip),
    exactly as ``restore_namespace`` restores a whole namespace, but touching nothing else (no
    groups, no marker): for a reconciliation that found single workflows lost. Snapshots that
    cannot be decoded are reported in ``failed``."""
    report = RestoreReport(keys.namespace, keys.partitions)
    planned: list[_Planned] = []
    for row in rows:
        report.examined += 1
        try:
            planned.append(_plan(row))
        except (ValueError, KeyError, TypeError) as e:
            report.failed.append((row.id, str(e)))
    if planned:
        _write(client, Scripts(client).restore_workflow, keys, planned, report)
    return report


def _write(client: Any, script: Script, keys: NamespaceKeys, planned: list[_Planned],
           report: RestoreReport) -> None:
    now = int(time.time() * 1000)

    def build(pipe: Any) -> None:
        for p in planned:
            wid = p.row.id
            part = keys.for_workflow(wid)
            args: list[Any] = [wid, p.row.version, p.row.start_time or now, RECOVERY_GUARD_TTL_MS, len(p.fields)]
            for name, value in p.fields.items():
                args += [name, value]
            for msg_id, payload in p.messages:
                args += [msg_id, payload]
            evalsha(pipe, script, [part.workflow(wid), part.events(wid), part.ready, part.delayed,
                                   part.delayed_payloads, part.workflows, part.dirty, part.recovered(wid)], args)

    for p, reply in zip(planned, execute(client, build, [script]), strict=True):
        if int(reply[0]) == 1:
            report.restored += 1
            report.restored_ids.append(p.row.id)
            report.messages += len(p.messages)
            log.debug("restore: workflow %s at version %d (%d messages)", p.row.id, p.row.version,
                      len(p.messages))
        else:
            report.skipped += 1
            log.debug("restore: workflow %s skipped: Redis holds version %s >= %d", p.row.id, reply[1],
                      p.row.version)


def _layout(client: Any, meta_key: str, namespace: str) -> tuple[int, bool]:
    """The key layout to restore into: the marker's when it still has a partition count (True
    when there is none: the new marker records the layout), else the current one - the
    workers that ran before the loss refuse to run on (``durability.marker``), so the restored
    namespace is read by workers that open it afresh."""
    partitions, layout = client.hmget(meta_key, [PARTITIONS_FIELD, LAYOUT_FIELD])
    if partitions is None:
        return CURRENT_LAYOUT, True
    return layout_of(namespace, layout), False


def _recreate_marker(client: Any, meta_key: str, partitions: int, store: SnapshotStore,
                     layout: int | None) -> None:
    record = namespace_record(store)
    created = record.created_at_ms if record is not None else int(time.time() * 1000)
    pipe = client.pipeline(transaction=True)
    if layout is not None:
        pipe.hsetnx(meta_key, LAYOUT_FIELD, layout)
    pipe.hsetnx(meta_key, "partitions", partitions)
    pipe.hsetnx(meta_key, "created_at", created)
    pipe.hset(meta_key, "restored_at", int(time.time() * 1000))
    pipe.execute()
