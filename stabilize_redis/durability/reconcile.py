"""Reconciliation: after Redis lost writes, PostgreSQL keeps nothing Redis does not have.

When a partition begins a new life (``durability.epochs``), PostgreSQL may hold states and
events that Redis lost: a checkpoint written (with ``fsync_lag`` 0, or by a batch read just
before a crash) from commits the restarted Redis no longer has. Before any batch of the new
life is written, ``reconcile`` examines every snapshot of the partition from an older epoch
written since the window start (``Life.reconcile_from``: the old life's last write minus the
window), and every workflow of the partition with events archived since then, against Redis:

* Redis has the same version with identical content, and every archived event: **confirmed**;
  the row is re-stamped with the new epoch.
* Redis has an older version, the same version with different content, or lacks events
  PostgreSQL archived: **rewritten**. Redis is the truth for a workflow it has: the workflow is
  marked dirty so the next checkpoint replaces the snapshot (the new epoch wins whatever the
  version), and the archived events Redis lost move from ``workflow_events`` to
  ``workflow_events_lost``, so each transition stays archived exactly once. Reported: a WARNING
  line, a ``workflow.reconciled`` event in the workflow's stream and a ``reconciliations`` row
  (versions before and after, reason, lost events).
* Redis has a newer version and lost nothing: it is marked dirty, nothing to report.
* Redis lacks the workflow and its snapshot is unfinished: the submit (or everything since)
  was lost; it is **restored** from the snapshot (``lua/restore_workflow.lua``, with the
  messages its state needs) and reported. A finished one missing from Redis is left alone:
  it may have been evicted by retention, and reads find it in PostgreSQL either way. When the
  namespace's marker is gone too, Redis lost everything: that is ``stabilize-redis restore``'s
  job (``durability.marker``), and nothing is restored here.

An archived event counts as lost when its id is not in the workflow's Redis stream, its stream
id is after the hash's ``ckpt_ev`` (what Redis knows was archived survived with it) and not
before the stream's first entry (older ones predate a restore, which starts a new stream).

Redis is written first (marks, restores, report events: all idempotent, the event's id is
fixed per epoch and workflow), PostgreSQL last, in one transaction that also marks the
partition reconciled, under the partition's life lock. If anything fails, the next pass runs
the whole reconciliation again; if another checkpointer finished it first, or a newer life
began, the transaction writes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from psycopg import Cursor, sql

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.epochs import Life, Lives
from stabilize_redis.durability.redis_ops import evalsha, execute
from stabilize_redis.durability.restore import restore_snapshots
from stabilize_redis.durability.snapshots import (
    ACTIVE_STATUSES,
    SNAPSHOT_COLUMNS,
    SnapshotRow,
    SnapshotStore,
    snapshot_fields,
    snapshot_row,
)
from stabilize_redis.keys import CHECKPOINT_EVENT_FIELD, EVENT_FIELD, WORKFLOW_VERSION_FIELD, partition_of

log = logging.getLogger("stabilize_redis.checkpointer")

RECONCILED_EVENT = "workflow.reconciled"


@dataclass
class ReconcileReport:
    """What one reconciliation of a partition found and did (see the module docstring).
    ``done`` is False when it wrote nothing to PostgreSQL because another checkpointer had
    finished it or a newer life began."""

    partition: int
    epoch: int
    examined: int = 0
    confirmed: int = 0
    rewritten: int = 0
    ahead: int = 0
    restored: int = 0
    lost_events: int = 0
    done: bool = True


@dataclass
class _Candidate:
    workflow_id: str
    row: SnapshotRow | None
    archived: list[tuple[str, str]] = field(default_factory=list)  # (event id, stream id) in the window
    fields: dict[bytes, bytes] = field(default_factory=dict)
    first: str | None = None  # first entry id of the Redis stream
    present: set[str] = field(default_factory=set)  # event ids in the stream from the window's first on
    lost: list[str] = field(default_factory=list)
    reason: str = ""


def _sid(value: str | bytes | None) -> tuple[int, int]:
    """A stream id as (ms, seq); (-1, -1) for none."""
    if not value:
        return (-1, -1)
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _event_id(raw: bytes, workflow_id: str, stream_id: str) -> str:
    """The id ``SnapshotStore`` archives an entry under (its event_id, else workflow/stream id)."""
    try:
        value = json.loads(raw).get("event_id")
    except (ValueError, AttributeError):
        value = None
    return str(value) if value else f"{workflow_id}/{stream_id}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Reconciler:
    """Reconciles partitions of one namespace whose life changed (see the module docstring)."""

    def __init__(self, backend: RedisBackend, store: SnapshotStore, lives: Lives) -> None:
        self.backend = backend
        self.store = store
        self.lives = lives
        schema = sql.Identifier(store.schema)
        self.snapshots = sql.SQL("{}.workflow_snapshots").format(schema)
        self.events = sql.SQL("{}.workflow_events").format(schema)
        self.lost = sql.SQL("{}.workflow_events_lost").format(schema)
        self.reports = sql.SQL("{}.reconciliations").format(schema)
        self._script = backend.scripts.reconcile_workflow

    def run(self, life: Life) -> ReconcileReport:
        """Reconcile ``life.partition`` into epoch ``life.epoch``. Raises on Postgres or Redis
        errors (the partition stays pending; run it again)."""
        report = ReconcileReport(life.partition, life.epoch)
        candidates = self.store.transact(lambda cur: self._candidates(cur, life))
        report.examined = len(candidates)
        self._read_redis(life.partition, candidates)
        confirmed: list[_Candidate] = []
        rewritten: list[_Candidate] = []
        marked: list[_Candidate] = []
        missing: list[SnapshotRow] = []
        for c in candidates:
            kind = self._classify(c)
            if kind == "confirmed":
                confirmed.append(c)
            elif kind == "rewritten":
                rewritten.append(c)
            elif kind == "ahead":
                marked.append(c)
            elif kind == "missing" and c.row is not None:
                missing.append(c.row)
        restored: list[str] = []
        if missing and not self.backend.client.exists(self.backend.keys.meta):
            log.error("checkpointer: reconciliation of partition %d: the namespace's Redis data is gone (no "
                      "marker); %d unfinished workflows are left to `stabilize-redis restore`", life.partition,
                      len(missing))
            missing = []
        if missing:
            outcome = restore_snapshots(self.backend.client, self.backend.keys, missing)
            restored = outcome.restored_ids
            for wid, why in outcome.failed:
                log.error("checkpointer: reconciliation of partition %d: workflow %s is missing from Redis and "
                          "its snapshot cannot be restored (%s)", life.partition, wid, why)
        by_id = {c.workflow_id: c for c in candidates}
        for wid in restored:
            c = by_id[wid]
            c.reason = f"Redis had lost the workflow; restored from the snapshot at version {c.row.version if c.row else 0}"
        self._mark(life, rewritten + [by_id[w] for w in restored], marked)
        finished = self.store.transact(lambda cur: self._finish(cur, life, confirmed, rewritten,
                                                                  [by_id[w] for w in restored]))
        report.done = finished
        report.confirmed, report.rewritten, report.ahead = len(confirmed), len(rewritten), len(marked)
        report.restored = len(restored)
        report.lost_events = sum(len(c.lost) for c in rewritten)
        if finished:
            for c in rewritten + [by_id[w] for w in restored]:
                log.warning("checkpointer: reconciliation of partition %d (epoch %d): workflow %s: %s",
                            life.partition, life.epoch, c.workflow_id, c.reason)
            log.log(logging.WARNING if rewritten or restored else logging.INFO,"checkpointer: partition %d reconciled into epoch %d: %d examined, %d confirmed, "
                        "%d rewritten (%d lost events set aside), %d restored, %d ahead", life.partition,
                        life.epoch, report.examined, report.confirmed, report.rewritten, report.lost_events,
                        report.restored, report.ahead)
        return report

    # -- steps ----------------------------------------------------------------------------------

    def _candidates(self, cur: Cursor[Any], life: Life) -> list[_Candidate]:
        ns, since = self.store.namespace, life.reconcile_from
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in SNAPSHOT_COLUMNS)
        cur.execute(sql.SQL("SELECT {} FROM {} WHERE namespace = %s AND partition = %s AND epoch < %s "
                            "AND updated_at >= %s").format(columns, self.snapshots),
                    (ns, life.partition, life.epoch, since))
        found = {r.id: _Candidate(r.id, r) for r in map(snapshot_row, cur.fetchall())}
        cur.execute(sql.SQL("SELECT workflow_id, event_id, stream_id FROM {} WHERE namespace = %s "
                            "AND archived_at >= %s").format(self.events), (ns, since))
        partitions = self.backend.keys.partitions
        for wid, event_id, stream_id in cur.fetchall():
            if partition_of(wid, partitions) != life.partition:
                continue
            found.setdefault(wid, _Candidate(wid, None)).archived.append((event_id, stream_id))
        unknown = [wid for wid, c in found.items() if c.row is None]
        if unknown:
            cur.execute(sql.SQL("SELECT {} FROM {} WHERE namespace = %s AND id = ANY(%s)").format(
                columns, self.snapshots), (ns, unknown))
            for r in map(snapshot_row, cur.fetchall()):
                found[r.id].row = r
        return [found[k] for k in sorted(found)]

    def _read_redis(self, partition: int, candidates: list[_Candidate]) -> None:
        part = self.backend.keys.partition(partition)
        pipe = pipeline(self.backend.client)
        for c in candidates:
            pipe.hgetall(part.workflow(c.workflow_id))
            pipe.xrange(part.events(c.workflow_id), "-", "+", count=1)
            start = min((sid for _, sid in c.archived), key=_sid, default="+")
            pipe.xrange(part.events(c.workflow_id), start if c.archived else "+", "+")
        res = pipe.execute()
        for k, c in enumerate(candidates):
            c.fields, first, entries = res[3 * k], res[3 * k + 1], res[3 * k + 2]
            c.first = _text(first[0][0]) if first else None
            c.present = {_event_id(fields.get(EVENT_FIELD.encode(), b""), c.workflow_id, _text(sid))
                         for sid, fields in entries}

    def _classify(self, c: _Candidate) -> str:
        """'missing', 'confirmed', 'rewritten' or 'ahead' (or 'none' for nothing to do); sets
        ``lost`` and ``reason``."""
        row = c.row
        if not c.fields:
            return "missing" if row is not None and row.status in ACTIVE_STATUSES else "none"
        archived_up_to = _sid(c.fields.get(CHECKPOINT_EVENT_FIELD.encode()))
        first = _sid(c.first) if c.first else None
        # An archived event this Redis should still hold (after its own `ckpt_ev`: the
        # checkpointer trims only up to there) and does not, is lost. Without `ckpt_ev` (a
        # restored workflow: its stream started anew), only events from the stream's first on.
        c.lost = [event_id for event_id, sid in c.archived
                  if event_id not in c.present and _sid(sid) > archived_up_to
                  and (archived_up_to[0] >= 0 or first is not None and _sid(sid) >= first)]
        version = int(c.fields.get(WORKFLOW_VERSION_FIELD.encode(), b"0"))
        same = row is not None and version == row.version and snapshot_fields(c.fields) == row.fields()
        reasons = []
        if row is not None and version < row.version:
            reasons.append(f"Redis is at version {version}, PostgreSQL had {row.version} (epoch {row.epoch})")
        elif row is not None and version == row.version and not same:
            reasons.append(f"Redis has a different state at version {version} than PostgreSQL (epoch {row.epoch})")
        if c.lost:
            reasons.append(f"{len(c.lost)} archived event(s) are not in Redis")
        if reasons:
            c.reason = "; ".join(reasons) + "; Redis's state replaces the snapshot"
            return "rewritten"
        if same:
            return "confirmed"
        return "ahead"

    def _event(self, life: Life, c: _Candidate, action: str) -> str:
        version = int(c.fields.get(WORKFLOW_VERSION_FIELD.encode(), b"0")) if c.fields else None
        return json.dumps({
            "event_id": f"{self.store.namespace}:reconciled:{life.epoch}:{c.workflow_id}",
            "event_type": RECONCILED_EVENT, "entity_type": "workflow", "entity_id": c.workflow_id,
            "workflow_id": c.workflow_id, "timestamp": int(time.time() * 1000),
            "data": {"action": action, "epoch": life.epoch, "reason": c.reason,
                     "postgres_epoch": c.row.epoch if c.row else None,
                     "postgres_version": c.row.version if c.row else None,
                     "redis_version": version, "lost_events": len(c.lost)},
        }, separators=(",", ":"))

    def _mark(self, life: Life, reported: list[_Candidate], silent: list[_Candidate]) -> None:
        """Mark dirty (and report, for ``reported``) in one round trip."""
        if not reported and not silent:
            return
        part = self.backend.keys.partition(life.partition)
        script = self._script

        def build(pipe: Any) -> None:
            for c, event in [(c, self._event(life, c, "restored" if not c.fields else "rewritten"))
                             for c in reported] + [(c, "") for c in silent]:
                evalsha(pipe, script, [part.workflow(c.workflow_id), part.dirty, part.events(c.workflow_id)],
                        [c.workflow_id, event])

        execute(self.backend.client, build, [script])

    def _finish(self, cur: Cursor[Any], life: Life, confirmed: list[_Candidate], rewritten: list[_Candidate],
                restored: list[_Candidate]) -> bool:
        if not self.lives.reconciled(life, cur):
            return False
        ns = self.store.namespace
        if confirmed:
            cur.execute(sql.SQL(
                "UPDATE {} AS s SET epoch = %s FROM unnest(%s::text[], %s::bigint[]) AS u(id, version) "
                "WHERE s.namespace = %s AND s.id = u.id AND s.version = u.version AND s.epoch < %s").format(
                self.snapshots), (life.epoch, [c.workflow_id for c in confirmed],
                                  [c.row.version if c.row else 0 for c in confirmed], ns, life.epoch))
        lost = [event_id for c in rewritten for event_id in c.lost]
        if lost:
            cur.execute(sql.SQL(
                "WITH moved AS (DELETE FROM {events} WHERE namespace = %s AND event_id = ANY(%s) RETURNING "
                "event_id, namespace, workflow_id, stream_id, stream_ms, stream_seq, event_type, entity_type, "
                'entity_id, "timestamp", data, archived_at) '
                "INSERT INTO {lost} (event_id, namespace, workflow_id, stream_id, stream_ms, stream_seq, event_type, "
                'entity_type, entity_id, "timestamp", data, archived_at, lost_epoch) '
                "SELECT m.*, %s FROM moved AS m ON CONFLICT (event_id) DO NOTHING").format(
                events=self.events, lost=self.lost), (ns, lost, life.epoch))
        reported = [(c, "rewritten") for c in rewritten] + [(c, "restored") for c in restored]
        if reported:
            cur.execute(sql.SQL(
                "INSERT INTO {} (namespace, partition, workflow_id, epoch, postgres_epoch, postgres_version, "
                "redis_version, action, reason, lost_events) "
                "SELECT %s, %s, u.* FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], "
                "%s::text[], %s::text[], %s::integer[]) AS u").format(self.reports),
                (ns, life.partition, [c.workflow_id for c, _ in reported], [life.epoch] * len(reported),
                 [c.row.epoch if c.row else None for c, _ in reported],
                 [c.row.version if c.row else None for c, _ in reported],
                 [int(c.fields[WORKFLOW_VERSION_FIELD.encode()]) if c.fields else (c.row.version if c.row else None)
                  for c, _ in reported],
                 [a for _, a in reported], [c.reason for c, _ in reported], [len(c.lost) for c, _ in reported]))
        return True
