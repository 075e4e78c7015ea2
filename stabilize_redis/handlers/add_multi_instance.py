"""AddMultiInstance: add one instance to a running multi-instance activity (WCP-15).

``stage_id`` is the multi-instance parent (the stage with ``mi_config.allow_dynamic``);
``instance_context`` is merged into the new instance's context. The decision is
``decisions.multi_instance.plan_add_instance``: accepted while the parent's join has not fired
(the join's threshold rises in the same commit), otherwise rejected with a
``multi_instance.rejected`` event. Two reads: the join's id (by ref id) and the stage-id list,
then the parent, the join and their counters; every one of them is in the commit's read set.
"""

from __future__ import annotations

from typing import Any

from stabilize_redis.backend.redis_backend import Delivery
from stabilize_redis.decisions.codec import unpack
from stabilize_redis.decisions.common import known_stage
from stabilize_redis.decisions.multi_instance import AddRead, counters_read, plan_add_instance
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers.base import Handler
from stabilize_redis.keys import STAGE_IDS_FIELD, ref_field, stage_field
from stabilize_redis.queue.messages import AddMultiInstance, Message
from stabilize_redis.stages.multi_instance_builder import join_ref_id


class AddMultiInstanceHandler(Handler):
    message_type = AddMultiInstance

    def handle(self, message: Message, delivery: Delivery | None = None) -> str:
        assert isinstance(message, AddMultiInstance)
        wid, sid = message.execution_id, message.stage_id
        extra = AddRead(None, [], 0)

        def read() -> Snapshot:
            parent = self.backend.read(wid, [sid]).stages.get(sid)
            names = [STAGE_IDS_FIELD]
            if parent is not None:
                names.append(ref_field(join_ref_id(parent.stage.ref_id)))
            raw: dict[str, Any] = dict(self.backend.read_fields(wid, names))
            ids_blob, extra.ids_version = raw[STAGE_IDS_FIELD]
            extra.ids = list(unpack(ids_blob)) if ids_blob else []
            extra.join_id = None
            if parent is not None:
                join_blob = raw[names[1]][0]
                extra.join_id = join_blob.decode() if join_blob else None
            ids = [sid, *([extra.join_id] if extra.join_id else [])]
            return self.backend.read(wid, ids, counters=counters_read(extra.join_id))

        def decide(snap: Snapshot) -> Transition:
            t = Transition(wid)
            parent = known_stage(snap, sid)
            if extra.join_id is not None:
                # the ref field is plain (not versioned): the join record read is checked instead
                t.check(stage_field(extra.join_id), snap.stages[extra.join_id].version
                        if extra.join_id in snap.stages else 0)
            return plan_add_instance(t, snap, parent, extra, message)

        return self.transact(message, delivery, read, decide)


__all__ = ["AddMultiInstanceHandler"]
