"""The durable record in PostgreSQL: workflow snapshots and the archived event log.

A snapshot is every field of a workflow's Redis hash (``HGETALL``) except the checkpointer's
own bookkeeping (``ckpt``, ``ckpt_ev``), packed as one msgpack map of bytes to bytes; its
``version`` is the hash's ``ver`` and its ``epoch`` the partition's epoch it was checkpointed in
(``durability.epochs``). A stored snapshot is only ever replaced by one strictly newer in
``(epoch, version)`` order, so checkpointers racing on one workflow, or a slow one writing late,
can never roll it back, and a Redis rollback that reuses version numbers cannot leave a stale
one in place. Archiving events is idempotent (unique ``event_id``).

``write_checkpoint`` is the checkpointer's write: one transaction that first claims the
partitions' lives (``Lives.claim``) and stamps their epoch, then writes every workflow it can.
A workflow PostgreSQL refuses (``quarantine.is_data_error``) is isolated in a savepoint of its
own and reported, so it never holds back the rest of the batch (``durability.quarantine``).

Listing (``list``) reflects what has been checkpointed: it may trail Redis by the checkpoint
interval for workflows still running.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import msgpack
from psycopg import Cursor, sql
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from stabilize_redis.decisions.codec import unpack
from stabilize_redis.decisions.layout import workflow_from_hash
from stabilize_redis.durability.pg import DEFAULT_SCHEMA, make_pool, validate_schema
from stabilize_redis.durability.quarantine import DATA_ERRORS, describe
from stabilize_redis.keys import (
    CHECKPOINT_EVENT_FIELD,
    CHECKPOINT_VERSION_FIELD,
    DEFAULT_NAMESPACE,
    META_FIELD,
    WORKFLOW_VERSION_FIELD,
)
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import Workflow

T = TypeVar("T")

BOOKKEEPING_FIELDS = frozenset({CHECKPOINT_VERSION_FIELD.encode(), CHECKPOINT_EVENT_FIELD.encode()})
"""Hash fields that belong to the checkpointer, not to the workflow: never in a snapshot."""

ACTIVE_STATUSES = tuple(s.name for s in WorkflowStatus if not s.is_complete)
"""Status names of workflows that are not finished (what restore reloads)."""


def snapshot_fields(raw: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The hash fields that make up a snapshot (``raw`` without the bookkeeping fields)."""
    return {k: v for k, v in raw.items() if k not in BOOKKEEPING_FIELDS}


def pack_snapshot(fields: dict[bytes, bytes]) -> bytes:
    """A snapshot's stored form: a msgpack map of bytes to bytes (bookkeeping dropped)."""
    return msgpack.packb(snapshot_fields(fields), use_bin_type=True)


def unpack_snapshot(blob: bytes) -> dict[bytes, bytes]:
    """The hash fields of a stored snapshot, ready for HSET or ``workflow_from_hash``."""
    fields = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    return {bytes(k): bytes(v) for k, v in fields.items()}


@dataclass(frozen=True)
class SnapshotRow:
    """One workflow as stored in Postgres. ``snapshot`` is ``pack_snapshot`` of its hash;
    ``start_time``/``end_time`` are epoch ms; ``updated_at`` is set by Postgres on write."""

    namespace: str
    id: str
    application: str
    name: str
    status: str
    partition: int
    version: int
    snapshot: bytes
    pipeline_config_id: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    updated_at: datetime | None = None
    epoch: int = 0

    @classmethod
    def from_hash(cls, namespace: str, workflow_id: str, partition: int,
                  raw: dict[bytes, bytes]) -> SnapshotRow:
        """The row for a workflow hash as read from Redis (HGETALL). Raises KeyError when the
        hash has no ``meta`` or ``ver``, ValueError when a listed column has the wrong type."""
        meta = unpack(raw[META_FIELD.encode()])
        if not isinstance(meta, dict):
            raise ValueError(f"meta is a {type(meta).__name__}, not a map")
        return cls(namespace=namespace, id=workflow_id, application=_column(meta, "application", str) or "",
                   name=_column(meta, "name", str) or "", status=_column(meta, "status", str, required=True),
                   partition=partition, version=int(raw[WORKFLOW_VERSION_FIELD.encode()]),
                   snapshot=pack_snapshot(raw), pipeline_config_id=_column(meta, "pipeline_config_id", str),
                   start_time=_column(meta, "start", int), end_time=_column(meta, "end", int))

    def fields(self) -> dict[bytes, bytes]:
        """The workflow hash fields this snapshot holds."""
        return unpack_snapshot(self.snapshot)

    def workflow(self) -> Workflow:
        """The full Workflow (as ``RedisWorkflowStore.retrieve`` would return it)."""
        wf = workflow_from_hash(self.fields())
        if wf is None:
            raise ValueError(f"snapshot of workflow {self.id} has no meta")
        return wf


def _column(meta: dict[str, Any], name: str, kind: type, required: bool = False) -> Any:
    """``meta[name]`` if it is a ``kind`` (bool is not an int here) or None; ValueError otherwise."""
    value = meta.get(name)
    if value is None:
        if required:
            raise KeyError(name)
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"meta field {name!r} is a {type(value).__name__}, expected {kind.__name__}")
    return value


@dataclass
class CheckpointResult:
    """What ``write_checkpoint`` did: snapshots written, events newly archived, workflows
    refused (id -> reason) and the epoch stamped per partition written (partitions left out
    were not written: their life changed)."""

    written: int = 0
    archived: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    epochs: dict[int, int] = field(default_factory=dict)

    def add(self, counts: tuple[int, int]) -> None:
        self.written += counts[0]
        self.archived += counts[1]


@dataclass(frozen=True)
class EventRow:
    """One event-stream entry to archive: its workflow, stream entry id and JSON text (the
    ``e`` field written by the commit, holding event_id, event_type, entity_type, entity_id
    and data; an entry without a timestamp is archived with its stream entry's time)."""

    workflow_id: str
    stream_id: str
    event: str


SNAPSHOT_COLUMNS = ("namespace", "id", "application", "name", "status", "partition", "version",
                     "snapshot", "pipeline_config_id", "start_time", "end_time", "updated_at", "epoch")

_UPSERT = """
INSERT INTO {table} AS stored (namespace, id, application, name, status, partition, epoch, version,
                               snapshot, pipeline_config_id, start_time, end_time, updated_at)
SELECT %(ns)s, u.id, u.application, u.name, u.status, u.partition, u.epoch, u.version, u.snapshot,
       u.pipeline_config_id, u.start_time, u.end_time, now()
FROM unnest(%(id)s::text[], %(application)s::text[], %(name)s::text[], %(status)s::text[],
            %(partition)s::integer[], %(epoch)s::bigint[], %(version)s::bigint[], %(snapshot)s::bytea[],
            %(pcid)s::text[], %(start)s::bigint[], %(end)s::bigint[])
     AS u(id, application, name, status, partition, epoch, version, snapshot, pipeline_config_id,
          start_time, end_time)
ORDER BY u.id
ON CONFLICT (namespace, id) DO UPDATE SET
    application = excluded.application, name = excluded.name, status = excluded.status,
    partition = excluded.partition, epoch = excluded.epoch, version = excluded.version,
    snapshot = excluded.snapshot, pipeline_config_id = excluded.pipeline_config_id,
    start_time = excluded.start_time, end_time = excluded.end_time, updated_at = excluded.updated_at
WHERE (stored.epoch, stored.version) < (excluded.epoch, excluded.version)
"""

_ARCHIVE = """
INSERT INTO {table} (event_id, namespace, workflow_id, stream_id, stream_ms, stream_seq,
                     event_type, entity_type, entity_id, "timestamp", data)
SELECT COALESCE(u.e->>'event_id', u.wid || '/' || u.sid), %(ns)s, u.wid, u.sid,
       split_part(u.sid, '-', 1)::bigint, split_part(u.sid, '-', 2)::bigint,
       COALESCE(u.e->>'event_type', ''), COALESCE(u.e->>'entity_type', ''),
       COALESCE(u.e->>'entity_id', ''),
       COALESCE((u.e->>'timestamp')::numeric::bigint, split_part(u.sid, '-', 1)::bigint),
       COALESCE(u.e->'data', '{{}}'::jsonb)
FROM unnest(%(wid)s::text[], %(sid)s::text[], %(e)s::jsonb[]) AS u(wid, sid, e)
ORDER BY 1
ON CONFLICT (event_id) DO NOTHING
"""


class SnapshotStore:
    """Snapshots and archived events of one namespace in one schema.

    The connection pool is created on first use (so building a store never blocks or fails
    when Postgres is down) and shared by every thread using the store. Errors of Postgres
    (``psycopg.OperationalError``, ``psycopg_pool.PoolTimeout``) propagate to the caller.
    """

    def __init__(self, dsn: str, schema: str = DEFAULT_SCHEMA, namespace: str = DEFAULT_NAMESPACE, *,
                 pool: ConnectionPool | None = None, max_size: int = 4, timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.schema = validate_schema(schema)
        self.namespace = namespace
        self._pool = pool
        self._owns_pool = pool is None
        self._max_size = max_size
        self._timeout = timeout
        self._lock = threading.Lock()
        self.snapshots_table = sql.SQL("{}.workflow_snapshots").format(sql.Identifier(self.schema))
        self.events_table = sql.SQL("{}.workflow_events").format(sql.Identifier(self.schema))
        self.namespaces_table = sql.SQL("{}.namespaces").format(sql.Identifier(self.schema))

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool, opened (without waiting for Postgres) on first use."""
        with self._lock:
            if self._pool is None:
                self._pool = make_pool(self.dsn, name=f"stabilize-redis:{self.namespace}",
                                       max_size=self._max_size, timeout=self._timeout)
            return self._pool

    def close(self) -> None:
        """Close the pool if this store created it."""
        with self._lock:
            if self._pool is not None and self._owns_pool:
                self._pool.close()
            self._pool = None if self._owns_pool else self._pool

    def __enter__(self) -> SnapshotStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------------

    def upsert_many(self, rows: Sequence[SnapshotRow]) -> int:
        """Store snapshots in one transaction; each replaces the stored one only if it is
        strictly newer in (epoch, version) order. Returns how many rows were inserted or
        replaced."""
        return self.write_batch(rows, ())[0]

    def archive_events(self, rows: Sequence[EventRow]) -> int:
        """Append events in one transaction, skipping any already archived (same event_id).
        Returns how many were new."""
        return self.write_batch((), rows)[1]

    def write_batch(self, snapshots: Sequence[SnapshotRow], events: Sequence[EventRow]) -> tuple[int, int]:
        """Upsert ``snapshots`` (guarded by (epoch, version), each row's own epoch) and archive
        ``events`` in ONE transaction; returns (snapshots written, events new). Rows are
        applied in key order, so concurrent writers lock rows in the same order."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            return self._write(cur, snapshots, events, None)

    def write_checkpoint(self, items: Sequence[tuple[SnapshotRow, Sequence[EventRow]]],
                         claim: Callable[[Cursor[Any]], Mapping[int, int]],
                         isolate: Collection[str] = ()) -> CheckpointResult:
        """The checkpointer's write of one batch, in ONE transaction: ``claim(cur)`` runs first
        and returns ``{partition: epoch}`` for the partitions that may be written (see
        ``Lives.claim``); items of other partitions are skipped. Each written row is stamped
        with its partition's epoch. The items (workflow snapshot, its new events) are written
        together; if PostgreSQL refuses that for a data error (``quarantine.is_data_error``),
        each item is written in a savepoint of its own, so every acceptable one is written and
        each refused one is reported in ``CheckpointResult.refused``. Items whose id is in
        ``isolate`` (known suspects) get their own savepoint from the start. Other errors
        propagate (nothing is written)."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            epochs = dict(claim(cur))
            result = CheckpointResult(epochs=epochs)
            mine = [item for item in items if item[0].partition in epochs]
            together = [item for item in mine if item[0].id not in isolate]
            alone = [item for item in mine if item[0].id in isolate]
            if together:
                try:
                    with conn.transaction():
                        result.add(self._write(cur, [r for r, _ in together], [e for _, es in together for e in es],
                                               epochs))
                except DATA_ERRORS:
                    alone = together + alone
            for row, events in alone:
                try:
                    with conn.transaction():
                        result.add(self._write(cur, [row], events, epochs))
                except DATA_ERRORS as e:
                    result.refused[row.id] = describe(e)
            return result

    def _write(self, cur: Cursor[Any], snapshots: Sequence[SnapshotRow], events: Sequence[EventRow],
               epochs: Mapping[int, int] | None) -> tuple[int, int]:
        newest: dict[str, SnapshotRow] = {}
        for row in snapshots:
            if row.id not in newest or newest[row.id].version < row.version:
                newest[row.id] = row
        ordered = [newest[k] for k in sorted(newest)]
        written = archived = 0
        if ordered:
            cur.execute(sql.SQL(_UPSERT).format(table=self.snapshots_table), {
                "ns": self.namespace, "id": [r.id for r in ordered],
                "application": [r.application for r in ordered], "name": [r.name for r in ordered],
                "status": [r.status for r in ordered], "partition": [r.partition for r in ordered],
                "epoch": [r.epoch if epochs is None else epochs[r.partition] for r in ordered],
                "version": [r.version for r in ordered], "snapshot": [r.snapshot for r in ordered],
                "pcid": [r.pipeline_config_id for r in ordered],
                "start": [r.start_time for r in ordered], "end": [r.end_time for r in ordered],
            })
            written = max(cur.rowcount, 0)
        if events:
            cur.execute(sql.SQL(_ARCHIVE).format(table=self.events_table), {
                "ns": self.namespace, "wid": [e.workflow_id for e in events],
                "sid": [e.stream_id for e in events], "e": [e.event for e in events],
            })
            archived = max(cur.rowcount, 0)
        return written, archived

    def transact(self, work: Callable[[Cursor[Any]], T]) -> T:
        """Run ``work(cursor)`` in one transaction, committed when it returns (rolled back when
        it raises); returns what it returned. For the durability modules' own statements."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            return work(cur)

    def delete(self, workflow_id: str) -> None:
        """Remove a workflow's snapshot and archived events (``RedisWorkflowStore.delete``)."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE namespace = %s AND id = %s").format(self.snapshots_table),
                         (self.namespace, workflow_id))
            conn.execute(sql.SQL("DELETE FROM {} WHERE namespace = %s AND workflow_id = %s")
                         .format(self.events_table), (self.namespace, workflow_id))

    def register_namespace(self, partitions: int) -> int:
        """Record this namespace and its partition count (first writer wins); returns the
        partition count stored."""
        with self.pool.connection() as conn:
            conn.execute(sql.SQL("INSERT INTO {} (namespace, partitions) VALUES (%s, %s) "
                                 "ON CONFLICT (namespace) DO NOTHING").format(self.namespaces_table),
                         (self.namespace, partitions))
            row = conn.execute(sql.SQL("SELECT partitions FROM {} WHERE namespace = %s")
                               .format(self.namespaces_table), (self.namespace,)).fetchone()
        return int(row[0]) if row else partitions

    def namespace_partitions(self) -> int | None:
        """The partition count recorded for this namespace, or None if it never checkpointed."""
        with self.pool.connection() as conn:
            row = conn.execute(sql.SQL("SELECT partitions FROM {} WHERE namespace = %s")
                               .format(self.namespaces_table), (self.namespace,)).fetchone()
        return int(row[0]) if row else None

    # -- reads --------------------------------------------------------------------------------

    def _select(self) -> sql.Composed:
        return sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in SNAPSHOT_COLUMNS), self.snapshots_table)

    def get(self, workflow_id: str) -> SnapshotRow | None:
        """The stored snapshot of one workflow, or None."""
        with self.pool.connection() as conn:
            row = conn.execute(sql.SQL("{} WHERE namespace = %s AND id = %s").format(self._select()),
                               (self.namespace, workflow_id)).fetchone()
        return snapshot_row(row) if row else None

    def versions(self, workflow_ids: Sequence[str]) -> dict[str, int]:
        """Stored versions of the given workflows (absent ones are left out)."""
        with self.pool.connection() as conn:
            rows = conn.execute(sql.SQL("SELECT id, version FROM {} WHERE namespace = %s AND id = ANY(%s)")
                                .format(self.snapshots_table), (self.namespace, list(workflow_ids))).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def list(self, application: str | None = None, pipeline_config_id: str | None = None,
             statuses: Sequence[str] | None = None, start_after: int | None = None,
             start_before: int | None = None, limit: int = 20, offset: int = 0) -> builtins.list[SnapshotRow]:
        """Snapshots matching every given filter, newest first (not-started workflows first,
        then by start time descending, then by id descending). ``start_after``/``start_before``
        bound ``start_time`` (epoch ms; inclusive / exclusive)."""
        where: builtins.list[sql.Composable] = [sql.SQL("namespace = %s")]
        params: builtins.list[Any] = [self.namespace]
        for column, value in (("application", application), ("pipeline_config_id", pipeline_config_id)):
            if value is not None:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if statuses:
            where.append(sql.SQL("status = ANY(%s)"))
            params.append(builtins.list(statuses))
        if start_after is not None:
            where.append(sql.SQL("start_time >= %s"))
            params.append(start_after)
        if start_before is not None:
            where.append(sql.SQL("start_time < %s"))
            params.append(start_before)
        query = sql.SQL("{} WHERE {} ORDER BY start_time DESC NULLS FIRST, id DESC LIMIT %s OFFSET %s").format(
            self._select(), sql.SQL(" AND ").join(where))
        with self.pool.connection() as conn:
            rows = conn.execute(query, [*params, max(0, limit), max(0, offset)]).fetchall()
        return [snapshot_row(r) for r in rows]

    def non_terminal(self, page_size: int = 500) -> Iterator[SnapshotRow]:
        """Every snapshot whose status is not complete, in id order, fetched in pages (keyset
        paging, so rows written meanwhile are neither skipped nor repeated)."""
        after = ""
        while True:
            with self.pool.connection() as conn:
                rows = conn.execute(sql.SQL("{} WHERE namespace = %s AND status = ANY(%s) AND id > %s "
                                            "ORDER BY id LIMIT %s").format(self._select()),
                                    (self.namespace, builtins.list(ACTIVE_STATUSES), after, page_size)).fetchall()
            for r in rows:
                yield snapshot_row(r)
            if len(rows) < page_size:
                return
            after = rows[-1][1]

    def events(self, workflow_id: str) -> builtins.list[dict[str, Any]]:
        """The archived events of a workflow, oldest first, in the shape of the Redis event
        stream's entries (event_id, event_type, entity_type, entity_id, workflow_id, timestamp,
        data)."""
        with self.pool.connection() as conn:
            rows = conn.execute(sql.SQL(
                'SELECT event_id, event_type, entity_type, entity_id, workflow_id, "timestamp", data '
                "FROM {} WHERE namespace = %s AND workflow_id = %s ORDER BY stream_ms, stream_seq, event_id")
                .format(self.events_table), (self.namespace, workflow_id)).fetchall()
        keys = ("event_id", "event_type", "entity_type", "entity_id", "workflow_id", "timestamp", "data")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def is_healthy(self) -> bool:
        """True when Postgres answers a trivial query within the pool timeout."""
        try:
            with self.pool.connection() as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - health probe
            return False


def snapshot_row(r: TupleRow) -> SnapshotRow:
    """A SnapshotRow from a record selected with ``SNAPSHOT_COLUMNS``."""
    values = dict(zip(SNAPSHOT_COLUMNS, r, strict=True))
    values["snapshot"] = bytes(values["snapshot"])
    return SnapshotRow(**values)


_stores_lock = threading.Lock()
_stores: dict[tuple[str, str, str], SnapshotStore] = {}


def snapshot_store_for(dsn: str, schema: str, namespace: str) -> SnapshotStore:
    """One shared SnapshotStore (and pool) per (dsn, schema, namespace) in a process."""
    key = (dsn, validate_schema(schema), namespace)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = SnapshotStore(dsn, schema, namespace)
        return store


def forget_snapshot_stores() -> None:
    """Close and drop the shared stores (tests)."""
    with _stores_lock:
        for store in _stores.values():
            store.close()
        _stores.clear()
