"""Launching a workflow in one step: stored already RUNNING, its initial stages already started
(first task RUNNING, its RunTask queued), with the created/started events, atomically. This is
what the StartWorkflow and StartStage messages would do, decided at submit time, so a submitted
workflow costs two messages less."""

from __future__ import annotations

import json
import time
from typing import Any

from ulid import ULID

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.decisions.claim import claim_ready_stage
from stabilize_redis.decisions.codec import decode_stage, encode_stage
from stabilize_redis.decisions.concurrency import is_limited
from stabilize_redis.decisions.layout import lay_out
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.durable_submit import SubmitNotDurable
from stabilize_redis.keys import stage_field
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import Message, StartWorkflow


def _event(wf: Workflow, kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"event_id": str(ULID()), "event_type": kind, "entity_type": "workflow",
                       "entity_id": wf.id, "workflow_id": wf.id, "timestamp": int(time.time() * 1000),
                       "data": data}, separators=(",", ":"))


def created_event(wf: Workflow) -> str:
    """The ``workflow.created`` event of ``wf`` (JSON), as every submit writes it."""
    return _event(wf, "workflow.created", {
        "application": wf.application, "name": wf.name, "type": wf.type.name,
        "trigger_type": wf.trigger.type if wf.trigger else None, "stage_count": len(wf.stages),
        "initial_stage_count": len([s for s in wf.stages if not s.requisite_stage_ref_ids
                                    and s.parent_stage_id is None])})


def launch(backend: RedisBackend, wf: Workflow, created_event: str, *,
           wait_replicas: tuple[int, float] | None = None) -> bool:
    """Store and start ``wf``; False (nothing written) if its id already exists.

    ``wait_replicas=(n, timeout_s)``: also wait until ``n`` replicas have the write (Redis
    ``WAIT``), else raise SubmitNotDurable (the workflow stays stored; a resubmit waits again).

    A workflow that cannot start right away the StartWorkflow way (already canceled, past its
    ``start_time_expiry``, or limited: it asks its concurrency limit first) is stored
    NOT_STARTED with a StartWorkflow message instead, so that handler's rules decide."""
    now = int(time.time() * 1000)
    direct = wf.status == WorkflowStatus.NOT_STARTED and not wf.is_canceled and not is_limited(wf) and (
        wf.start_time_expiry is None or now <= wf.start_time_expiry)
    messages: list[Message]
    events = [created_event]
    if direct:
        status, start = wf.status, wf.start_time
        wf.status, wf.start_time = WorkflowStatus.RUNNING, now
        try:
            fields = lay_out(wf)
        finally:  # the caller's object is left as it was given
            wf.status, wf.start_time = status, start
        events.append(_event(wf, "workflow.started", {"application": wf.application, "name": wf.name,
                                                      "start_time": now}))
        # What StartStage would do for each initial stage, decided now on stored copies.
        t = Transition(wf.id)
        kw = {"execution_id": wf.id, "execution_type": wf.type.name}
        for stage in wf.stages:
            if stage.parent_stage_id is None and not stage.requisite_stage_ref_ids:
                rec = decode_stage(fields[stage_field(stage.id)])
                claim_ready_stage(None, t, rec, [], kw)
                fields[stage_field(stage.id)] = encode_stage(rec)
        messages = [m for m, _ in t.messages]
        events += [json.dumps(e, separators=(",", ":"), default=str) for e in t.events]
    else:
        fields = lay_out(wf)
        messages = [StartWorkflow(execution_id=wf.id, execution_type=wf.type.name)]
    if wait_replicas is None:
        return backend.submit_many(wf.id, fields, messages, "launch", events) == 1
    replicas, timeout_s = wait_replicas
    code, acked = backend.submit_replicated(wf.id, fields, messages, "launch", events, replicas,
                                            max(1, int(timeout_s * 1000)))
    if acked < replicas:
        raise SubmitNotDurable(wf.id, f"{acked} of {replicas} replicas acknowledged within {timeout_s:g}s")
    return code == 1
