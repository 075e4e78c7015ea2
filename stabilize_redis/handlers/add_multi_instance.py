"""AddMultiInstance (WCP-15): add an instance to a running multi-instance group, in one commit
(``decisions.multi_instance``).

The read: the ref ids of the group's join (``<P>_mi_join``) and first instance
(``<P>_instance_0``, the template an added instance copies), the parent, join and template
records with the join's counter and thresholds, then the graph fields the add writes - three
round trips, each exact because the commit checks every version and value read.
"""

from __future__ import annotations

from dataclasses import dataclass

from stabilize_redis.backend.graph_reads import read_graph
from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.common import known_stage
from stabilize_redis.decisions.multi_instance import AddRead, decide_add
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.keys import dead_counter, join_counter, ref_field, stage_field
from stabilize_redis.queue.messages import AddMultiInstance, Message
from stabilize_redis.stages.builder import planner_for
from stabilize_redis.stages.multi_instance_shape import MI_INSTANCE_TYPE, instance_ref, join_ref


@dataclass
class _Read(Snapshot):
    """The parent's snapshot with what ``decide_add`` needs beside it."""

    add: AddRead | None = None


class AddMultiInstanceHandler(Handler):
    message_type = AddMultiInstance

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, AddMultiInstance)
        wid, sid = message.execution_id, message.stage_id

        def read() -> Snapshot:
            key = self.backend.part(wid).workflow(wid)
            first = self.backend.read(wid, [sid])
            rec = first.stages.get(sid)
            if rec is None or first.meta is None:
                return first
            jid_raw, tid_raw = self.backend.client.hmget(key, ref_field(join_ref(rec.stage.ref_id)),
                                                         ref_field(instance_ref(rec.stage.ref_id, 0)))
            jid = jid_raw.decode() if jid_raw else None
            tid = tid_raw.decode() if tid_raw else None
            names = [join_counter(jid), dead_counter(jid)] if jid else []
            snap = self.backend.read(wid, [sid, *(i for i in (jid, tid) if i)], counters=names)
            graph = read_graph(self.backend, wid)
            out = _Read(**vars(snap))
            parent = snap.stages.get(sid)
            if parent is None or graph is None:
                return out
            join = snap.stages.get(jid) if jid else None
            out.add = AddRead(parent=parent, join=join,
                              join_count=snap.counters.get(join_counter(jid), 0) if jid else 0,
                              join_limit=snap.thresholds.get(join_counter(jid)) if jid else None,
                              dead_limit=snap.thresholds.get(dead_counter(jid)) if jid else None,
                              template=snap.stages.get(tid) if tid else None, graph=graph)
            return out

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            known_stage(snap, sid)
            if not isinstance(snap, _Read) or snap.add is None:  # the workflow left Redis between the reads
                return t
            add = snap.add
            template = add.template
            kind = template.stage.type if template is not None else str(
                add.parent.stage.context.get(MI_INSTANCE_TYPE) or add.parent.stage.type)
            decide_add(t, add, dict(message.instance_context), planner_for(kind) is not None)
            if template is not None and stage_field(template.id) not in t.writes:
                t.check(stage_field(template.id), template.version)
            return t

        return self.transact(message, delivery, read, decide)


__all__ = ["AddMultiInstanceHandler"]
