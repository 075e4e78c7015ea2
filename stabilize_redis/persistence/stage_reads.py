"""Stage-level queries of the WorkflowStore API (``retrieve_stage``, upstream/downstream/
synthetic stages, merged ancestor outputs), over a workflow's hash.

Costs, since none of these is on the engine's hot path:

* by stage id within a known workflow: one scripted read of the stage and its direct
  neighbours (``RedisBackend.read``), plus one for its synthetic children;
* by ref id (``get_upstream_stages`` & co. take a ref id): the ref has no index, so every stage
  record of the workflow is read once (one HMGET), O(stages of the workflow);
* ``retrieve_stage(stage_id)`` without a workflow id: a stage id is found in the workflow last
  seen holding it by this process, else by probing each workflow hash of the namespace
  (pipelined HEXISTS, O(workflows in Redis)); a stage of a workflow evicted to PostgreSQL is
  found only with its workflow id.

Stages come back with their tasks, attached (strongly) to a Workflow built from the workflow
meta that holds the stages read, so ``stage.execution`` works without the caller keeping a
workflow alive.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.dag.outputs import merge_outputs_in_order
from stabilize_redis.decisions.codec import StageRecord, meta_from_dict
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.keys import stage_field
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.workflow import Workflow

_PROBE_PAGE = 500


class StageLocator:
    """Remembers which workflow holds a stage id (bounded, per process), and finds it by
    probing the namespace's workflow hashes when it does not know."""

    def __init__(self, backend: RedisBackend, capacity: int = 10_000) -> None:
        self.backend = backend
        self.capacity = capacity
        self._known: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def learn(self, workflow_id: str, stage_ids: Iterable[str]) -> None:
        with self._lock:
            for sid in stage_ids:
                self._known[sid] = workflow_id
                self._known.move_to_end(sid)
            while len(self._known) > self.capacity:
                self._known.popitem(last=False)

    def forget(self, stage_ids: Iterable[str]) -> None:
        with self._lock:
            for sid in stage_ids:
                self._known.pop(sid, None)

    def locate(self, stage_id: str) -> str | None:
        """The id of the workflow whose hash holds ``stage_id``, or None."""
        client = self.backend.client
        with self._lock:
            known = self._known.get(stage_id)
        if known is not None and client.hexists(self.backend.part(known).workflow(known), stage_field(stage_id)):
            return known
        field = stage_field(stage_id)
        for part in self.backend.keys.all_partitions():
            start = 0
            while True:
                ids = [m.decode() for m in client.zrange(part.workflows, start, start + _PROBE_PAGE - 1)]
                if not ids:
                    break
                pipe = pipeline(client)
                for wid in ids:
                    pipe.hexists(part.workflow(wid), field)
                for wid, found in zip(ids, pipe.execute(), strict=True):
                    if found:
                        self.learn(wid, [stage_id])
                        return wid
                if len(ids) < _PROBE_PAGE:
                    break
                start += _PROBE_PAGE
        return None


def attach_records(meta: Mapping[str, Any], records: Iterable[StageRecord]) -> Workflow:
    """A Workflow from ``meta`` holding the records' stages (in topological-rank order),
    each strongly linked to it."""
    wf = meta_from_dict(dict(meta))
    wf.stages = [rec.stage for rec in sorted(records, key=lambda r: (r.rank, r.id))]
    for stage in wf.stages:
        stage.set_execution_strong(wf)
    return wf


def read_stage_with_family(backend: RedisBackend, workflow_id: str, stage_id: str) -> tuple[Snapshot, StageRecord] | None:
    """The snapshot of ``stage_id`` with its direct upstreams and synthetic children (two
    reads), and its record; None when the workflow or the stage does not exist."""
    snap = backend.read(workflow_id, [stage_id], with_upstreams=True)
    rec = snap.stages.get(stage_id)
    if snap.meta is None or rec is None:
        return None
    if rec.children:
        snap.stages.update(backend.read(workflow_id, rec.children).stages)
    return snap, rec


def all_records(backend: RedisBackend, workflow_id: str) -> tuple[dict[str, Any] | None, dict[str, StageRecord]]:
    """The meta and every stage record of a workflow, in stage-id-list order (O(stages))."""
    ids = backend.stage_ids(workflow_id)
    snap = backend.read(workflow_id, ids)
    return snap.meta, {sid: snap.stages[sid] for sid in ids if sid in snap.stages}


def record_by_ref(records: Mapping[str, StageRecord], ref_id: str) -> StageRecord | None:
    """The record whose stage has ``ref_id`` (top-level stages first)."""
    found = [r for r in records.values() if r.stage.ref_id == ref_id]
    found.sort(key=lambda r: r.stage.parent_stage_id is not None)
    return found[0] if found else None


def neighbours(backend: RedisBackend, workflow_id: str, ref_id: str, direction: str) -> list[StageExecution]:
    """The direct upstream (``direction='up'``) or downstream (``'down'``) stages of the stage
    with ``ref_id``; [] when there is no such stage."""
    meta, records = all_records(backend, workflow_id)
    rec = record_by_ref(records, ref_id)
    if meta is None or rec is None:
        return []
    ids = rec.up if direction == "up" else rec.down
    chosen = [records[i] for i in ids if i in records]
    attach_records(meta, chosen)
    return [r.stage for r in chosen]


def synthetic_stages(backend: RedisBackend, workflow_id: str, parent_stage_id: str) -> list[StageExecution]:
    """The synthetic stages of ``parent_stage_id`` in the order they were added."""
    snap = backend.read(workflow_id, [parent_stage_id])
    parent = snap.stages.get(parent_stage_id)
    if snap.meta is None or parent is None or not parent.children:
        return []
    children = backend.read(workflow_id, parent.children).stages
    chosen = [children[c] for c in parent.children if c in children]
    attach_records(snap.meta, chosen)
    return [r.stage for r in chosen]


def merged_ancestor_outputs(backend: RedisBackend, workflow_id: str, ref_id: str) -> dict[str, Any]:
    """The outputs of every transitive upstream of the stage with ``ref_id``, merged in
    topological order: lists concatenated without duplicates, any other value last-wins."""
    meta, records = all_records(backend, workflow_id)
    rec = record_by_ref(records, ref_id)
    if meta is None or rec is None:
        return {}
    seen: set[str] = set()
    frontier = list(rec.up)
    while frontier:
        sid = frontier.pop()
        if sid in seen or sid not in records:
            continue
        seen.add(sid)
        frontier.extend(records[sid].up)
    ordered = sorted((records[s] for s in seen), key=lambda r: (r.rank, r.id))
    return merge_outputs_in_order(r.stage.outputs for r in ordered)


__all__ = ["StageLocator", "all_records", "attach_records", "merged_ancestor_outputs", "neighbours",
           "read_stage_with_family", "record_by_ref", "synthetic_stages"]
